//! Reconciliation: parcels whose webhook was missed. Every few minutes the sender's process asks
//! Sendcloud about the parcels still moving and applies what changed, exactly as a webhook would.

use std::sync::Arc;

use super::ShippingCore;
use super::parcels::parcel_state;
use super::sendcloud::Sendcloud;
use super::shipments::repository;
use crate::infra::db::DbError;

/// Parcels asked about per pass.
const BATCH: i64 = 200;

/// One pass; how many shipments changed.
pub async fn pass(core: &ShippingCore, client: &Arc<Sendcloud>) -> Result<usize, DbError> {
    let mut changed = 0;
    for (shipment, parcel_id) in repository::in_flight(&core.db, BATCH).await? {
        match client.parcel(parcel_id).await {
            Ok(Some(parcel)) => {
                let before = core.parcel_changed(&parcel_state(&parcel)).await?;
                changed += usize::from(before.is_some());
            }
            Ok(None) => {
                tracing::warn!(%shipment, parcel_id, "Sendcloud no longer knows a shipment's parcel")
            }
            Err(e) => {
                tracing::warn!(error = %e, "reconciling parcels with Sendcloud failed; next time");
                break;
            }
        }
    }
    Ok(changed)
}
