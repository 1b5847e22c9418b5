//! The shipping side's part of the retry queue ([`crate::order::retry_queue`]): shipments whose
//! parcel Sendcloud did not create, waiting for the sender to try again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::shipments::ShipmentStatus;
use super::{ShippingCore, status_changed_event};
use crate::events::outbox;
use crate::infra::db::DbError;
use crate::order::retry_queue::{CallKind, RetryEntry};
use crate::{on_pool, on_tx};

/// A shipment whose parcel failed and is still to be created.
const FAILED_PARCEL: &str = "status = 'PENDING' AND parcel_error IS NOT NULL";

/// The tenant's shipments whose parcel failed, next attempt first.
pub async fn entries(core: &ShippingCore, tenant_id: Uuid) -> Result<Vec<RetryEntry>, DbError> {
    type Row = (Uuid, Uuid, i64, Option<DateTime<Utc>>, Option<String>);
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT id, order_id, parcel_attempts, parcel_after, parcel_error FROM shipments \
         WHERE tenant_id = $1 AND {FAILED_PARCEL} ORDER BY parcel_after, id"
    ));
    let rows: Vec<Row> = on_pool!(&core.db, pool => {
        sqlx::query_as(sql).bind(tenant_id).fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, order_id, attempts, next, error)| {
            RetryEntry::new(
                CallKind::SendcloudParcel,
                id,
                Some(order_id),
                attempts,
                next,
                error.unwrap_or_default(),
            )
        })
        .collect())
}

/// Makes a failed parcel due now and wakes the sender; `false` when the shipment has none
/// waiting.
pub async fn send_now(core: &ShippingCore, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET parcel_after = $3 \
         WHERE tenant_id = $1 AND id = $2 AND {FAILED_PARCEL}"
    ));
    let updated = on_pool!(&core.db, pool => {
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    if updated == 1 {
        core.parcels.notify();
    }
    Ok(updated == 1)
}

/// Stops trying: the shipment becomes EXCEPTION with its last error (`shipment.status-changed`),
/// for an operator to ship by hand. `false` when the shipment has no failed parcel waiting.
pub async fn give_up(core: &ShippingCore, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let Some(before) = super::shipments::repository::find(&core.db, tenant_id, id).await? else {
        return Ok(false);
    };
    let mut tx = core.db.begin().await?;
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET status = 'EXCEPTION', parcel_lease_until = NULL, updated_at = $3 \
         WHERE tenant_id = $1 AND id = $2 AND {FAILED_PARCEL}"
    ));
    let updated = on_tx!(&mut tx, conn => {
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(id)
            .bind(Utc::now())
            .execute(&mut *conn)
            .await
            .map(|done| done.rows_affected())
    })?;
    if updated != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    let mut after = before.clone();
    after.status = ShipmentStatus::Exception;
    outbox::enqueue(&mut tx, &status_changed_event(&before, &after)).await?;
    tx.commit().await?;
    core.announce_moved(&before, &after).await;
    Ok(true)
}
