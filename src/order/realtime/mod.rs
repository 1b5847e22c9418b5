//! Real-time updates over Socket.IO (SPEC §6.6): path `/socket.io`, namespace `/events`, protocol
//! v5, so the JavaScript `socket.io-client` 4.x connects unchanged over websocket or long-polling.
//!
//! Browsers reach it through the gateway, which authenticates the handshake like any API request
//! and signs the user context for it; here a socket is admitted only with that verified context
//! ([`connect`]) and joins its tenant's room. Internal events (§8.2) become socket events through
//! one table ([`fanout::SOCKET_EVENTS`]), carrying the entity as the API returns it, and go to the
//! tenant's room only. With Redis configured, the Redis adapter carries every emit to the sockets
//! of all order replicas ([`adapter`]).
//!
//! The server exists once its adapter runs: at once in-process, or once Redis answers. Until then
//! `/socket.io` answers 503 and emits are dropped (no socket can be connected here meanwhile).

mod adapter;
mod connect;
mod fanout;
mod redis_driver;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tower::ServiceExt;
use uuid::Uuid;

use super::OrderCore;
use crate::app::AppContext;
use crate::http::ApiError;

pub use adapter::{redis_client, socket_io_builder};
pub use connect::kept_for_engine_io;
pub use fanout::{NOTIFICATION, SOCKET_EVENTS, socket_event};

/// Where the Socket.IO endpoint is mounted (engine.io's default, which clients assume).
pub const PATH: &str = "/socket.io";
/// The namespace every client connects to.
pub const NAMESPACE: &str = "/events";

/// This replica's Socket.IO server, shared by the router and the fan-out. Cheap to clone.
#[derive(Clone)]
pub struct Realtime {
    server: Arc<OnceLock<adapter::Server>>,
    /// Set by [`Realtime::close`]: from then on no new session is opened here.
    closed: Arc<AtomicBool>,
    outgoing: fanout::Queue,
}

impl Realtime {
    /// Sets up the server on the configured adapter and feeds it the internal events of `core`.
    pub fn start(ctx: &Arc<AppContext>, core: &OrderCore) -> anyhow::Result<Self> {
        let server: Arc<OnceLock<adapter::Server>> = Arc::default();
        adapter::start(ctx, server.clone())?;
        let outgoing = fanout::start(ctx, core, server.clone());
        Ok(Self {
            server,
            closed: Arc::default(),
            outgoing,
        })
    }

    /// The `/socket.io` routes, to merge into the order service's router (inside the layer that
    /// verifies a signed context's body digest, so the context extractor works as for the API).
    pub fn router(&self) -> Router {
        let (server, closed) = (self.server.clone(), self.closed.clone());
        let service = tower::service_fn(move |request: Request| {
            let ready = server.get().map(|s| s.service.clone());
            let closed = closed.load(Ordering::Acquire);
            async move {
                Ok::<Response, Infallible>(match ready {
                    _ if closed => ApiError::service_unavailable(
                        "Real-time updates are stopping on this server; reconnect shortly",
                    )
                    .into_response(),
                    Some(service) => match service.oneshot(request).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    },
                    None => ApiError::service_unavailable(
                        "Real-time updates are starting; try again shortly",
                    )
                    .into_response(),
                })
            }
        });
        Router::new()
            .route_service(PATH, service.clone())
            .route_service(&format!("{PATH}/"), service)
    }

    /// Closes every socket connected here and opens no new session, when shutdown begins. Graceful
    /// shutdown waits for in-flight requests, and an idle long-poll is one until the next ping (up
    /// to the ping interval): closing its session answers it at once. Websocket clients are told
    /// the server closed (and reconnect elsewhere) instead of losing their connection unannounced.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(server) = self.server.get() {
            (server.close)().await;
        }
    }

    /// Sends a `notification` event with `payload` to every socket of `tenant_id` (for the
    /// notifications module, whose notifications are not internal events).
    pub fn notify(&self, tenant_id: Uuid, payload: Value) {
        self.outgoing.push(fanout::Outgoing::Ready {
            event: NOTIFICATION,
            tenant_id,
            payload,
        });
    }
}

/// The room of a tenant's sockets: events never leave it.
fn tenant_room(tenant_id: Uuid) -> String {
    format!("tenant:{tenant_id}")
}

#[cfg(test)]
pub(crate) mod test_client;
#[cfg(test)]
mod tests;
