//! Creating the parcels of waiting shipments at Sendcloud: a background sender per process.
//!
//! Invariants:
//! - A shipment waits `PENDING` until Sendcloud has its parcel. The state lives in the shipment's
//!   row (`parcel_*`), so a restart, a crash or an outage loses nothing.
//! - A failed attempt is tried again after 1 s, 2 s, 4 s … (jittered, at most 10 minutes), for
//!   ever: the shipment waits, it is never dropped. The last error is on the shipment.
//! - A parcel is never created twice: every attempt looks for a parcel with the shipment's order
//!   number first and adopts it (the answer of a create may have been lost, or the process killed
//!   before it stored the id).
//! - Replicas share the work by lease (`parcel_lease_until`), as the print sender does.
//! - The same sender asks Sendcloud again to cancel the parcels of cancelled orders that it could
//!   not be asked about at once ([`super::cancellation`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};

use super::sendcloud::{Parcel, ParcelItem, ParcelRequest, Sendcloud, SendcloudError, status};
use super::shipments::ShipmentRequest;
use super::shipments::repository::{self, Claimed, ParcelState};
use super::{ShippingCore, cancellation};
use crate::infra::db::DbError;
use crate::infra::workers::{Wakeup, Workers, backoff, each_claimed};

const WORKER: &str = "sendcloud-parcels";
/// Shipments claimed per pass.
const BATCH: i64 = 10;
/// How long a claim holds: longer than one create can take.
const LEASE: TimeDelta = TimeDelta::seconds(60);
/// Without a wake-up, the sender still looks this often (for shipments whose backoff ran out).
const IDLE: Duration = Duration::from_secs(2);
/// What one item weighs, in kilograms, while product mappings do not say.
const ITEM_WEIGHT_KG: &str = "0.250";

/// Runs the sender until shutdown.
pub fn spawn(workers: &Workers, core: ShippingCore, client: Arc<Sendcloud>, wakeup: Wakeup) {
    workers.sender(WORKER, wakeup, IDLE, BATCH as usize, move || {
        let (core, client) = (core.clone(), client.clone());
        async move { pass(&core, &client).await }
    });
}

/// One pass: claims the shipments that are due and creates their parcels, then the parcel
/// cancellations that are due and asks Sendcloud for them. Returns how many it handled.
pub async fn pass(core: &ShippingCore, client: &Sendcloud) -> Result<usize, DbError> {
    let now = Utc::now();
    let claimed = repository::claim_waiting(&core.db, now, LEASE, BATCH).await?;
    let sent = each_claimed(WORKER, &claimed, |shipment| send(core, client, shipment)).await;
    // Read again: creating the parcels can take minutes with a slow Sendcloud, and a lease that
    // starts at the pass's start may have run out before it is taken.
    let cancellations = cancellation::claim_due(&core.db, Utc::now(), BATCH).await?;
    let asked = each_claimed(WORKER, &cancellations, |claimed| async move {
        cancellation::ask(core, client, claimed).await.map(drop)
    })
    .await;
    Ok(sent + asked)
}

