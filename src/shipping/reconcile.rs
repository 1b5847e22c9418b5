//! Reconciliation: parcels whose webhook was missed. Every few minutes the sender's process asks
//! Sendcloud about the parcels still moving and applies what changed, exactly as a webhook would.

use std::sync::Arc;

use chrono::Utc;

use super::ShippingCore;
use super::parcels::parcel_state;
use super::sendcloud::{Sendcloud, SendcloudError};
use super::shipments::repository;
use crate::infra::db::DbError;

/// Parcels asked about per pass.
const BATCH: i64 = 200;

/// One pass; how many shipments changed.
pub async fn pass(core: &ShippingCore, client: &Arc<Sendcloud>) -> Result<usize, DbError> {
    let mut changed = 0;
    let mut asked = Vec::new();
    for (shipment, parcel_id) in repository::in_flight(&core.db, BATCH).await? {
        match client.parcel(parcel_id).await {
            Ok(Some(parcel)) => {
                asked.push(shipment);
                let before = core.parcel_changed(&parcel_state(&parcel)).await?;
                changed += usize::from(before.is_some());
            }
            Ok(None) => {
                asked.push(shipment);
                tracing::warn!(%shipment, parcel_id, "Sendcloud no longer knows a shipment's parcel")
            }
            Err(e @ SendcloudError::Rejected(_)) => {
                // About this parcel only: the next pass asks the others first.
                asked.push(shipment);
                tracing::warn!(%shipment, parcel_id, error = %e, "Sendcloud refused to tell of a parcel");
            }
            Err(e) => {
                // One failure is likely all of them: the next pass goes on from here.
                tracing::warn!(error = %e, "reconciling parcels with Sendcloud failed; next time");
                break;
            }
        }
    }
    core.db
        .stamp("shipments", "reconciled_at", &asked, Utc::now())
        .await?;
    Ok(changed)
}
