//! The shipping service (SPEC §6.4): shipments, and their parcels at Sendcloud. In this part of
//! the split it runs inside the order role, reached by the order side only through
//! [`crate::clients::shipping::ShippingClient`] and the bus, and it never reads the order side's
//! tables: moving it to a process of its own is a change of `services.shipping_url`.

pub mod cancellation;
pub mod internal;
pub mod parcels;
pub mod reconcile;
pub mod retries;
pub mod sendcloud;
pub mod shipments;
pub mod subscriber;
#[cfg(test)]
mod tests;
pub mod webhook;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use chrono::Utc;
use utoipa_axum::router::OpenApiRouter;
use uuid::Uuid;

use crate::config::{Config, SendcloudConfig};
use crate::events::catalog::{Event, EventPayload, ShipmentCreated, ShipmentStatusChanged};
use crate::events::internal::{self as internal_events, Dispatcher, InternalEvent};
use crate::events::outbox::{self, RelayNotifier};
use crate::identity::context::ContextVerifier;
use crate::infra::db::{Db, DbError, Tx};
use crate::infra::workers::Wakeup;
use crate::order::internal::InternalKey;
use sendcloud::Sendcloud;
use shipments::repository::{self, ParcelState};
use shipments::{Shipment, ShipmentRequest, ShipmentStatus};

/// The `source` of the bus events the shipping service publishes.
pub const SHIPPING_SERVICE: &str = "shipping-service";

/// What every entry point of the shipping side works with. Cheap to clone.
#[derive(Clone)]
pub struct ShippingCore {
    pub db: Db,
    pub relay: RelayNotifier,
    pub events: Dispatcher,
    /// Wakes the parcel sender when a shipment waits for its parcel.
    pub parcels: Wakeup,
    /// Sendcloud, when connected; without it shipments wait `PENDING`.
    pub sendcloud: Option<Arc<Sendcloud>>,
}

impl ShippingCore {
    /// A core on `db` that tells no one what it does: no relay, no dispatcher, no parcel sender
    /// to wake, no Sendcloud. For tests that drive each step themselves.
    pub fn detached(db: Db) -> Self {
        Self {
            db,
            relay: Default::default(),
            events: Default::default(),
            parcels: Default::default(),
            sendcloud: None,
        }
    }

    /// The order's shipment, asked for now if it has none (idempotent: one per order), and
    /// whether this call created it; the sender creates its parcel.
    pub async fn request(&self, request: &ShipmentRequest) -> Result<(Shipment, bool), DbError> {
        let mut tx = self.db.begin().await?;
        let (shipment, created) = repository::insert_if_absent(&mut tx, request).await?;
        tx.commit().await?;
        if created {
            self.parcels.notify();
        }
        Ok((shipment, created))
    }

