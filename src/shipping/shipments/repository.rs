//! The `shipments` table.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Shipment, ShipmentRequest, ShipmentStatus};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Db, DbError, Tx};
use crate::{on_pool, on_tx};

const COLUMNS: &str = "id, tenant_id, order_id, status, sendcloud_parcel_id, \
    sendcloud_status_id, sendcloud_status_at, carrier, tracking_number, tracking_url, label_url, \
    parcel_error, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    order_id: Uuid,
    status: String,
    sendcloud_parcel_id: Option<i64>,
    sendcloud_status_id: Option<i64>,
    sendcloud_status_at: Option<DateTime<Utc>>,
    carrier: Option<String>,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
    label_url: Option<String>,
    parcel_error: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_shipment(self) -> Shipment {
        let status = ShipmentStatus::parse(&self.status).unwrap_or_else(|| {
            tracing::error!(shipment = %self.id, status = self.status, "unknown shipment status");
            ShipmentStatus::Exception
        });
        let pending = status == ShipmentStatus::Pending;
        Shipment {
            id: self.id,
            tenant_id: self.tenant_id,
            order_id: self.order_id,
            sendcloud_parcel_id: self.sendcloud_parcel_id,
            carrier: self.carrier,
            tracking_number: self.tracking_number,
            tracking_url: self.tracking_url,
            label_url: self.label_url,
            status,
            error_message: self.parcel_error.filter(|_| pending),
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn encode(request: &ShipmentRequest) -> Result<String, DbError> {
    serde_json::to_string(request).map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))
}

/// The shipment of the request's order, created `PENDING` if the order has none yet; `true` when
/// this call created it. One shipment per order, however often it is asked for.
pub async fn insert_if_absent(
    tx: &mut Tx,
    request: &ShipmentRequest,
) -> Result<(Shipment, bool), DbError> {
    let now = Utc::now();
    let inserted = on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO shipments (id, tenant_id, order_id, request, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, 'PENDING', $5, $5) ON CONFLICT (tenant_id, order_id) DO NOTHING",
        )
        .bind(Uuid::new_v4())
        .bind(request.tenant_id)
        .bind(request.order_id)
        .bind(encode(request)?)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected() == 1)
    })?;
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM shipments WHERE tenant_id = $1 AND order_id = $2"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql)
            .bind(request.tenant_id)
            .bind(request.order_id)
            .fetch_one(&mut *conn)
            .await
    })?;
    Ok((row.into_shipment(), inserted))
}

/// The tenant's shipment `id`.
pub async fn find(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<Option<Shipment>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM shipments WHERE tenant_id = $1 AND id = $2"
    ));
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(sql).bind(tenant_id).bind(id).fetch_optional(pool).await
    })?;
    Ok(row.map(Row::into_shipment))
}

/// One page of the tenant's shipments (of one order, when given), newest first, and how many.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    order_id: Option<Uuid>,
    page: PageRequest,
) -> Result<(Vec<Shipment>, i64), DbError> {
    let condition = "tenant_id = $1 AND ($2 IS NULL OR order_id = $2)";
    let (limit, offset) = page.limit_offset();
    let select = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM shipments WHERE {condition} \
         ORDER BY created_at DESC, id DESC LIMIT $3 OFFSET $4"
    ));
    let count = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM shipments WHERE {condition}"));
    // One snapshot, so the page and the count agree while shipments are created.
    let mut tx = db.snapshot().await?;
    let rows = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, Row>(select)
            .bind(tenant_id)
            .bind(order_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    let total = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>(count)
            .bind(tenant_id)
            .bind(order_id)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((rows.into_iter().map(Row::into_shipment).collect(), total))
}

/// The order's shipment, locked for a change in `tx`.
pub async fn lock_of_order(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
) -> Result<Option<Shipment>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET updated_at = updated_at WHERE tenant_id = $1 AND order_id = $2 \
         RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql).bind(tenant_id).bind(order_id).fetch_optional(&mut *conn).await
    })?;
    Ok(row.map(Row::into_shipment))
}

/// A shipment locked for a change of its parcel, with what Sendcloud last said of the parcel.
pub struct LockedParcel {
    pub shipment: Shipment,
    /// The parcel's last status id.
    pub status_id: Option<i64>,
    /// When Sendcloud sent the webhook that said it, if a webhook did.
    pub status_at: Option<DateTime<Utc>>,
}

/// The shipment of Sendcloud's parcel `parcel_id`, locked for a change in `tx`.
pub async fn lock_by_parcel(tx: &mut Tx, parcel_id: i64) -> Result<Option<LockedParcel>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET updated_at = updated_at WHERE sendcloud_parcel_id = $1 \
         RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql).bind(parcel_id).fetch_optional(&mut *conn).await
    })?;
    Ok(row.map(|row| LockedParcel {
        status_id: row.sendcloud_status_id,
        status_at: row.sendcloud_status_at,
        shipment: row.into_shipment(),
    }))
}

/// What Sendcloud says of a parcel, as stored on its shipment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelState {
    pub parcel_id: i64,
    pub status_id: i64,
    pub carrier: Option<String>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub label_url: Option<String>,
    /// When Sendcloud sent it, for a webhook's; `None` for what forma asked for itself (the
    /// create's answer, reconciliation), which is the latest there is.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Stores the parcel of a `PENDING` shipment and its status; the shipment after, `None` when it
