//! The HTTP conventions every role shares (SPEC §4): the error shape, `X-Request-Id`, body limits,
//! request logs and metrics. [`stack`] wraps a role's router in all of them.

pub mod error;
pub mod extract;
pub mod limits;
pub mod linger;
pub mod pagination;
pub mod paths;
pub mod request_id;
pub mod security;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ErrorBody};

use crate::config::Config;
use crate::observability;
use crate::observability::metrics::RequestMetrics;

/// Wraps `router` in the shared layers, outermost first: request id, security headers, the path's
/// normal form, request span and log, metrics, the §4 error shape for every error response, body
/// limits, panic recovery.
///
/// Conventions that always run together share one layer ([`edge`], [`conventions`]): each layer
/// of its own would box another future and clone the stack beneath it on every request.
pub fn stack(router: Router, config: &Config) -> Router {
    let limits = limits::BodyLimits::from_config(&config.server);
    let security = security::SecurityHeaders::from_config(config);
    // One `layer` call: each wraps every route in a boxed service of its own, cloned and called
    // on every request.
    router.layer(
        ServiceBuilder::new()
            .layer(middleware::from_fn_with_state(security, edge))
            .layer(observability::logging::request_trace_layer())
            .layer(middleware::from_fn_with_state(limits, conventions))
            .layer(CatchPanicLayer::custom(error::panic_response))
            // Limits are enforced by `limits::enforce` on the body stream for every route, so the
            // extractor's own smaller default must not second-guess them.
            .layer(DefaultBodyLimit::disable()),
    )
}

/// Outside the request's span: its id (assigned, echoed, current while it is handled), the
/// security headers on whatever answers, and the 400 for a path not in normal form.
async fn edge(
    State(security): State<security::SecurityHeaders>,
    mut request: Request,
    next: Next,
) -> Response {
    let (id, id_value) = request_id::assign_to(&mut request);
    let mut response = request_id::within(id, async move {
        match paths::refuse_unnormalised(request.uri().path()) {
            None => next.run(request).await,
            Some(refused) => refused,
        }
    })
    .await;
    let headers = response.headers_mut();
    security.add_to(headers);
    headers.insert(request_id::X_REQUEST_ID, id_value);
    response
}

/// Inside the request's span: the request metrics around the §4 error shape around the body limit.
async fn conventions(
    State(limits): State<limits::BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let metrics = RequestMetrics::start(&request);
    let method = request.method().clone();
    let uri = request.uri().clone();
    let response = match limits::enforce(&limits, request) {
        Ok(request) => next.run(request).await,
        Err(too_large) => too_large.into_response(),
    };
    let response = error::ensure_error_shape(&method, uri.path(), response);
    metrics.finish(&response);
    response
}

#[cfg(test)]
mod tests;