    /// The order's shipments (at most one today), for the order's own page.
    pub async fn of_order(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Vec<Shipment>, DbError> {
        let page = crate::http::pagination::PageRequest {
            page: 1,
            page_size: 10,
        };
        Ok(repository::list(&self.db, tenant_id, Some(order_id), page)
            .await?
            .0)
    }

    /// Cancels the order's shipment. A parcel not yet created never will be; one created is
    /// cancelled at Sendcloud ([`cancellation`]): the request is recorded, then Sendcloud asked at
    /// once. Returns the shipment as it is after: CANCELLED, or as it was while Sendcloud could not
    /// be asked (the parcel sender asks again until it answers). `None` when the order has no
    /// shipment; [`CancelError::Sendcloud`] when Sendcloud refused (the carrier has the parcel,
    /// which ships).
    pub async fn cancel(
        &self,
        tenant_id: Uuid,
        order_id: Uuid,
    ) -> Result<Option<Shipment>, CancelError> {
        let mut tx = self.db.begin().await?;
        let Some(shipment) = repository::lock_of_order(&mut tx, tenant_id, order_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        if shipment.status.is_final() {
            tx.rollback().await?;
            return Ok(Some(shipment));
        }
        if shipment.sendcloud_parcel_id.is_none() {
            let cancelled = self.cancelled(&mut tx, &shipment).await?;
            tx.commit().await?;
            self.announce_moved(&shipment, &cancelled).await;
            return Ok(Some(cancelled));
        }
        // Queued at Sendcloud already (the same cancellation delivered again): the carrier is
        // asked, and asking again would only be refused.
        if cancellation::already_queued(&mut tx, shipment.id).await? {
            tx.rollback().await?;
            return Ok(Some(shipment));
        }
        // Committed before the call, which is outside and must not hold the row: whatever happens
        // to the call or to this process, the request is there for the sender.
        let claimed = cancellation::request(&mut tx, shipment.id, Utc::now()).await?;
        tx.commit().await?;
        let Some(sendcloud) = &self.sendcloud else {
            tracing::warn!(shipment = %shipment.id, %order_id, "Sendcloud is not connected: the parcel of a cancelled order is cancelled once it is");
            return Ok(Some(shipment));
        };
        match cancellation::ask(self, sendcloud, &claimed).await? {
            cancellation::Answer::Cancelled(after) => Ok(after),
            cancellation::Answer::Later | cancellation::Answer::Queued => Ok(Some(shipment)),
            cancellation::Answer::Refused(message) => Err(CancelError::Sendcloud(message)),
        }
    }

    /// Sendcloud cancelled `parcel_id`: its shipment is CANCELLED (`shipment.status-changed`),
    /// and nothing is left to ask. A delivered shipment stays as it is. `None` for a parcel no
    /// shipment has.
    async fn parcel_cancelled(&self, parcel_id: i64) -> Result<Option<Shipment>, DbError> {
        let mut tx = self.db.begin().await?;
        let Some(locked) = repository::lock_by_parcel(&mut tx, parcel_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let before = locked.shipment;
        if before.status == ShipmentStatus::Delivered {
            tx.rollback().await?;
            tracing::warn!(shipment = %before.id, parcel_id, "Sendcloud cancelled the parcel of a delivered shipment");
            let error = "Sendcloud cancelled the parcel after its delivery";
            cancellation::failed(&self.db, before.id, None, error).await?;
            return Ok(Some(before));
        }
        let after = self.cancelled(&mut tx, &before).await?;
        tx.commit().await?;
        self.announce_moved(&before, &after).await;
        Ok(Some(after))
    }

    /// Cancels a shipment in `tx`, with `shipment.status-changed`.
    async fn cancelled(&self, tx: &mut Tx, shipment: &Shipment) -> Result<Shipment, DbError> {
        let after = repository::cancel(tx, shipment.id).await?;
        if shipment.status != after.status {
            outbox::enqueue(tx, &status_changed_event(shipment, &after)).await?;
        }
        Ok(after)
    }

    /// The parcel Sendcloud made for a `PENDING` shipment, stored, with `shipment.created` in the
    /// same transaction once the parcel has its label (else when it gets it: [`Self::parcel_changed`]).
    /// `None` when the shipment stopped waiting meanwhile.
    pub async fn parcel_created(
        &self,
        id: Uuid,
        parcel: &ParcelState,
    ) -> Result<Option<Shipment>, DbError> {
        let mut tx = self.db.begin().await?;
        let Some(shipment) = repository::set_parcel(&mut tx, id, parcel).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let labelled = sendcloud::status::is_labelled(parcel.status_id);
        if labelled {
            outbox::enqueue(&mut tx, &created_event(&shipment)).await?;
        } else {
            tracing::info!(shipment = %shipment.id, parcel = parcel.parcel_id, status_id = parcel.status_id, "the parcel waits for its label; the order ships when it has it");
        }
        tx.commit().await?;
        if labelled {
            self.announce_created(&shipment).await;
        }
        Ok(Some(shipment))
    }

    /// What Sendcloud now says of a parcel (a webhook, or reconciliation): written on its
    /// shipment, with `shipment.status-changed` when the status moved, and `shipment.created`
    /// when the parcel has just got its label. A webhook sent before the one the shipment shows
    /// changes nothing. `None` for a parcel forma does not know.
    pub async fn parcel_changed(&self, parcel: &ParcelState) -> Result<Option<Shipment>, DbError> {
        let mut tx = self.db.begin().await?;
        let Some(locked) = repository::lock_by_parcel(&mut tx, parcel.parcel_id).await? else {
            tx.rollback().await?;
            return Ok(None);
        };
        let (before, status_id_before) = (locked.shipment, locked.status_id);
        // Sent before the webhook whose status the shipment shows (a late retry, a replay):
        // older news, which would move the shipment back.
        if let (Some(sent), Some(latest)) = (parcel.sent_at, locked.status_at)
            && sent < latest
        {
            tx.rollback().await?;
            tracing::info!(parcel = parcel.parcel_id, status_id = parcel.status_id, %sent, %latest, "a Sendcloud webhook older than the status it would replace: ignored");
            return Ok(Some(before));
        }
        let reported = ShipmentStatus::from_sendcloud(parcel.status_id);
        let status = if before.status.is_final() {
            before.status
        } else {
            reported
        };
        let after = repository::set_status(&mut tx, before.id, parcel, status).await?;
        if after.status != before.status {
            outbox::enqueue(&mut tx, &status_changed_event(&before, &after)).await?;
        }
        let labelled = !status_id_before.is_some_and(sendcloud::status::is_labelled)
            && sendcloud::status::is_labelled(parcel.status_id)
            && after.status != ShipmentStatus::Cancelled;
        if labelled {
            outbox::enqueue(&mut tx, &created_event(&after)).await?;
        }
        tx.commit().await?;
        if labelled {
            self.announce_created(&after).await;
        }
        self.announce_moved(&before, &after).await;
        Ok(Some(after))
    }

    /// After the commit of a `shipment.created`: wake the relay, tell the process.
    async fn announce_created(&self, shipment: &Shipment) {
        self.relay.notify();
        self.events
            .emit(InternalEvent::ShipmentCreated(
                internal_events::ShipmentCreated {
                    tenant_id: shipment.tenant_id,
                    order_id: shipment.order_id,
                    shipment_id: shipment.id,
                    tracking_number: shipment.tracking_number.clone(),
                    tracking_url: shipment.tracking_url.clone(),
                    carrier: shipment.carrier.clone(),
                },
            ))
            .await;
    }

    pub(crate) async fn announce_moved(&self, before: &Shipment, after: &Shipment) {
        if before.status == after.status {
            return;
        }
        self.relay.notify();
        self.events
            .emit(InternalEvent::ShipmentStatusChanged(
                internal_events::ShipmentStatusChanged {
                    tenant_id: after.tenant_id,
                    order_id: after.order_id,
                    shipment_id: after.id,
                    previous_status: before.status.as_str().to_owned(),
                    new_status: after.status.as_str().to_owned(),
                },
            ))
            .await;
    }
}

/// `shipment.created`: the parcel is labelled, and the order ships with its tracking.
fn created_event(shipment: &Shipment) -> Event {
    Event::new(
        SHIPPING_SERVICE,
        shipment.tenant_id.to_string(),
        EventPayload::ShipmentCreated(ShipmentCreated {
            shipment_id: shipment.id.to_string(),
            order_id: shipment.order_id.to_string(),
            tracking_number: shipment.tracking_number.clone(),
            tracking_url: shipment.tracking_url.clone(),
            carrier: shipment.carrier.clone(),
        }),
    )
}

pub(crate) fn status_changed_event(before: &Shipment, after: &Shipment) -> Event {
    Event::new(
        SHIPPING_SERVICE,
        after.tenant_id.to_string(),
        EventPayload::ShipmentStatusChanged(ShipmentStatusChanged {
            shipment_id: after.id.to_string(),
            order_id: after.order_id.to_string(),
            previous_status: before.status.as_str().to_owned(),
            new_status: after.status.as_str().to_owned(),
        }),
    )
}

/// Why a shipment could not be cancelled.
#[derive(Debug, thiserror::Error)]
pub enum CancelError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// Sendcloud refused to cancel the parcel, for good: it ships.
    #[error("{0}")]
    Sendcloud(String),
}

/// The shipping service's router state: what its handlers use, and nothing else of the process.
#[derive(Clone)]
pub struct ShippingState {
    pub core: ShippingCore,
    /// `sendcloud.*`: the webhook's signing secret.
    pub sendcloud: Arc<SendcloudConfig>,
    pub users: ContextVerifier,
    pub internal_key: InternalKey,
}

impl ShippingState {
    /// The state of `core`'s routes, with what they read of `config` taken once.
    pub fn new(core: ShippingCore, config: &Config) -> Self {
        Self {
            core,
            sendcloud: Arc::new(config.sendcloud.clone()),
            users: ContextVerifier::from_config(config),
            internal_key: InternalKey::from_config(config),
        }
    }
}

impl FromRef<ShippingState> for ContextVerifier {
    fn from_ref(state: &ShippingState) -> Self {
        state.users.clone()
    }
}

impl FromRef<ShippingState> for InternalKey {
    fn from_ref(state: &ShippingState) -> Self {
        state.internal_key.clone()
    }
}

/// The shipping service's public API (under `/api/v1`), as documented in the OpenAPI document.
pub fn api_routes() -> OpenApiRouter<ShippingState> {
    OpenApiRouter::new()
        .merge(shipments::routes::routes())
        .merge(webhook::routes())
}

/// The shipping service's API as the gateway reaches it.
pub fn router(state: ShippingState) -> Router {
    let (api, _) = api_routes().split_for_parts();
    api.with_state(state)
}

/// The shipping service's internal API (SPEC §7).
pub fn internal_router(state: ShippingState) -> Router {
    internal::routes().with_state(state)
}