/// is no longer waiting for one (cancelled meanwhile, or stored by another replica).
pub async fn set_parcel(
    tx: &mut Tx,
    id: Uuid,
    parcel: &ParcelState,
) -> Result<Option<Shipment>, DbError> {
    let status = ShipmentStatus::from_sendcloud(parcel.status_id);
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET sendcloud_parcel_id = $2, sendcloud_status_id = $3, status = $4, \
         carrier = $5, tracking_number = $6, tracking_url = $7, label_url = $8, \
         parcel_error = NULL, parcel_lease_until = NULL, parcel_attempts = parcel_attempts + 1, \
         updated_at = $9 WHERE id = $1 AND status = 'PENDING' RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql)
            .bind(id)
            .bind(parcel.parcel_id)
            .bind(parcel.status_id)
            .bind(status.as_str())
            .bind(parcel.carrier.as_deref())
            .bind(parcel.tracking_number.as_deref())
            .bind(parcel.tracking_url.as_deref())
            .bind(parcel.label_url.as_deref())
            .bind(Utc::now())
            .fetch_optional(&mut *conn)
            .await
    })?;
    Ok(row.map(Row::into_shipment))
}

/// Writes a parcel's new status (and tracking Sendcloud may have added since) on its shipment.
pub async fn set_status(
    tx: &mut Tx,
    id: Uuid,
    parcel: &ParcelState,
    status: ShipmentStatus,
) -> Result<Shipment, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET sendcloud_status_id = $2, status = $3, \
         carrier = COALESCE($4, carrier), tracking_number = COALESCE($5, tracking_number), \
         tracking_url = COALESCE($6, tracking_url), label_url = COALESCE($7, label_url), \
         updated_at = $8, sendcloud_status_at = COALESCE($9, sendcloud_status_at) \
         WHERE id = $1 RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql)
            .bind(id)
            .bind(parcel.status_id)
            .bind(status.as_str())
            .bind(parcel.carrier.as_deref())
            .bind(parcel.tracking_number.as_deref())
            .bind(parcel.tracking_url.as_deref())
            .bind(parcel.label_url.as_deref())
            .bind(Utc::now())
            .bind(parcel.sent_at)
            .fetch_one(&mut *conn)
            .await
    })?;
    Ok(row.into_shipment())
}

/// Marks a shipment cancelled; nothing is left to ask Sendcloud (a cancellation of its parcel that
/// was waiting is done).
pub async fn cancel(tx: &mut Tx, id: Uuid) -> Result<Shipment, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET status = 'CANCELLED', parcel_lease_until = NULL, updated_at = $2, \
         cancel_requested_at = NULL, cancel_after = NULL, cancel_attempts = 0, cancel_error = NULL \
         WHERE id = $1 RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql).bind(id).bind(Utc::now()).fetch_one(&mut *conn).await
    })?;
    Ok(row.into_shipment())
}

/// A `PENDING` shipment claimed for creating its parcel.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    pub id: Uuid,
    pub request: String,
    pub parcel_attempts: i64,
}

/// Claims up to `limit` shipments due for their parcel until `now + lease`. The whole condition is
/// repeated outside the subquery: PostgreSQL re-checks it on a row another replica changed
/// meanwhile, so two replicas never both take one shipment, and none takes one another replica
/// finished since its subquery read it.
pub async fn claim_waiting(
    db: &Db,
    now: DateTime<Utc>,
    lease: TimeDelta,
    limit: i64,
) -> Result<Vec<Claimed>, DbError> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(
            "UPDATE shipments SET parcel_lease_until = $1 WHERE id IN ( \
               SELECT id FROM shipments WHERE status = 'PENDING' \
               AND (parcel_after IS NULL OR parcel_after <= $2) \
               AND (parcel_lease_until IS NULL OR parcel_lease_until < $2) \
               ORDER BY created_at, id LIMIT $3) \
             AND status = 'PENDING' AND (parcel_after IS NULL OR parcel_after <= $2) \
             AND (parcel_lease_until IS NULL OR parcel_lease_until < $2) \
             RETURNING id, request, parcel_attempts",
        )
        .bind(now + lease)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

/// Records a failed attempt at the parcel and when to try next.
pub async fn parcel_failed(
    db: &Db,
    id: Uuid,
    next: DateTime<Utc>,
    error: &str,
) -> Result<(), DbError> {
    let message: String = error.chars().take(500).collect();
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE shipments SET parcel_attempts = parcel_attempts + 1, parcel_after = $2, \
             parcel_error = $3, parcel_lease_until = NULL WHERE id = $1 AND status = 'PENDING'",
        )
        .bind(id)
        .bind(next)
        .bind(&message)
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Shipments whose parcel is still moving: what reconciliation asks Sendcloud about, those it
/// asked about longest ago first (never asked: first of all).
pub async fn in_flight(db: &Db, limit: i64) -> Result<Vec<(Uuid, i64)>, DbError> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, (Uuid, i64)>(
            "SELECT id, sendcloud_parcel_id FROM shipments \
             WHERE sendcloud_parcel_id IS NOT NULL AND status IN ('ANNOUNCED', 'IN_TRANSIT', 'EXCEPTION') \
             ORDER BY reconciled_at NULLS FIRST, updated_at, id LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}
