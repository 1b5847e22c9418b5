//! The retry queue (SPEC §6.5): the calls to outside systems that failed and wait to be made
//! again — a print job SimplyPrint did not take, a parcel Sendcloud did not create, a fulfillment
//! Shopify did not accept.
//!
//! Each lives in its owner's row, retried by that owner's sender with the same backoff (1 s
//! doubling to 10 min, for ever, across restarts, leased across replicas): the row knows when the
//! call stops mattering (a job cancelled meanwhile), and a wait of minutes is no job for the bus,
//! whose retry holds a worker while it waits. This module is the one view of them and the one
//! place to act on them: the order service answers for its fulfillments and asks the print and
//! shipping services for theirs through their clients, never through their tables.

pub mod routes;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use axum::http::StatusCode;

use crate::http::ApiError;
use crate::infra::db::{Db, DbError};
use crate::on_pool;

/// Which call an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum CallKind {
    /// Adding a print job to SimplyPrint's queue.
    #[serde(rename = "simplyprint.print-job")]
    SimplyPrintJob,
    /// Creating an order's parcel at Sendcloud.
    #[serde(rename = "sendcloud.parcel")]
    SendcloudParcel,
    /// Creating an order's fulfillment at Shopify.
    #[serde(rename = "shopify.fulfillment")]
    ShopifyFulfillment,
}

impl CallKind {
    pub const ALL: [Self; 3] = [
        Self::SimplyPrintJob,
        Self::SendcloudParcel,
        Self::ShopifyFulfillment,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SimplyPrintJob => "simplyprint.print-job",
            Self::SendcloudParcel => "sendcloud.parcel",
            Self::ShopifyFulfillment => "shopify.fulfillment",
        }
    }
}

/// One failed call waiting to be made again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetryEntry {
    /// `{kind}:{entityId}`: what `POST /api/v1/retry-queue/{id}/retry` and `DELETE` take.
    pub id: String,
    pub kind: CallKind,
    /// The print job, shipment or order the call is for.
    pub entity_id: Uuid,
    pub order_id: Option<Uuid>,
    pub attempts: i64,
    /// When the owner's sender makes the call again.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub last_error: String,
}

impl RetryEntry {
    pub fn new(
        kind: CallKind,
        entity_id: Uuid,
        order_id: Option<Uuid>,
        attempts: i64,
        next_attempt_at: Option<DateTime<Utc>>,
        last_error: String,
    ) -> Self {
        Self {
            id: format!("{}:{entity_id}", kind.as_str()),
            kind,
            entity_id,
            order_id,
            attempts,
            next_attempt_at,
            last_error,
        }
    }

    /// The kind and entity an entry id names.
    pub fn parse_id(id: &str) -> Option<(CallKind, Uuid)> {
        let (kind, entity) = id.rsplit_once(':')?;
        let kind = CallKind::ALL.into_iter().find(|k| k.as_str() == kind)?;
        Some((kind, Uuid::parse_str(entity).ok()?))
    }
}

/// The answer for an entry that is not (or no longer) in the retry queue.
pub fn not_waiting() -> ApiError {
    ApiError::not_found("No such call waits in the retry queue")
}

/// 204 when an action on an entry was taken, else [`not_waiting`].
pub fn acted(taken: bool) -> Result<StatusCode, ApiError> {
    if taken {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_waiting())
    }
}

/// The tenant's orders whose fulfillment failed and waits to be tried again.
pub async fn failed_fulfillments(db: &Db, tenant_id: Uuid) -> Result<Vec<RetryEntry>, DbError> {
    type Row = (Uuid, i64, Option<DateTime<Utc>>, Option<String>);
    let rows: Vec<Row> = on_pool!(db, pool => {
        sqlx::query_as(
            "SELECT id, fulfillment_attempts, fulfillment_after, fulfillment_error FROM orders \
             WHERE tenant_id = $1 AND status = 'SHIPPED' AND fulfillment_after IS NOT NULL \
             AND fulfillment_error IS NOT NULL ORDER BY fulfillment_after, id",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, attempts, next, error)| {
            RetryEntry::new(
                CallKind::ShopifyFulfillment,
                id,
                Some(id),
                attempts,
                next,
                error.unwrap_or_default(),
            )
        })
        .collect())
}

/// Makes a failed fulfillment due now; `false` when the order has none waiting. An attempt in
/// flight keeps its lease: the call is never made twice at once.
pub async fn fulfill_now(db: &Db, tenant_id: Uuid, order_id: Uuid) -> Result<bool, DbError> {
    let updated = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE orders SET fulfillment_after = $3 \
             WHERE tenant_id = $1 AND id = $2 AND status = 'SHIPPED' \
             AND fulfillment_after IS NOT NULL AND fulfillment_error IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(order_id)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(updated == 1)
}

/// Stops trying a failed fulfillment: the order stays SHIPPED with its last error, for an
/// operator to fulfill at Shopify by hand. `false` when the order has none waiting.
pub async fn give_up_fulfillment(
    db: &Db,
    tenant_id: Uuid,
    order_id: Uuid,
) -> Result<bool, DbError> {
    let updated = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE orders SET fulfillment_after = NULL, fulfillment_lease_until = NULL \
             WHERE tenant_id = $1 AND id = $2 AND status = 'SHIPPED' \
             AND fulfillment_after IS NOT NULL AND fulfillment_error IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(order_id)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(updated == 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_id_names_its_kind_and_entity() {
        let id = Uuid::new_v4();
        for kind in CallKind::ALL {
            let entry = RetryEntry::new(kind, id, None, 1, None, String::new());
            assert_eq!(RetryEntry::parse_id(&entry.id), Some((kind, id)));
        }
        assert_eq!(RetryEntry::parse_id("shopify.fulfillment:not-a-uuid"), None);
        assert_eq!(RetryEntry::parse_id(&format!("smtp.mail:{id}")), None);
    }
}
