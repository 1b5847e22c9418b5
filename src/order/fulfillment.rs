//! From parcel to fulfilled order (SPEC §6.3, §6.4): the order side's reaction to
//! `shipment.created`.
//!
//! Invariants:
//! - The parcel's carrier and tracking are copied to the order and a READY_FOR_FULFILLMENT order
//!   moves to SHIPPED once per event, in one transaction with its log entry.
//! - A SHIPPED order gets its Shopify fulfillment, with the tracking, then moves to FULFILLED. The
//!   Admin API call is made outside any transaction and is idempotent on Shopify's side (a second
//!   call finds the fulfillment the first made), so a redelivered event or a retry never
//!   fulfills twice.
//! - A failed call leaves the order SHIPPED, logs `fulfillment.failed` and fails the handler: the
//!   bus tries again (1 s, 2 s), then keeps the event dead in `/admin/queues`, where an operator
//!   retries it once Shopify answers.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::OrderCore;
use super::event_log::{self, Entry, Severity, types};
use super::orchestration::order_moved;
use super::orders::OrderStatus;
use super::orders::repository::{self, Tracking};
use super::orders::state::Status;
use super::shopify::admin::{self, ShopifyAdmin};
use super::shopify::tokens::{self, ShopCredentials, TokenCipher, TokenError};
use crate::config::Config;
use crate::events::bus::subscriptions::consumers::ORDER;
use crate::events::bus::{BusError, EventBus, HandlerError};
use crate::events::catalog::{Event, EventPayload, names};
use crate::events::idempotency::handle_once_returning;
use crate::events::internal::{self as internal_events, InternalEvent};
use crate::events::outage;
use crate::infra::db::{Conn, Db, Tx};

/// The consumer name of the dedupe records.
const SHIPPER: &str = "order.shipment-created";
/// How long one Admin API call may take.
const SHOPIFY_TIMEOUT: Duration = Duration::from_secs(15);

/// Shopify's Admin API with the credentials of the order's tenant: its shop installed through
/// OAuth (the token opened with `shopify.token_key`), else the configured shop
/// (`shopify.shop_domain`, `shopify.access_token`).
pub struct Fulfiller {
    admin: ShopifyAdmin,
    configured: Option<ShopCredentials>,
    tokens: Option<TokenCipher>,
}

impl Fulfiller {
    /// The fulfiller, when a shop can be reached: the configured one, or shops installed through
    /// OAuth (`shopify.token_key` set).
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let configured = tokens::configured(config);
        let tokens = TokenCipher::from_config(config).map_err(anyhow::Error::msg)?;
        if configured.is_none() && tokens.is_none() {
            return Ok(None);
        }
        Ok(Some(Self {
            admin: ShopifyAdmin::new(config.shopify.base_url.as_deref(), SHOPIFY_TIMEOUT)?,
            configured,
            tokens,
        }))
    }

    /// The shop and token that fulfill `tenant_id`'s orders.
    async fn shop_of(
        &self,
        db: &Db,
        tenant_id: Uuid,
    ) -> Result<Option<ShopCredentials>, TokenError> {
        if let Some(cipher) = &self.tokens
            && let Some(installed) = tokens::installed(db, cipher, tenant_id, None).await?
        {
            return Ok(Some(installed));
        }
        Ok(self.configured.clone())
    }
}

/// Subscribes the order side to `shipment.created` and `shipment.status-changed`.
pub fn subscribe(
    bus: &EventBus,
    core: OrderCore,
    fulfiller: Option<Arc<Fulfiller>>,
) -> Result<(), BusError> {
    let shipper = core.clone();
    bus.subscribe(ORDER, names::SHIPMENT_CREATED, move |event: Event| {
        let (core, fulfiller) = (shipper.clone(), fulfiller.clone());
        async move {
            let created = || on_shipment_created(&core, fulfiller.as_deref(), &event);
            outage::ride_out(&core.db, created).await
        }
    })?;
    bus.subscribe(
        ORDER,
        names::SHIPMENT_STATUS_CHANGED,
        move |event: Event| {
            let core = core.clone();
            async move {
                let changed = || on_shipment_status_changed(&core, &event);
                outage::ride_out(&core.db, changed).await
            }
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
pub async fn on_shipment_created(
    core: &OrderCore,
    fulfiller: Option<&Fulfiller>,
    event: &Event,
) -> Result<(), HandlerError> {
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
    for event in emitted.unwrap_or_default() {
        core.events.emit(event).await;
    }
    fulfill(core, fulfiller, tenant_id, order_id).await
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
    order_moved(tx, &record.order, OrderStatus::Shipped).await
}

/// The Shopify fulfillment of a SHIPPED order, then FULFILLED.
async fn fulfill(
    core: &OrderCore,
    fulfiller: Option<&Fulfiller>,
    tenant_id: Uuid,
    order_id: Uuid,
) -> Result<(), HandlerError> {
    let Some(record) = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id).await?
    else {
        return Ok(());
    };
    let order = &record.order;
    if order.status != OrderStatus::Shipped {
        return Ok(());
    }
    let Some(fulfiller) = fulfiller else {
        tracing::info!(%order_id, "Shopify is not connected (shopify.shop_domain, shopify.access_token): the order stays SHIPPED");
        return Ok(());
    };
    let Some(shop) = fulfiller.shop_of(&core.db, tenant_id).await? else {
        tracing::info!(%order_id, "the tenant has no connected Shopify shop: the order stays SHIPPED");
        return Ok(());
    };
    let tracking = admin::Tracking {
        number: order.tracking_number.clone().unwrap_or_default(),
        url: order.tracking_url.clone(),
        company: order.carrier.clone(),
    };
    let created = fulfiller
        .admin
        .create_fulfillment(
            &shop.domain,
            &shop.token,
            &order.shopify_order_id,
            &tracking,
        )
        .await;
    let mut tx = core.db.begin().await?;
    let Some(record) = repository::lock(&mut tx, tenant_id, order_id).await? else {
        tx.rollback().await?;
        return Ok(());
    };
    let (entry, events, outcome) = match created {
        Ok(fulfillment) => {
            let entry = Entry::order(
                tenant_id,
                order_id,
                types::FULFILLMENT_CREATED,
                Severity::Info,
                "Shopify fulfillment created",
            )
            .with_details(json!({"fulfillmentId": fulfillment.id.to_string()}));
            let mut events = vec![InternalEvent::FulfillmentCreated(
                internal_events::OrderRef {
                    tenant_id,
                    order_id,
                },
            )];
            if record.order.status == OrderStatus::Shipped {
                repository::set_status(&mut tx, order_id, OrderStatus::Fulfilled, None, None)
                    .await?;
                events.extend(order_moved(&mut tx, &record.order, OrderStatus::Fulfilled).await?);
            }
            (entry, events, Ok(()))
        }
        Err(e) => {
            let message = e.to_string();
            tracing::warn!(%order_id, error = message, "creating the Shopify fulfillment failed; the bus tries again");
            let entry = Entry::order(
                tenant_id,
                order_id,
                types::FULFILLMENT_FAILED,
                Severity::Error,
                format!("Shopify fulfillment failed: {message}"),
            );
            let events = vec![InternalEvent::FulfillmentFailed(
                internal_events::FulfillmentFailed {
                    tenant_id,
                    order_id,
                    error_message: message,
                },
            )];
            (entry, events, Err(HandlerError::from(e.to_string())))
        }
    };
    event_log::append(&mut tx, &entry).await?;
    tx.commit().await?;
    core.relay.notify();
    for event in events {
        core.events.emit(event).await;
    }
    outcome
}
