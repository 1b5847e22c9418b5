//! Prometheus metrics (SPEC §5.4): one process-wide recorder, rendered by every role's `/metrics`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

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
/// proxied requests are counted by route-table entry instead of all as `unmatched`.
#[derive(Debug, Clone)]
pub struct RouteLabel(pub String);

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

/// Counts every request and records its latency by method, route template and status.
pub async fn record_request(request: Request, next: Next) -> Response {
    let _in_flight = InFlight::start();
    let started = Instant::now();
    let method = method_label(request.method());
    // The route template, never the raw path: ids in paths would explode the label set.
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    let route = match response.extensions().get::<RouteLabel>() {
        Some(RouteLabel(label)) => label.clone(),
        None => route,
    };
    let labels = [
        ("method", method.to_owned()),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
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
