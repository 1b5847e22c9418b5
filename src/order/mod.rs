//! The order service (SPEC §6): orders, product mappings, Shopify, print jobs and shipments, the
//! event log, the audit log, notifications. It is reached through the gateway, never directly by
//! browsers.

pub mod audit;
pub mod health;
pub mod internal;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;

/// The order service's router state.
#[derive(Clone)]
pub struct OrderState {
    pub ctx: Arc<AppContext>,
}

impl OrderState {
    pub fn new(ctx: Arc<AppContext>) -> Self {
        Self { ctx }
    }
}

impl FromRef<OrderState> for Arc<AppContext> {
    fn from_ref(state: &OrderState) -> Self {
        state.ctx.clone()
    }
}

/// The order service's public API (under `/api/v1`), as documented in the OpenAPI document.
pub fn api_routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new().merge(audit::routes::routes())
}

/// The order service as the gateway reaches it: its API, its own health and probes. In role `all`
/// the gateway calls this router in-process.
pub fn router(state: OrderState) -> Router {
    let (api, _) = api_routes()
        .merge(crate::health::probe_routes())
        .merge(health::routes())
        .split_for_parts();
    api.fallback(crate::http::error::not_found)
        .with_state(state)
        .layer(axum::middleware::from_fn(
            crate::identity::context::verify_body_digest,
        ))
}

/// What the `order` role serves on its own port: [`router`] plus the internal API for the other
/// services (which stays out of the OpenAPI document, and out of role `all` entirely).
pub fn service_router(state: OrderState) -> Router {
    router(state.clone()).merge(internal::routes().with_state(state))
}
