//! The order service (SPEC §6): orders, product mappings, Shopify, print jobs and shipments, the
//! event log, notifications. It is reached through the gateway, never directly by browsers.

pub mod health;

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
    OpenApiRouter::new()
}

/// Everything the `order` role serves: its API, its own health and probes.
pub fn router(state: OrderState) -> Router {
    let (api, _) = api_routes()
        .merge(crate::health::probe_routes())
        .merge(health::routes())
        .split_for_parts();
    api.with_state(state)
}
