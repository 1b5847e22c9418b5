//! Idempotent event handling (SPEC §8.1): the bus delivers at least once, so every consumer
//! records the `eventId`s it has handled and skips repeats.
//!
//! The dedupe record is written in the same transaction as the handler's own writes. Recording it
//! separately would be wrong either way round: before the writes, a crash in between would drop
//! the event for good; after them, a crash in between would apply it twice.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::catalog::Event;
use crate::infra::db::{Db, DbError, Tx};
use crate::infra::workers::{Workers, delete_in_batches};
use crate::{on_pool, on_tx};

/// How long dedupe records are kept. Redeliveries come within seconds (3 attempts, 1 s, 2 s, 4 s)
/// or, for a replayed dead letter, within days; a week covers both with room to spare.
pub const RETENTION: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Records that `consumer` handles `event_id`, in `tx`. `true` the first time; `false` if the
/// record exists already, i.e. the event is a redelivery and the handler must not run.
///
/// On PostgreSQL a concurrent delivery of the same event to the same consumer waits on the
/// primary key until the first transaction ends: it then sees `false` if the first committed, or
/// inserts and handles the event itself if the first rolled back.
pub async fn first_time(tx: &mut Tx, event_id: Uuid, consumer: &str) -> Result<bool, DbError> {
    let inserted = on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO processed_events (event_id, consumer, processed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (event_id, consumer) DO NOTHING",
        )
        .bind(event_id)
        .bind(consumer)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(inserted == 1)
}

/// What [`handle_once`] did with an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The handler ran and its writes committed with the dedupe record.
    Handled,
    /// This consumer had handled the event before; nothing ran.
    Duplicate,
}

/// Runs `handler` for `event` at most once per `consumer` (a stable name per subscribing module,
/// e.g. `order.fulfillment`): the dedupe record and the handler's writes through the given
/// transaction commit together. If the handler fails, everything rolls back, the dedupe record
/// included, so the bus's retry runs the handler again.
///
/// Side effects outside the transaction (HTTP calls) are not covered: a retry after a failed
/// commit repeats them, so they must be idempotent on their own (e.g. keyed by the event id).
///
/// ```ignore
/// handle_once(&db, &event, "order.fulfillment", |tx| Box::pin(async move {
///     shipments::record(tx, &shipment).await?;
///     Ok::<_, MyError>(())
/// })).await?;
/// ```
pub async fn handle_once<F, E>(
    db: &Db,
    event: &Event,
    consumer: &str,
    handler: F,
) -> Result<Outcome, E>
where
    F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<(), E>>,
    E: From<DbError>,
{
    Ok(
        match handle_once_returning(db, event, consumer, handler).await? {
            Some(()) => Outcome::Handled,
            None => Outcome::Duplicate,
        },
    )
}

/// [`handle_once`] for a handler with a result: `Some` of what the handler returned once its writes
/// committed, `None` for a redelivery (the handler did not run).
pub async fn handle_once_returning<F, T, E>(
    db: &Db,
    event: &Event,
    consumer: &str,
    handler: F,
) -> Result<Option<T>, E>
where
    F: for<'t> FnOnce(&'t mut Tx) -> BoxFuture<'t, Result<T, E>>,
    E: From<DbError>,
{
    let mut tx = db.begin().await?;
    if !first_time(&mut tx, event.event_id, consumer).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    match handler(&mut tx).await {
        Ok(value) => {
            tx.commit().await?;
            Ok(Some(value))
        }
        Err(e) => {
            // The handler's error is the one worth reporting; a failed rollback still discards
            // the transaction when the connection goes back to the pool.
            if let Err(rollback) = tx.rollback().await {
                tracing::warn!(error = %rollback, consumer, "rolling back a failed handler failed");
            }
            Err(e)
        }
    }
}

/// Dedupe records deleted per statement: a week of a busy deployment's records is millions of
/// rows, and one statement deleting them all would hold SQLite's one write lock (every handler's
/// commit waits on it) for seconds.
const CLEANUP_BATCH: usize = 1_000;

/// Deletes up to `batch` of the dedupe records older than `cutoff`, oldest first, in one
/// statement; returns how many.
pub async fn forget_processed_before(
    db: &Db,
    cutoff: DateTime<Utc>,
    batch: usize,
) -> Result<u64, DbError> {
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let deleted = on_pool!(db, pool => {
        sqlx::query(
            "DELETE FROM processed_events WHERE (event_id, consumer) IN ( \
               SELECT event_id, consumer FROM processed_events WHERE processed_at < $1 \
               ORDER BY processed_at LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(deleted)
}

/// Deletes dedupe records past [`RETENTION`], [`CLEANUP_BATCH`] at a time, until `stop`; for the
/// bus to call periodically. Returns how many.
pub async fn forget_expired(db: &Db, stop: &CancellationToken) -> Result<u64, DbError> {
    let retention = TimeDelta::from_std(RETENTION).unwrap_or(TimeDelta::MAX);
    let Some(cutoff) = Utc::now().checked_sub_signed(retention) else {
        return Ok(0);
    };
    delete_in_batches(CLEANUP_BATCH, stop, |batch| {
        forget_processed_before(db, cutoff, batch)
    })
    .await
}

/// Runs [`forget_expired`] every `every` until shutdown.
pub fn spawn_cleanup(db: Db, workers: &Workers, every: Duration) {
    workers.spawn("processed-events-cleanup", move |stop| async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = forget_expired(&db, &stop).await {
                        tracing::warn!(error = %e, "deleting old dedupe records failed");
                    }
                }
            }
        }
    });
}

#[cfg(test)]
#[path = "idempotency_tests.rs"]
mod tests;
