//! The HTTP server's lifecycle: bind, serve, and on SIGINT/SIGTERM stop accepting, let in-flight
//! requests finish (bounded by `server.shutdown_timeout_secs`), stop the workers, close the database.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{self, Poll};
use std::time::Duration;

use anyhow::Context;
use axum::extract::{ConnectInfo, Request};
use axum::response::Response;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::{Service, ServiceExt};

use crate::app::AppContext;
use crate::config::Config;
use crate::config::Role;
use crate::http::linger::Lingering;
use crate::infra::connection_threads::ConnectionThreads;
use crate::roles;

/// `forma serve`: starts `role` on its configured port and serves until a shutdown signal.
pub async fn serve(role: Role, config: Config) -> anyhow::Result<()> {
    let (ctx, listener) = start(role, config).await?;
    run(ctx, listener, shutdown_signal()).await
}

/// What every `forma serve` does before serving: fits the process's open-file limit to its
/// connections, starts `role`'s context, and binds its configured port.
pub async fn start(
    role: Role,
    mut config: Config,
) -> anyhow::Result<(Arc<AppContext>, TcpListener)> {
    let addr = SocketAddr::new(config.server.host, config.port_for(role));
    config.server.max_connections =
        crate::infra::open_files::prepare(role, config.server.max_connections);
    let ctx = AppContext::start(role, config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.host, server.port or --port)"))?;
    Ok((ctx, listener))
}

/// Serves `ctx.role` on `listener` until `shutdown` completes. Tests call this with a listener on
/// `127.0.0.1:0` and a oneshot receiver.
/// How long closing the database pool may take at shutdown.
const DB_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(
    ctx: Arc<AppContext>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let roles::App { router, realtime } = roles::app(ctx.role, ctx.clone())?;
    let addr = listener.local_addr()?;
    tracing::info!(
        role = ctx.role.as_str(),
        %addr,
        database = ctx.db.backend().as_str(),
        redis = ctx.redis.is_some(),
        startup_ms = ctx.started.elapsed().as_millis() as u64,
        "listening"
    );

    let stopping = CancellationToken::new();
    let trigger = stopping.clone();
    tokio::spawn(async move {
        shutdown.await;
        trigger.cancel();
        // In-flight requests are waited for, and an idle Socket.IO long-poll is one until the
        // next ping: closing the sockets answers it now.
        if let Some(realtime) = realtime {
            realtime.close().await;
        }
    });

    let mut serving = tokio::spawn(serve_app(listener, router, &ctx.config, stopping.clone()));
    let grace = Duration::from_secs(ctx.config.server.shutdown_timeout_secs);
    // The background workers stop beside the in-flight requests, within the same grace: the
    // whole shutdown is bounded by it (plus closing the pool), as a supervisor's stop timeout
    // expects.
    let workers = {
        let (ctx, stopping) = (ctx.clone(), stopping.clone());
        tokio::spawn(async move {
            stopping.cancelled().await;
            ctx.workers.shutdown(grace).await
        })
    };
    let deadline = async {
        stopping.cancelled().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = &mut serving => result.context("the HTTP server task failed")?,
        () = deadline => {
            tracing::warn!(?grace, "in-flight requests did not finish in time; closing them");
            serving.abort();
        }
    }

    stopping.cancel();
    if !matches!(workers.await, Ok(true)) {
        tracing::warn!(?grace, "some workers did not stop in time");
    }
    // Closing waits for every connection to come back; one a stuck task holds is not waited for.
    if tokio::time::timeout(DB_CLOSE_TIMEOUT, ctx.db.close())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?DB_CLOSE_TIMEOUT, "the database pool did not close in time");
    }
    tracing::info!("stopped");
    Ok(())
}

/// How connections are served (hyper's own HTTP/1 implementation does the protocol).
#[derive(Debug, Clone, Copy)]
struct ConnectionSettings {
    /// A client must send a request's headers within this time, and an idle keep-alive connection
    /// is closed after it: a connection that dribbles its headers cannot stay open for minutes.
    header_read_timeout: Duration,
    max_connections: usize,
    /// `server.connection_threads` resolved: 0 serves connections on the shared runtime.
    threads: usize,
}

