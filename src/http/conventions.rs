//! The conventions every role shares (SPEC §4), as one service around a role's router: the
//! request id, the path's normal form, the request's span and log line, its metrics, the body
//! limits, the §4 error shape, panic recovery and the security headers.
//!
//! One hand-written service rather than a stack of middleware: a `from_fn` layer clones the stack
//! beneath it, boxes it into a `Next` and boxes its own future on every request, and the trace and
//! panic layers each wrap the response body in a box of their own. Here a request costs its span,
//! its id and this one future, held unboxed in the connection's own. It wraps the router as a whole
//! ([`super::stack`]), so it sees each request before routing.
//!
//! What a request goes through, outermost first:
//! 1. its id is assigned ([`request_id::assign_to`]) and, on whatever answers, echoed with the
//!    security headers;
//! 2. a path not in normal form is refused with a 400 before anything else reads it
//!    ([`paths::refuse_unnormalised`]): no span, no log line, no metrics;
//! 3. everything else is handled inside the request's span and counted in the request metrics:
//!    the body limits ([`limits::enforce`]), then the route with its id as [`request_id::current`]
//!    and a panic caught as a 500, then the §4 error shape ([`error::ensure_error_shape`]), and one
//!    log line with status and latency (and a second, at error level, for a 5xx).

use std::convert::Infallible;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use futures::future::CatchUnwind;
use pin_project_lite::pin_project;
use tokio::task::futures::TaskLocalFuture;
use tower::Service;
use tracing::Span;

use super::limits::BodyLimits;
use super::request_id::{self, RequestId};
use super::security::SecurityHeaders;
use super::{error, limits, paths};
use crate::observability::logging;
use crate::observability::metrics::RequestMetrics;

/// A router inside the shared conventions (the module's documentation says which, in what order).
#[derive(Debug, Clone)]
pub struct Conventions<S> {
    inner: S,
    security: SecurityHeaders,
    limits: BodyLimits,
}

impl<S> Conventions<S> {
    /// `inner` inside the conventions, with these security headers and body limits.
    pub fn new(inner: S, security: SecurityHeaders, limits: BodyLimits) -> Self {
        Self {
            inner,
            security,
            limits,
        }
    }
}

impl<S> Service<Request> for Conventions<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = ConventionsFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let id = request_id::assign_to(&mut request);
        let edge = Edge {
            security: self.security,
            id_value: id.header_value().clone(),
        };
        if let Some(refused) = paths::refuse_unnormalised(request.uri().path()) {
            return ConventionsFuture::answered(refused, edge, None);
        }
        let handled = Handled {
            span: logging::request_span(id.as_str(), &request),
            started: Instant::now(),
            metrics: RequestMetrics::start(&request),
            method: request.method().clone(),
            uri: request.uri().clone(),
        };
        let request = match limits::enforce(&self.limits, request) {
            Ok(request) => request,
            Err(too_large) => {
                return ConventionsFuture::answered(too_large.into_response(), edge, Some(handled));
            }
        };
        // As `tower_http`'s trace and catch-panic layers do: the route is called inside the span,
        // and a panic while it is called is caught (and logged in the span) like one while it runs.
        let called = {
            let _entered = handled.span.enter();
            std::panic::catch_unwind(AssertUnwindSafe(|| self.inner.call(request)))
                .map_err(error::panic_response)
        };
        match called {
            Ok(future) => ConventionsFuture {
                state: State::Handling {
                    future: request_id::within(id, AssertUnwindSafe(future).catch_unwind()),
                },
                edge: Some(edge),
                handled: Some(handled),
            },
            Err(panicked) => ConventionsFuture::answered(panicked, edge, Some(handled)),
        }
    }
}

/// What is added to every response, refused or handled: the security headers and the request id.
struct Edge {
    security: SecurityHeaders,
    id_value: HeaderValue,
}

impl Edge {
    fn finish(self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        self.security.add_to(headers);
        headers.insert(request_id::X_REQUEST_ID, self.id_value);
        response
    }
}

/// A request past the path check: its span, its metrics, and what the error shape needs of it.
struct Handled {
    span: Span,
    started: Instant,
    metrics: RequestMetrics,
    method: Method,
    uri: Uri,
}

impl Handled {
    fn finish(self, response: Response) -> Response {
        let response = error::ensure_error_shape(&self.method, self.uri.path(), response);
        let latency = self.started.elapsed();
        self.metrics.finish(&response, latency);
        logging::response_finished(&self.span, response.status(), latency);
        response
    }
}

pin_project! {
    /// The future of [`Conventions`]: the route's, then the conventions on its response.
    pub struct ConventionsFuture<F> {
        #[pin]
        state: State<F>,
        edge: Option<Edge>,
        handled: Option<Handled>,
    }
}

pin_project! {
    #[project = StateProjection]
    enum State<F> {
        /// Answered before the route ran (a refused path, a body over the limit, a panic in `call`).
        Answered { response: Option<Response> },
        /// The route's future, with the request's id current and its panics caught.
        Handling {
            #[pin]
            future: TaskLocalFuture<RequestId, CatchUnwind<AssertUnwindSafe<F>>>,
        },
    }
}

impl<F> ConventionsFuture<F> {
    fn answered(response: Response, edge: Edge, handled: Option<Handled>) -> Self {
        Self {
            state: State::Answered {
                response: Some(response),
            },
            edge: Some(edge),
            handled,
        }
    }
}

impl<F> Future for ConventionsFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.state.project() {
            StateProjection::Answered { response } => response.take(),
            StateProjection::Handling { future } => {
                let _entered = this.handled.as_ref().map(|handled| handled.span.enter());
                match ready!(future.poll(cx)) {
                    Ok(Ok(response)) => Some(response),
                    Ok(Err(infallible)) => match infallible {},
                    Err(panic) => Some(error::panic_response(panic)),
                }
            }
        };
        // Polled again after it completed, a contract the caller broke: a 500, not a panic.
        let response = response.unwrap_or_else(|| {
            error::ApiError::internal("a request's future was polled after it completed")
                .into_response()
        });
        let response = match this.handled.take() {
            Some(handled) => handled.finish(response),
            None => response,
        };
        Poll::Ready(Ok(match this.edge.take() {
            Some(edge) => edge.finish(response),
            None => response,
        }))
    }
}
