//! The API gateway (SPEC §5): the single entry point of the web app and of Shopify.

pub mod health;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;
use crate::clients::order::OrderClient;

/// The gateway's router state.
#[derive(Clone)]
pub struct GatewayState {
    pub ctx: Arc<AppContext>,
    pub order: Arc<dyn OrderClient>,
    pub health: Arc<health::HealthAggregator>,
}

impl GatewayState {
    pub fn new(ctx: Arc<AppContext>, order: Arc<dyn OrderClient>) -> anyhow::Result<Self> {
        let health = Arc::new(health::HealthAggregator::new(&ctx.config)?);
        Ok(Self { ctx, order, health })
    }
}

impl FromRef<GatewayState> for Arc<AppContext> {
    fn from_ref(state: &GatewayState) -> Self {
        state.ctx.clone()
    }
}

/// The gateway's own endpoints, as documented in the OpenAPI document.
pub fn api_routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .merge(crate::health::probe_routes())
        .merge(health::routes())
}

/// Everything the gateway serves.
pub fn router(state: GatewayState) -> Router {
    let (router, _) = api_routes().split_for_parts();
    router.with_state(state)
}

#[cfg(test)]
mod tests;
