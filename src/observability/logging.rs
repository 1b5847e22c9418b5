//! Structured logs: JSON lines in production pipelines, readable text in a terminal. Every line
//! logged while a request is handled carries that request's id through the `request` span.

use std::io::IsTerminal;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tracing::Span;
use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Installs the global subscriber; `RUST_LOG` overrides `log.level`. Logs go to standard error.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match config.format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init` fails only if a subscriber is already installed (tests), which is fine.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init()
    };
}

/// The span every request runs in: its id, method and path.
pub fn request_span(request_id: &str, request: &Request<Body>) -> Span {
    tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %request.method(),
        path = %request.uri().path(),
    )
}

/// The request's log line, in its span: status and latency, and a second line at error level for
/// a server error. The lines, fields and messages of `tower_http`'s `DefaultOnResponse` and
/// `DefaultOnFailure` (at info level, latency in milliseconds), which log scrapers may know.
pub fn response_finished(span: &Span, status: StatusCode, latency: Duration) {
    let latency = Millis(latency);
    tracing::info!(
        parent: span,
        %latency,
        status = status.as_u16(),
        "finished processing request"
    );
    if status.is_server_error() {
        tracing::error!(
            parent: span,
            classification = %format_args!("Status code: {status}"),
            %latency,
            "response failed"
        );
    }
}

/// A latency as `tower_http` writes it with `LatencyUnit::Millis`: whole milliseconds, `12 ms`.
struct Millis(Duration);

impl std::fmt::Display for Millis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ms", self.0.as_millis())
    }
}
