//! The HTTP conventions every role shares (SPEC §4): the error shape, `X-Request-Id`, body limits,
//! request logs and metrics. [`stack`] wraps a role's router in all of them.

pub mod error;
pub mod extract;
pub mod limits;
pub mod pagination;
pub mod paths;
pub mod request_id;
pub mod security;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;

pub use error::{ApiError, ErrorBody};

use crate::config::Config;
use crate::observability;

/// Wraps `router` in the shared layers, outermost first: request id, security headers, the path's
/// normal form, request span and log, metrics, the §4 error shape for every error response, panic recovery, body limits.
pub fn stack(router: Router, config: &Config) -> Router {
    let limits = limits::BodyLimits::from_config(&config.server);
    let security = security::SecurityHeaders::from_config(config);
    router
        // Limits are enforced by `limits::enforce` on the body stream for every route, so the
        // extractor's own smaller default must not second-guess them.
        .layer(DefaultBodyLimit::disable())
        .layer(
            ServiceBuilder::new()
                .layer(middleware::from_fn(request_id::assign))
                .layer(middleware::from_fn_with_state(security, security::apply))
                .layer(middleware::from_fn(paths::refuse_unnormalised))
                .layer(observability::logging::request_trace_layer())
                .layer(middleware::from_fn(observability::metrics::record_request))
                .layer(middleware::from_fn(error::ensure_error_shape))
                .layer(CatchPanicLayer::custom(error::panic_response))
                .layer(middleware::from_fn_with_state(limits, limits::enforce)),
        )
}

#[cfg(test)]
mod tests;
