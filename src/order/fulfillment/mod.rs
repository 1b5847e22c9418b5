//! From parcel to fulfilled order (SPEC §6.3, §6.4): the order side's reaction to
//! `shipment.created`.
//!
//! Invariants:
//! - The parcel's carrier and tracking are copied to the order and a READY_FOR_FULFILLMENT order
//!   moves to SHIPPED once per event, in one transaction with its log entry.
//! - Moving to SHIPPED makes the order due for its Shopify fulfillment ([`sender`]): the call is
//!   made from the order's row, outside any transaction and outside the bus handler, tried again
//!   with backoff until Shopify takes it; the order never loses its state meanwhile.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::OrderCore;
use super::event_log::{self, Entry, Severity, types};
use super::orchestration::order_moved;
use super::orders::OrderStatus;
use super::orders::repository::{self, Tracking};
use super::orders::state::Status;
use super::shopify::admin::ShopifyAdmin;
use super::shopify::tokens::{self, ShopCredentials, TokenCipher, TokenError};
use crate::config::{Config, ShopifyConfig};
use crate::events::bus::subscriptions::consumers::ORDER;
use crate::events::bus::{BusError, EventBus, HandlerError};
use crate::events::catalog::{Event, EventPayload, names};
use crate::events::idempotency::handle_once_returning;
use crate::events::internal::InternalEvent;
use crate::infra::db::{Db, Tx};

pub mod sender;

/// The consumer name of the dedupe records.
const SHIPPER: &str = "order.shipment-created";
/// How long one Admin API call may take, unless `shopify.timeout_ms` says.
const SHOPIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// Shopify's Admin API with the credentials of the order's tenant: its shop installed through
/// OAuth (the token opened with `shopify.token_key`), else the configured shop
/// (`shopify.shop_domain`, `shopify.access_token`) when it is that tenant's
/// ([`tokens::credentials_of`]).
pub struct Fulfiller {
    admin: ShopifyAdmin,
    shopify: ShopifyConfig,
    tokens: Option<TokenCipher>,
}

impl Fulfiller {
    /// The fulfiller, when a shop can be reached: the configured one, or shops installed through
    /// OAuth (`shopify.token_key` set).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let configured = tokens::configured(&config.shopify);
        let tokens = TokenCipher::from_config(&config.shopify).map_err(anyhow::Error::msg)?;
        if configured.is_none() && tokens.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            admin: ShopifyAdmin::new(
                config.shopify.base_url.as_deref(),
                config
                    .shopify
                    .timeout_ms
                    .map_or(SHOPIFY_TIMEOUT, Duration::from_millis),
            )?,
            shopify: config.shopify.clone(),
            tokens,
        }))
    }

    /// The shop and token that fulfill an order of `tenant_id` that came from `shop`: that shop's,
    /// or for an order stored before its shop was kept (`None`), the tenant's shop installed last.
    pub(crate) async fn shop_of(
        &self,
        db: &Db,
        tenant_id: Uuid,
        shop: Option<&str>,
    ) -> Result<Option<ShopCredentials>, TokenError> {
        tokens::credentials_of(db, &self.shopify, self.tokens.as_ref(), tenant_id, shop).await
    }
}

/// Subscribes the order side to `shipment.created` and `shipment.status-changed`.
pub fn subscribe(bus: &EventBus, core: OrderCore) -> Result<(), BusError> {
    let shipper = core.clone();
    bus.subscribe(ORDER, names::SHIPMENT_CREATED, move |event: Event| {
        let core = shipper.clone();
        async move { on_shipment_created(&core, &event).await }
    })?;
    bus.subscribe(
        ORDER,
        names::SHIPMENT_STATUS_CHANGED,
        move |event: Event| {
            let core = core.clone();
            async move { on_shipment_status_changed(&core, &event).await }
        },
    )
}

/// One `shipment.status-changed`: an entry in the order's event log, once.
pub async fn on_shipment_status_changed(
    core: &OrderCore,
    event: &Event,
) -> Result<(), HandlerError> {
    let EventPayload::ShipmentStatusChanged(changed) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, order_id)) = event.tenant_and(&changed.order_id) else {
        return Ok(());
    };
    let severity = if changed.new_status == "EXCEPTION" {
        Severity::Warning
    } else {
        Severity::Info
    };
    let entry = Entry::order(
        tenant_id,
        order_id,
        types::SHIPMENT_STATUS_CHANGED,
        severity,
        format!(
            "Parcel {} → {}",
            changed.previous_status, changed.new_status
        ),
    )
    .with_details(json!({
        "shipmentId": changed.shipment_id,
        "previousStatus": changed.previous_status,
        "newStatus": changed.new_status,
    }));
    handle_once_returning(&core.db, event, "order.shipment-status", |tx| {
        Box::pin(async move {
            event_log::append(tx, &entry).await?;
            Ok::<_, HandlerError>(())
        })
    })
    .await?;
    Ok(())
}

/// One `shipment.created`.
pub async fn on_shipment_created(core: &OrderCore, event: &Event) -> Result<(), HandlerError> {
    let EventPayload::ShipmentCreated(created) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, order_id)) = event.tenant_and(&created.order_id) else {
        return Ok(());
    };
    let tracking = Tracking {
        tracking_number: created.tracking_number.clone(),
        tracking_url: created.tracking_url.clone(),
        carrier: created.carrier.clone(),
    };
    let shipment_id = created.shipment_id.clone();
    let emitted = handle_once_returning(&core.db, event, SHIPPER, |tx| {
        Box::pin(async move { ship(tx, tenant_id, order_id, &tracking, &shipment_id).await })
    })
    .await?;
    core.relay.notify();
    core.fulfillments.notify();
    for event in emitted.unwrap_or_default() {
        core.events.emit(event).await;
    }
    Ok(())
}

/// Tracking on the order, and READY_FOR_FULFILLMENT → SHIPPED.
async fn ship(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
    tracking: &Tracking,
    shipment_id: &str,
) -> Result<Vec<InternalEvent>, HandlerError> {
    let Some(record) = repository::lock(tx, tenant_id, order_id).await? else {
        tracing::warn!(%order_id, "shipment.created for an order forma does not have");
        return Ok(Vec::new());
    };
    repository::set_tracking_in(tx, order_id, tracking).await?;
    let entry = Entry::order(
        tenant_id,
        order_id,
        types::SHIPMENT_CREATED,
        Severity::Info,
        format!(
            "Parcel created: {} {}",
            tracking.carrier.as_deref().unwrap_or("carrier unknown"),
            tracking
                .tracking_number
                .as_deref()
                .unwrap_or("(no tracking yet)")
        ),
    )
    .with_details(json!({"shipmentId": shipment_id, "tracking": tracking}));
    event_log::append(tx, &entry).await?;
    if record.order.status != OrderStatus::ReadyForFulfillment {
        tracing::info!(%order_id, status = record.order.status.as_str(), "a parcel for an order that is not ready for fulfillment: tracking kept, status left");
        return Ok(Vec::new());
    }
    repository::set_status(tx, order_id, OrderStatus::Shipped, None, None).await?;
    sender::schedule(tx, order_id).await?;
    Ok(order_moved(tx, &record.order, OrderStatus::Shipped).await?)
}