impl ConnectionSettings {
    fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: Duration::from_secs(config.server.header_read_timeout_secs),
            max_connections: config.server.max_connections.max(1),
            threads: config.server.connection_threads(),
        }
    }
}

/// What the server serves: a role's application ([`crate::http::Stacked`]), or a bench's bare
/// router, answering every request.
pub trait Application:
    Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
    + Clone
    + Send
    + Sync
    + 'static
{
}

impl<S> Application for S where
    S: Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
        + Clone
        + Send
        + Sync
        + 'static
{
}

/// Serves `app` on `listener` as `forma serve` serves a role's (`server.connection_threads`,
/// `server.max_connections`, the header read timeout, upgrades) until `stopping`, then lets the
/// open connections finish their in-flight requests. The benches' floors serve with it too, so
/// they measure the same transport.
pub fn serve_app(
    listener: TcpListener,
    app: impl Application,
    config: &Config,
    stopping: CancellationToken,
) -> impl Future<Output = ()> + Send + 'static {
    serve_connections(
        listener,
        app,
        ConnectionSettings::from_config(config),
        stopping,
    )
}

/// Accepts connections until `stopping`, at most `max_connections` at once, then lets the open
/// ones finish their in-flight requests (the caller bounds how long) and returns.
async fn serve_connections<A: Application>(
    listener: TcpListener,
    app: A,
    settings: ConnectionSettings,
    stopping: CancellationToken,
) {
    let threads = match settings.threads {
        0 => None,
        count => match ConnectionThreads::start(count) {
            Ok(threads) => Some(threads),
            Err(error) => {
                tracing::warn!(%error, count, "cannot start the connection threads; serving connections on the shared runtime");
                None
            }
        },
    };
    let slots = Arc::new(Semaphore::new(settings.max_connections));
    let open = TaskTracker::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .keep_alive(true);
    loop {
        // At the cap, stop accepting: new clients wait in the kernel's backlog, not in memory.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = stopping.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopping.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            http: http.clone(),
            app: app.clone(),
            peer,
            stopping: stopping.clone(),
            slot,
        };
        match &threads {
            None => {
                open.spawn(connection.serve(stream));
            }
            Some(threads) => {
                // Moved to the thread's own reactor: it is registered there when it arrives.
                let stream = match stream.into_std() {
                    Ok(stream) => stream,
                    Err(error) => {
                        tracing::warn!(%error, %peer, "cannot hand a connection to its thread");
                        continue;
                    }
                };
                open.spawn_on(
                    async move {
                        match TcpStream::from_std(stream) {
                            Ok(stream) => connection.serve(stream).await,
                            Err(error) => {
                                tracing::warn!(%error, %peer, "cannot serve a connection on its thread");
                            }
                        }
                    },
                    threads.next(),
                );
            }
        }
    }
    drop(listener);
    open.close();
    open.wait().await;
    // Only now: the connection threads' runtimes stop with them.
    drop(threads);
}

/// One accepted connection and what serving it needs.
struct Connection<A> {
    http: hyper::server::conn::http1::Builder,
    app: A,
    peer: SocketAddr,
    stopping: CancellationToken,
    /// Held while the connection is open (`server.max_connections`).
    slot: OwnedSemaphorePermit,
}

/// A connection's socket with its `server.max_connections` slot. The slot goes where the socket
/// goes: a connection upgraded to a websocket leaves hyper with its socket, and holds its slot
/// until the websocket closes, not only until the upgrade.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut task::Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(
        self: Pin<&mut Self>,
        cx: &mut task::Context<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

impl<A: Application> Connection<A> {
    /// Serves requests until the client closes, or finishes the one in flight once `stopping`.
    async fn serve(self, stream: TcpStream) {
        let Connection {
            http,
            app,
            peer,
            stopping,
            slot,
        } = self;
        let service = TowerToHyperService::new(app.map_request(
            move |request: axum::http::Request<hyper::body::Incoming>| {
                let mut request = request.map(|body| axum::body::Body::new(Lingering::new(body)));
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let stream = Slotted {
            stream,
            _slot: slot,
        };
        let connection = http
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
            }
            () = stopping.cancelled() => {
                connection.as_mut().graceful_shutdown();
                if let Err(error) = connection.await {
                    tracing::debug!(%error, %peer, "connection ended with an error");
                }
            }
        }
    }
}

/// Completes on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
