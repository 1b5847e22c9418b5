//! Cancelling the parcel of a cancelled order at Sendcloud, through outages and crashes.
//!
//! Invariants:
//! - The wish to cancel is written on the shipment's row (`cancel_*`) and committed before
//!   Sendcloud is asked. A Sendcloud that times out, fails or rate-limits, or a process killed
//!   mid-call, leaves the request behind, never an announced parcel that nobody cancels (and the
//!   carrier ships).
//! - Sendcloud is asked at once, by the order's cancellation. A request it could not be asked
//!   about ([`SendcloudError::Unavailable`], or forma's keys refused) is asked again by the parcel sender after 1 s, 2 s,
//!   4 s … (jittered, at most 10 minutes), for as long as Sendcloud does not answer. An attempt
//!   counts from its claim, so one whose process died is asked again once its lease runs out.
//! - Sendcloud's answer ends the request. Accepted: the shipment is CANCELLED
//!   (`shipment.status-changed`) and the request is gone. Queued for the carrier, who may still
//!   refuse: the shipment follows its parcel, CANCELLED once Sendcloud says so (2000), moving on
//!   if the carrier refused; until then ANNOUNCED, and asked about by reconciliation. Refused (the carrier has the parcel):
//!   nothing more is tried, the refusal stays on the row, and the shipment follows its parcel:
//!   the cancelled order's goods ship.
//! - A delivered shipment is never moved by an answer.
//! - Replicas share the requests by lease (`cancel_after`), as they share parcels to create. Two
//!   asking at once is harmless: Sendcloud cancels a cancelled parcel again without complaint.

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::ShippingCore;
use super::sendcloud::{Cancellation, Sendcloud, SendcloudError};
use super::shipments::Shipment;
use crate::infra::db::{Db, DbError, Tx};
use crate::infra::workers::backoff;
use crate::{on_pool, on_tx};

/// How long a claim holds: longer than one cancel call can take.
const LEASE: TimeDelta = TimeDelta::seconds(60);

/// A parcel's cancellation, claimed for asking Sendcloud.
#[derive(Debug, sqlx::FromRow)]
pub struct Claimed {
    /// The shipment's id.
    pub id: Uuid,
    pub order_id: Uuid,
    pub parcel_id: i64,
    /// Attempts so far, this claim's included.
    pub attempts: i64,
}

/// What Sendcloud's answer made of a cancellation.
#[derive(Debug)]
pub enum Answer {
    /// Accepted: the shipment as it is now (CANCELLED, unless delivered), `None` when no
    /// shipment has the parcel any more.
    Cancelled(Option<Shipment>),
    /// Sendcloud could not be asked: the request waits for the sender.
    Later,
    /// Sendcloud asks the carrier, who may still refuse: the shipment follows its parcel's status
    /// (cancelled, or moving on), as webhooks and reconciliation tell it.
    Queued,
    /// Refused, for good: the parcel ships.
    Refused(String),
}

const RETURNING: &str = "RETURNING id, order_id, sendcloud_parcel_id AS parcel_id, \
    cancel_attempts AS attempts";

/// Records in `tx` the wish to cancel the parcel of locked shipment `id`, claimed by the caller,
/// who asks Sendcloud ([`ask`]) once `tx` is committed.
pub async fn request(tx: &mut Tx, id: Uuid, now: DateTime<Utc>) -> Result<Claimed, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET cancel_requested_at = COALESCE(cancel_requested_at, $2), \
         cancel_after = $3, cancel_attempts = cancel_attempts + 1 \
         WHERE id = $1 AND sendcloud_parcel_id IS NOT NULL {RETURNING}"
    ));
    let claimed = on_tx!(tx, conn => {
        sqlx::query_as::<_, Claimed>(sql)
            .bind(id)
            .bind(now)
            .bind(now + LEASE)
            .fetch_one(&mut *conn)
            .await
    })?;
    Ok(claimed)
}

/// Records the wish to cancel `parcel_id`, a parcel Sendcloud made for shipment `id` after the
/// order was cancelled (while Sendcloud answered the create) and could not cancel at once
/// (`error`): the sender asks again, as for any cancelled order's parcel. `false` when the
/// shipment is not a cancelled one without a parcel, which leaves nowhere to keep it.
pub async fn keep_stray(db: &Db, id: Uuid, parcel_id: i64, error: &str) -> Result<bool, DbError> {
    let now = Utc::now();
    let message: String = error.chars().take(500).collect();
    let kept = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE shipments SET sendcloud_parcel_id = $2, cancel_requested_at = $3, \
             cancel_after = $4, cancel_attempts = 1, cancel_error = $5 \
             WHERE id = $1 AND status = 'CANCELLED' AND sendcloud_parcel_id IS NULL",
        )
        .bind(id)
        .bind(parcel_id)
        .bind(now)
        .bind(now + backoff(1))
        .bind(&message)
        .execute(pool)
        .await
        .map(|r| r.rows_affected() == 1)
    })?;
    Ok(kept)
}

