//! The HTTP server's lifecycle: bind, serve, and on SIGINT/SIGTERM stop accepting, let in-flight
//! requests finish (bounded by `server.shutdown_timeout_secs`), stop the workers, close the database.

use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::AppContext;
use crate::config::Config;
use crate::roles::{self, Role};

/// `forma serve`: starts `role` on its configured port and serves until a shutdown signal.
pub async fn serve(role: Role, config: Config) -> anyhow::Result<()> {
    let addr = SocketAddr::new(config.server.host, config.port_for(role));
    let ctx = AppContext::start(role, config).await?;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (server.host, server.port or --port)"))?;
    run(ctx, listener, shutdown_signal()).await
}

/// Serves `ctx.role` on `listener` until `shutdown` completes. Tests call this with a listener on
/// `127.0.0.1:0` and a oneshot receiver.
pub async fn run(
    ctx: Arc<AppContext>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let router = roles::router(ctx.role, ctx.clone())?;
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
    });

    let graceful = stopping.clone();
    let server = axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { graceful.cancelled().await });
    let mut serving = tokio::spawn(server.into_future());
    let grace = Duration::from_secs(ctx.config.server.shutdown_timeout_secs);
    let deadline = async {
        stopping.cancelled().await;
        tracing::info!("shutting down: no new connections, finishing in-flight requests");
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = &mut serving => result.context("the HTTP server task failed")??,
        () = deadline => {
            tracing::warn!(?grace, "in-flight requests did not finish in time; closing them");
            serving.abort();
        }
    }

    if !ctx.workers.shutdown(grace).await {
        tracing::warn!(?grace, "some workers did not stop in time");
    }
    ctx.db.close().await;
    tracing::info!("stopped");
    Ok(())
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
