//! Prometheus metrics (SPEC §5.4): one process-wide recorder, rendered by every role's `/metrics`.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::extract::{MatchedPath, Request};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::infra::workers::Workers;

/// Latency buckets in seconds: fine below 10 ms, where a gateway's added latency lives.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder once per process and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new();
            let builder = match builder.set_buckets(LATENCY_BUCKETS) {
                Ok(with_buckets) => with_buckets,
                Err(_) => PrometheusBuilder::new(),
            };
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder was installed first; metrics then go there.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Whether the recorder is installed: handles registered before it are no-ops for good, so a
/// cache of handles must not keep them.
pub fn is_installed() -> bool {
    HANDLE.get().is_some()
}

/// Histograms are drained into their buckets by upkeep; run it in the background.
pub fn spawn_upkeep(workers: &Workers, handle: PrometheusHandle) {
    workers.spawn("metrics-upkeep", |stop| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => handle.run_upkeep(),
            }
        }
    });
}

/// The route template of a response produced outside axum's routing (the proxy's fallback), so
/// proxied requests are counted by route-table entry instead of all as `unmatched`. Shared, not
/// formatted per request: the route table makes each label once.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub Arc<str>);

/// Puts the route template axum matched ([`MatchedPath`]) on the route's response, where the
/// request metrics find it: they are taken around the whole router ([`crate::http::stack`]), so
/// the request they see has not been routed yet. Layered on the router's routes only, not on its
/// fallback, whose responses are `unmatched` or carry their [`RouteLabel`].
#[derive(Debug, Clone, Copy)]
pub struct RouteTemplateLayer;

impl<S> Layer<S> for RouteTemplateLayer {
    type Service = RouteTemplate<S>;

    fn layer(&self, inner: S) -> RouteTemplate<S> {
        RouteTemplate { inner }
    }
}

/// A route that hands its template on with its response ([`RouteTemplateLayer`]).
#[derive(Debug, Clone)]
pub struct RouteTemplate<S> {
    inner: S,
}

impl<S> Service<Request> for RouteTemplate<S>
where
    S: Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = RouteTemplateFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let matched = request.extensions().get::<MatchedPath>().cloned();
        RouteTemplateFuture {
            inner: self.inner.call(request),
            matched,
        }
    }
}

pin_project! {
    /// The route's future, then its template put on its response.
    pub struct RouteTemplateFuture<F> {
        #[pin]
        inner: F,
        matched: Option<MatchedPath>,
    }
}

impl<F, E> Future for RouteTemplateFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let mut response = ready!(this.inner.poll(cx))?;
        if let Some(matched) = this.matched.take() {
            response.extensions_mut().insert(matched);
        }
        Poll::Ready(Ok(response))
    }
}

/// The requests this process is handling now (`http_requests_in_flight`): what a drain or a
/// shutdown waits for. The handle is looked up once, not per request.
fn in_flight() -> &'static metrics::Gauge {
    static IN_FLIGHT: OnceLock<metrics::Gauge> = OnceLock::new();
    IN_FLIGHT.get_or_init(|| metrics::gauge!("http_requests_in_flight"))
}

/// Ends a request's count in flight however its future ends (answered, or dropped).
struct InFlight;

impl InFlight {
    fn start() -> Self {
        in_flight().increment(1.0);
        Self
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        in_flight().decrement(1.0);
    }
}

/// Counts every request and records its latency by method, route template and status: started
/// when the request arrives, before routing, and finished with its response, which carries the
/// route template: a proxied route's [`RouteLabel`], or the [`MatchedPath`] of one of the role's
/// own routes ([`RouteTemplateLayer`]). Never the raw path: ids in paths would explode the label
/// set.
pub struct RequestMetrics {
    _in_flight: InFlight,
    method: &'static str,
}

impl RequestMetrics {
    pub fn start(request: &Request) -> Self {
        Self {
            _in_flight: InFlight::start(),
            method: method_label(request.method()),
        }
    }

    /// Counts the response and records `latency`, the time since the request arrived.
    pub fn finish(self, response: &Response, latency: Duration) {
        let extensions = response.extensions();
        let route = match extensions.get::<RouteLabel>() {
            Some(RouteLabel(label)) => label,
            None => extensions
                .get::<MatchedPath>()
                .map_or("unmatched", MatchedPath::as_str),
        };
        let handles = RequestHandles::of(self.method, route, response.status());
        handles.total.increment(1);
        handles.duration.record(latency.as_secs_f64());
    }
}

/// The request metrics of one method, route template and status. Registering a handle hashes and
/// copies its labels; a request only looks up the handles registered for its labels before.
#[derive(Clone)]
struct RequestHandles {
    total: metrics::Counter,
    duration: metrics::Histogram,
}

/// Method and status first, then the route template, so a lookup borrows the route as `&str`.
/// Every key is a label of ours (a method, a status, a route template), none a client's choice:
/// hashed with foldhash rather than SipHash, twice per request.
type HandleTable =
    HashMap<(&'static str, u16), HashMap<Box<str>, RequestHandles, LabelHasher>, LabelHasher>;
type LabelHasher = foldhash::fast::RandomState;

impl RequestHandles {
    fn of(method: &'static str, route: &str, status: StatusCode) -> Self {
        // Handles taken before the recorder is installed would stay no-ops for good: register
        // without keeping them until it is.
        if !is_installed() {
            return Self::register(method, route, status);
        }
        static TABLE: OnceLock<RwLock<HandleTable>> = OnceLock::new();
        let table = TABLE.get_or_init(Default::default);
        let key = (method, status.as_u16());
        {
            let known = table.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(handles) = known.get(&key).and_then(|routes| routes.get(route)) {
                return handles.clone();
            }
        }
        let handles = Self::register(method, route, status);
        table
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .insert(route.into(), handles.clone());
        handles
    }

    fn register(method: &'static str, route: &str, status: StatusCode) -> Self {
        let labels = [
            ("method", method.to_owned()),
            ("route", route.to_owned()),
            ("status", status.as_u16().to_string()),
        ];
        Self {
            total: metrics::counter!("http_requests_total", &labels),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
        }
    }
}

fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_counted_through_registered_handles_add_up_under_their_labels() {
        let handle = install();
        for _ in 0..2 {
            let handles = RequestHandles::of("GET", "/test/handles/*", StatusCode::OK);
            handles.total.increment(1);
        }
        RequestHandles::of("GET", "/test/handles/*", StatusCode::NOT_FOUND)
            .total
            .increment(1);
        let text = handle.render();
        let counted = |status: &str| {
            format!(
                r#"http_requests_total{{method="GET",route="/test/handles/*",status="{status}"}}"#
            )
        };
        assert!(text.contains(&format!("{} 2", counted("200"))), "{text}");
        assert!(text.contains(&format!("{} 1", counted("404"))), "{text}");
    }
}
