//! The floor of `benches/gateway.sh`: forma's transport with nothing of the gateway on top. The
//! same hyper HTTP/1 server on the same connection threads ([`ConnectionThreads`]), forwarding
//! every request to the upstream through the gateway's own connection pool ([`ConnectionPool`]),
//! with no sign-in, rate limit, session, request id, metrics, log or header rewriting but `Host`.
//! What this proxy reaches against nginx is the best the gateway's stack reaches on the machine;
//! the gateway's figure below it is what the gateway's own work costs.
//!
//! Settings (environment): PORT (listens on 127.0.0.1 only), UPSTREAM (`host:port`), THREADS
//! (connection threads; default one per CPU, as forma's `server.connection_threads`), LAYERS
//! (`none`, the default; `stack`: the proxy as the fallback of an axum router in the conventions
//! every role shares, [`forma::http::stack`], to see what those cost apart from the gateway's
//! own). Stops on SIGTERM or Ctrl-C.
//!
//!   cargo bench --bench proxy_floor     (benches/gateway.sh runs it, with `--bench`)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::body::Body;
use axum::http::{HeaderValue, Request, Response, StatusCode, header};
use forma::gateway::proxy::pool::ConnectionPool;
use forma::infra::connection_threads::ConnectionThreads;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Proxy {
    pool: ConnectionPool,
    host: HeaderValue,
}

impl Proxy {
    async fn forward(&self, request: Request<Body>) -> Response<Body> {
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(header::HOST, self.host.clone());
        let request = Request::from_parts(parts, body);
        match self.pool.send(0, request).await {
            Ok(response) => response.map(Body::new),
            Err(e) => {
                let mut response = Response::new(Body::from(e.to_string()));
                *response.status_mut() = StatusCode::BAD_GATEWAY;
                response
            }
        }
    }
}

/// What serves a connection's requests.
#[derive(Clone)]
enum Layers {
    None(Arc<Proxy>),
    Stack(axum::Router),
}

async fn serve(stream: TcpStream, layers: Layers) {
    // As forma serves a connection: keep-alive, and a deadline for each request's headers.
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .keep_alive(true);
    let io = TokioIo::new(stream);
    let _ = match layers {
        Layers::None(proxy) => {
            let service = service_fn(move |request: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.forward(request.map(Body::new)).await) }
            });
            http.serve_connection(io, service).await
        }
        Layers::Stack(router) => {
            let service = hyper_util::service::TowerToHyperService::new(
                tower::ServiceExt::map_request(router, |request: Request<Incoming>| {
                    request.map(Body::new)
                }),
            );
            http.serve_connection(io, service).await
        }
    };
}

async fn run() -> Result<()> {
    let port: u16 = std::env::var("PORT")
        .context("PORT")?
        .parse()
        .context("PORT")?;
    let upstream = std::env::var("UPSTREAM").context("UPSTREAM (host:port)")?;
    let threads = match std::env::var("THREADS") {
        Ok(threads) => threads.parse().context("THREADS")?,
        Err(_) => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
    };
    let proxy = Arc::new(Proxy {
        host: HeaderValue::from_str(&upstream).context("UPSTREAM")?,
        pool: ConnectionPool::new(vec![upstream], threads),
    });
    let layers = match std::env::var("LAYERS").as_deref() {
        Err(_) | Ok("none") => Layers::None(proxy),
        Ok("stack") => {
            // As the binary does: request metrics are recorded, not registered afresh each time.
            forma::observability::metrics::install();
            let handler = move |request: Request<Body>| {
                let proxy = proxy.clone();
                async move { proxy.forward(request).await }
            };
            let router = axum::Router::new().fallback(handler);
            Layers::Stack(forma::http::stack(
                router,
                &forma::config::Config::default(),
            ))
        }
        Ok(other) => anyhow::bail!("LAYERS={other}: none or stack"),
    };
    let connection_threads = ConnectionThreads::start(threads)?;
    let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("proxy floor listening on 127.0.0.1:{port}, {threads} connection threads");
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let Ok(stream) = stream.into_std() else {
            continue;
        };
        let layers = layers.clone();
        connection_threads.next().spawn(async move {
            if let Ok(stream) = TcpStream::from_std(stream) {
                serve(stream, layers).await;
            }
        });
    }
}

fn main() -> std::process::ExitCode {
    // `cargo bench` passes `--bench`; test runners that list every target (`cargo nextest run
    // --all-targets` asks with `--list`) find nothing to run. A plain `cargo bench` (no PORT)
    // starts no server.
    if !std::env::args().any(|arg| arg == "--bench") {
        return std::process::ExitCode::SUCCESS;
    }
    if std::env::var_os("PORT").is_none() {
        eprintln!("proxy_floor: a proxy for benches/gateway.sh; PORT=… UPSTREAM=… starts it");
        return std::process::ExitCode::SUCCESS;
    }
    let outcome = tokio::runtime::Runtime::new()
        .context("runtime")
        .and_then(|runtime| runtime.block_on(run()));
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("proxy_floor: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
