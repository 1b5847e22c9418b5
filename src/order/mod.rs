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

use crate::app::Readiness;
use crate::clients::print::PrintClient;
use crate::clients::shipping::ShippingClient;
use crate::config::{Config, PushConfig, ShopifyConfig, SmtpConfig};
use crate::events::internal::Dispatcher;
use crate::events::outbox::RelayNotifier;
use crate::identity::context::ContextVerifier;
use crate::infra::db::Db;
use crate::infra::workers::Workers;
use internal::InternalKey;

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

#[cfg(test)]
impl OrderCore {
    /// The order side on `db` as a test drives it: a dispatcher of its own (nobody listens), and
    /// print and shipping sides in process that publish nothing.
    pub fn detached(db: Db) -> Self {
        let print = crate::print::PrintCore::detached(db.clone());
        let shipping = crate::shipping::ShippingCore::detached(db.clone());
        Self {
            db,
            relay: Default::default(),
            events: Dispatcher::new(),
            print: Arc::new(crate::clients::print::InProcessPrintClient::new(print)),
            shipping: Arc::new(crate::clients::shipping::InProcessShippingClient::new(
                shipping,
            )),
            fulfillments: Default::default(),
            emails: Default::default(),
        }
    }
}

/// The order service's router state: what its handlers use, and nothing else of the process.
#[derive(Clone)]
pub struct OrderState {
    pub core: OrderCore,
    pub shops: shopify::Shops,
    /// `shopify.*`: webhook signatures, app installs, backfills.
    pub shopify: Arc<ShopifyConfig>,
    /// `smtp.*`: whether notification e-mails leave forma at all.
    pub smtp: Arc<SmtpConfig>,
    /// `push.*`: the VAPID key browsers subscribe with.
    pub push: Arc<PushConfig>,
    /// `environment = production`: push subscriptions must then name https endpoints.
    pub production: bool,
    /// Runs a backfill past the request that starts it, and stops it with the process.
    pub workers: Workers,
    /// The process's own readiness, for `/health` and the probes.
    pub readiness: Readiness,
    pub users: ContextVerifier,
    pub internal_key: InternalKey,
}

impl OrderState {
    /// The state of `core`'s routes, with what they read of `config` taken once.
    pub fn new(core: OrderCore, config: &Config, workers: Workers, readiness: Readiness) -> Self {
        Self {
            core,
            shops: shopify::Shops::default(),
            shopify: Arc::new(config.shopify.clone()),
            smtp: Arc::new(config.smtp.clone()),
            push: Arc::new(config.push.clone()),
            production: config.is_production(),
            workers,
            readiness,
            users: ContextVerifier::from_config(config),
            internal_key: InternalKey::from_config(config),
        }
    }
}

impl FromRef<OrderState> for ContextVerifier {
    fn from_ref(state: &OrderState) -> Self {
        state.users.clone()
    }
}

impl FromRef<OrderState> for InternalKey {
    fn from_ref(state: &OrderState) -> Self {
        state.internal_key.clone()
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
    let (api, _) = api_routes().merge(health::routes()).split_for_parts();
    let probes = state.readiness.probes();
    api.with_state(state).merge(probes)
}

#[cfg(test)]
pub(crate) mod flow_tests;

/// The order service's internal API (SPEC §7), for the other services: out of the OpenAPI
/// document, and out of role `all` entirely.
pub fn internal_router(state: OrderState) -> Router {
    internal::routes().with_state(state)
}