pub(super) async fn send(
    core: &ShippingCore,
    client: &Sendcloud,
    shipment: &Claimed,
) -> Result<(), DbError> {
    let request: ShipmentRequest = match serde_json::from_str(&shipment.request) {
        Ok(request) => request,
        Err(e) => {
            tracing::error!(shipment = %shipment.id, error = %e, "a stored shipment request does not parse");
            let next = Utc::now() + backoff(shipment.parcel_attempts + 1);
            return repository::parcel_failed(&core.db, shipment.id, next, &e.to_string()).await;
        }
    };
    let parcel_request = parcel_request(&request);
    // Looked for every time, the first included: a process killed after Sendcloud made the
    // parcel and before the commit left no trace of the attempt here.
    let adopted = client
        .find_by_order_number(&parcel_request.order_number)
        .await
        .map(|found| found.into_iter().find(|p| p.status_id != status::CANCELLED));
    let created = match adopted {
        Ok(Some(parcel)) => {
            tracing::info!(shipment = %shipment.id, parcel = parcel.id, "adopted a parcel Sendcloud already had");
            Ok(parcel)
        }
        Ok(None) => client.create_parcel(&parcel_request).await,
        Err(e) => Err(e),
    };
    match created {
        Ok(parcel) => {
            let state = parcel_state(&parcel);
            if core.parcel_created(shipment.id, &state).await?.is_some() {
                return Ok(());
            }
            // No longer waiting: cancelled meanwhile, or given its parcel by another replica
            // (this claim's lease ran out while Sendcloud answered). The parcel goes, unless it is
            // the very parcel the shipment now has (the other replica adopted it).
            let stored = repository::find(&core.db, request.tenant_id, shipment.id).await?;
            if stored.and_then(|s| s.sendcloud_parcel_id) == Some(parcel.id) {
                tracing::info!(shipment = %shipment.id, parcel = parcel.id, "another replica stored the same parcel");
            } else if let Err(e) = client.cancel_parcel(parcel.id).await {
                // A bought label nobody knows of would be charged, and could be printed and sent.
                let message = e.to_string();
                if cancellation::keep_stray(&core.db, shipment.id, parcel.id, &message).await? {
                    tracing::warn!(shipment = %shipment.id, parcel = parcel.id, error = message, "could not cancel a parcel made for a cancelled order yet; asked again");
                } else {
                    tracing::error!(shipment = %shipment.id, parcel = parcel.id, error = message, "could not cancel a parcel the shipment does not have: cancel it in Sendcloud");
                }
            }
            Ok(())
        }
        Err(error) => {
            let attempts = shipment.parcel_attempts + 1;
            let wait = backoff(attempts);
            if let SendcloudError::Rejected(_) = error {
                tracing::error!(shipment = %shipment.id, attempts, %error, "Sendcloud refused a parcel; it is tried again, fix the order's address");
            } else if let SendcloudError::Unauthorized(_) = error {
                tracing::error!(shipment = %shipment.id, attempts, %error, "Sendcloud refused forma's keys; the parcel is tried again");
            } else {
                tracing::warn!(shipment = %shipment.id, attempts, retry_in_secs = wait.num_seconds(), %error, "creating a parcel at Sendcloud failed");
            }
            repository::parcel_failed(&core.db, shipment.id, Utc::now() + wait, &error.to_string())
                .await
        }
    }
}

/// The parcel Sendcloud is asked for: the order's recipient and items, a label.
pub fn parcel_request(request: &ShipmentRequest) -> ParcelRequest {
    let r = &request.recipient;
    ParcelRequest {
        name: r.name.clone(),
        company_name: r.company.clone(),
        address: r.address1.clone(),
        house_number: None,
        address_2: r.address2.clone(),
        city: r.city.clone(),
        postal_code: r.postal_code.clone(),
        country: r.country_code.to_uppercase(),
        telephone: r.phone.clone(),
        email: r.email.clone(),
        order_number: request.sendcloud_order_number(),
        items: request
            .items
            .iter()
            .map(|item| ParcelItem {
                description: item.description.clone(),
                quantity: item.quantity,
                sku: Some(item.sku.clone()),
                value: item.unit_price.clone(),
                weight_kg: ITEM_WEIGHT_KG.to_owned(),
            })
            .collect(),
        weight_kg: None,
    }
}

/// A parcel as the shipment stores it.
pub fn parcel_state(parcel: &Parcel) -> ParcelState {
    ParcelState {
        parcel_id: parcel.id,
        status_id: parcel.status_id,
        carrier: parcel.carrier.clone(),
        tracking_number: parcel.tracking_number.clone(),
        tracking_url: parcel.tracking_url.clone(),
        label_url: parcel.label_url.clone(),
        sent_at: None,
    }
}
