//! The order service (SPEC §6): orders, product mappings, Shopify, the orchestration of print jobs,
//! the event log, the audit log. It is reached through the gateway, never directly by browsers,
//! and reaches the print service only through [`PrintClient`] and the bus.

pub mod analytics;
pub mod audit;
pub mod event_log;
pub mod fulfillment;
pub mod health;
pub mod internal;
pub mod inventory;
pub mod mappings;
pub mod notifications;
pub mod orchestration;
pub mod orders;
pub mod realtime;
pub mod retry_queue;
pub mod shopify;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;
use crate::clients::print::PrintClient;
use crate::clients::shipping::ShippingClient;
use crate::events::internal::Dispatcher;
use crate::events::outbox::RelayNotifier;
use crate::infra::db::Db;

/// What every entry point of the order side works with: its database, the relay to wake after
/// committing bus events, the internal event dispatcher, and the print service. Cheap to clone.
#[derive(Clone)]
pub struct OrderCore {
    pub db: Db,
    pub relay: RelayNotifier,
    pub events: Dispatcher,
    pub print: Arc<dyn PrintClient>,
    pub shipping: Arc<dyn ShippingClient>,
    /// Wakes the Shopify fulfillment sender when an order ships.
    pub fulfillments: crate::infra::workers::Wakeup,
    /// Wakes the notification e-mail sender when an e-mail is recorded.
    pub emails: crate::infra::workers::Wakeup,
}

/// The order service's router state.
#[derive(Clone)]
pub struct OrderState {
    pub ctx: Arc<AppContext>,
    pub core: OrderCore,
    pub shops: shopify::Shops,
}

impl OrderState {
    pub fn new(ctx: Arc<AppContext>, core: OrderCore) -> Self {
        Self {
            ctx,
            core,
            shops: shopify::Shops::default(),
        }
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
        .merge(audit::routes::routes())
        .merge(orders::routes::routes())
        .merge(mappings::routes::routes())
        .merge(shopify::webhook::routes())
        .merge(shopify::oauth::routes())
        .merge(shopify::backfill::routes())
        .merge(retry_queue::routes::routes())
        .merge(event_log::routes::routes())
        .merge(notifications::routes())
        .merge(notifications::push::routes::routes())
        .merge(inventory::routes::routes())
        .merge(analytics::routes::routes())
}

/// The order service as the gateway reaches it: its API, its own health and probes.
pub fn router(state: OrderState) -> Router {
    let (api, _) = api_routes()
        .merge(crate::health::probe_routes())
        .merge(health::routes())
        .split_for_parts();
    api.with_state(state)
}

#[cfg(test)]
pub(crate) mod flow_tests;

/// The order service's internal API (SPEC §7), for the other services: out of the OpenAPI
/// document, and out of role `all` entirely.
pub fn internal_router(state: OrderState) -> Router {
    internal::routes().with_state(state)
}