/// Claims up to `limit` cancellations due at `now`. The whole condition is repeated outside the
/// subquery: PostgreSQL re-checks it on a row another replica changed meanwhile, so two replicas
/// never both take one request, and none takes one another replica finished since.
pub async fn claim_due(db: &Db, now: DateTime<Utc>, limit: i64) -> Result<Vec<Claimed>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE shipments SET cancel_after = $1, cancel_attempts = cancel_attempts + 1 \
         WHERE id IN ( \
           SELECT id FROM shipments WHERE cancel_after <= $2 AND sendcloud_parcel_id IS NOT NULL \
           ORDER BY cancel_after, id LIMIT $3) \
         AND cancel_after <= $2 AND sendcloud_parcel_id IS NOT NULL {RETURNING}"
    ));
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(sql)
            .bind(now + LEASE)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await
    })?;
    Ok(rows)
}

/// Asks Sendcloud to cancel the claimed parcel, and records its answer.
pub async fn ask(
    core: &ShippingCore,
    client: &Sendcloud,
    claimed: &Claimed,
) -> Result<Answer, DbError> {
    let (shipment, order_id, attempts) = (claimed.id, claimed.order_id, claimed.attempts);
    match client.cancel_parcel(claimed.parcel_id).await {
        Ok(Cancellation::Queued) => {
            tracing::info!(%shipment, %order_id, "Sendcloud queued the cancellation of a cancelled order's parcel; its status tells the outcome");
            queued(&core.db, shipment).await?;
            Ok(Answer::Queued)
        }
        Ok(Cancellation::Done) => {
            if attempts > 1 {
                tracing::info!(%shipment, %order_id, attempts, "Sendcloud cancelled the parcel of a cancelled order");
            }
            Ok(Answer::Cancelled(
                core.parcel_cancelled(claimed.parcel_id).await?,
            ))
        }
        // Keys being mended are not a refusal of this cancellation: asked again meanwhile.
        Err(error @ (SendcloudError::Unavailable(_) | SendcloudError::Unauthorized(_))) => {
            let wait = backoff(attempts);
            tracing::warn!(%shipment, %order_id, attempts, retry_in_secs = wait.num_seconds(), %error, "Sendcloud could not be asked to cancel the parcel of a cancelled order; asked again");
            failed(
                &core.db,
                shipment,
                Some(Utc::now() + wait),
                &error.to_string(),
            )
            .await?;
            Ok(Answer::Later)
        }
        Err(error @ SendcloudError::Rejected(_)) => {
            tracing::warn!(%shipment, %order_id, %error, "the parcel of a cancelled order could not be cancelled: Sendcloud refused, the goods ship");
            let message = error.to_string();
            failed(&core.db, shipment, None, &message).await?;
            Ok(Answer::Refused(message))
        }
    }
}

/// Whether locked shipment `id` has a cancellation Sendcloud queued: requested, answered, and
/// neither due again nor refused.
pub async fn already_queued(tx: &mut Tx, id: Uuid) -> Result<bool, DbError> {
    let queued = on_tx!(tx, conn => {
        sqlx::query_scalar::<_, bool>(
            "SELECT cancel_requested_at IS NOT NULL AND cancel_after IS NULL \
             AND cancel_error IS NULL FROM shipments WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
    })?;
    Ok(queued.unwrap_or(false))
}

/// Ends the request of shipment `id` that Sendcloud queued: nothing more to ask. Its
/// `cancel_requested_at` stays, the mark that the order's cancellation reached Sendcloud.
async fn queued(db: &Db, id: Uuid) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query("UPDATE shipments SET cancel_after = NULL, cancel_error = NULL WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
    })?;
    Ok(())
}

/// Records an attempt that did not cancel the parcel, and `error`: asked again at `next`, or never
/// (`None`). A request ended meanwhile (the shipment was cancelled) stays ended.
pub async fn failed(
    db: &Db,
    id: Uuid,
    next: Option<DateTime<Utc>>,
    error: &str,
) -> Result<(), DbError> {
    let message: String = error.chars().take(500).collect();
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE shipments SET cancel_after = $2, cancel_error = $3 \
             WHERE id = $1 AND cancel_requested_at IS NOT NULL",
        )
        .bind(id)
        .bind(next)
        .bind(&message)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

#[cfg(test)]
#[path = "cancellation_tests.rs"]
mod tests;
