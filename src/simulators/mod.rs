//! Stand-ins for the outside services forma talks to, speaking their real HTTP: Shopify's webhooks
//! (signed as Shopify signs them) and SimplyPrint's API and webhooks. One implementation serves
//! the test suite's fakes and `serve --demo`. They listen on loopback only.

pub mod push;
pub mod sendcloud;
pub mod shopify;
pub mod simplyprint;
pub mod smtp;

use std::net::SocketAddr;

use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serves `router` on a free loopback port until `stop` is cancelled; returns its address.
pub async fn serve_on_loopback(
    router: Router,
    stop: CancellationToken,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let served = axum::serve(listener, router)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        if let Err(e) = served.await {
            tracing::warn!(error = %e, "a simulator stopped");
        }
    });
    Ok(addr)
}
