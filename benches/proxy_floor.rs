//! The floor of `benches/gateway.sh`: forma's transport with nothing of the gateway on top. The
//! same server as `forma serve` ([`forma::server::serve_app`]: connection threads, limits,
//! timeouts), forwarding every request to the upstream through the gateway's own connection pool
//! ([`ConnectionPool`]), with no sign-in, rate limit, session, request id, metrics, log or header
//! rewriting but `Host`. What this proxy reaches against nginx is the best the gateway's stack
//! reaches on the machine; the gateway's figure below it is what the gateway's own work costs.
//!
//! Settings (environment): PORT (listens on 127.0.0.1 only), UPSTREAM (`host:port`), THREADS
//! (`server.connection_threads`; default one per CPU, as forma's), LAYERS (`none`, the default;
//! `stack`: inside the conventions every role shares, [`forma::http::stack`], to see what those
//! cost apart from the gateway's own). Stops on SIGTERM or Ctrl-C.
//!
//!   cargo bench --bench proxy_floor     (benches/gateway.sh runs it, with `--bench`)

mod common;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use forma::config::Config;
use forma::gateway::proxy::pool::ConnectionPool;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Proxy {
    pool: ConnectionPool,
    host: HeaderValue,
}

impl Proxy {
    async fn forward(&self, request: Request) -> Response {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(header::HOST, self.host.clone());
        match self.pool.send(0, Request::from_parts(parts, body)).await {
            Ok(response) => response.map(Body::new),
            Err(e) => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        }
    }
}

async fn serve() -> Result<()> {
    let port = common::port()?;
    let upstream = std::env::var("UPSTREAM").context("UPSTREAM (host:port)")?;
    let mut config = Config::default();
    if let Ok(threads) = std::env::var("THREADS") {
        config.server.connection_threads = Some(threads.parse().context("THREADS")?);
    }
    let threads = config.server.connection_threads();
    let proxy = Arc::new(Proxy {
        host: HeaderValue::from_str(&upstream).context("UPSTREAM")?,
        pool: ConnectionPool::new(vec![upstream], threads),
    });
    // `with_state` makes the handler a route once, as forma's routers are made: a router left
    // holding a bare handler clones, boxes and layers it again on every request.
    let router = Router::new()
        .fallback(move |request: Request| {
            let proxy = proxy.clone();
            async move { proxy.forward(request).await }
        })
        .with_state(());
    let stack = match std::env::var("LAYERS").as_deref() {
        Err(_) | Ok("none") => false,
        Ok("stack") => true,
        Ok(other) => anyhow::bail!("LAYERS={other}: none or stack"),
    };
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("proxy floor listening on 127.0.0.1:{port}, {threads} connection threads");
    if stack {
        // As the binary does: request metrics are recorded, not registered afresh each time.
        forma::observability::metrics::install();
        serve_until_stopped(listener, forma::http::stack(router, &config), &config).await
    } else {
        serve_until_stopped(listener, router, &config).await
    }
}

/// Serves `app` as `forma serve` serves a role's until SIGINT or SIGTERM, then lets its open
/// connections finish.
async fn serve_until_stopped(
    listener: TcpListener,
    app: impl forma::server::Application,
    config: &Config,
) -> Result<()> {
    let stopping = CancellationToken::new();
    let serving = tokio::spawn(forma::server::serve_app(
        listener,
        app,
        config,
        stopping.clone(),
    ));
    forma::server::shutdown_signal().await;
    stopping.cancel();
    serving.await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::server_main(
        "proxy_floor",
        "a proxy for benches/gateway.sh; PORT=… UPSTREAM=… starts it",
        serve,
    )
}
