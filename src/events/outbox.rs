//! The transactional outbox (SPEC §8.1).
//!
//! The old system published after commit and lost the event when the process died in between.
//! Here an event is a row written by [`enqueue`] in the caller's own transaction: a rolled-back
//! change leaves no row, a committed one leaves a row that [`OutboxRelay`] publishes and then marks
//! sent. Killing the process at any instant therefore loses nothing.
//!
//! Delivery is at-least-once, never exactly-once: a relay that dies (or whose lease runs out)
//! between the bus accepting a batch and the `sent_at` update publishes that batch again on the
//! next pass. Consumers deduplicate by `eventId` ([`super::idempotency`]).
//!
//! Several relays (one per replica) share the table without double-publishing in the normal case:
//! - PostgreSQL claims a batch with `FOR UPDATE SKIP LOCKED` and keeps the transaction, and so the
//!   row locks, open while publishing; a crash rolls the claim back with the connection.
//! - SQLite has no `SKIP LOCKED` and one writer at a time, so holding a transaction across the
//!   network would stall every other write. It claims with a lease instead (`claimed_by`,
//!   `claimed_until`), commits, publishes, and marks sent only rows it still holds. A crashed
//!   relay's lease expires and another relay takes the batch over.
//!
//! Order: rows are published in id order. Ids are drawn at insert, not at commit, so a transaction
//! that commits after a later one published its event is published on the next pass; and two
//! relays publishing side by side interleave their batches. Consumers already must not rely on
//! order across queues (seed catalog, "Event ordering").

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::catalog::Event;
use super::publish::{EventPublisher, PublishError};
use crate::infra::db::{Backend, Db, DbError, Tx};
use crate::on_tx;

mod relay_loop;
mod upkeep;

pub use relay_loop::RelayNotifier;
pub use upkeep::{Backlog, backlog, delete_sent_before};

/// Writes `event` to the outbox inside the caller's transaction, so that it is published if and
/// only if that transaction commits.
pub async fn enqueue(tx: &mut Tx, event: &Event) -> Result<(), DbError> {
    // The payload is the catalog JSON, serialized once here, so what the relay publishes is
    // exactly what this build meant even if a later build reads the row.
    let payload = serde_json::to_string(event)
        .map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))?;
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO outbox (event_id, event_type, payload, created_at, attempts) \
             VALUES ($1, $2, $3, $4, 0)",
        )
        .bind(event.event_id)
        .bind(event.event_type())
        .bind(&payload)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

/// How a relay paces itself. The defaults suit a dashboard that should see a new order within a
/// fraction of a second.
#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Rows claimed and published per pass.
    pub batch_size: usize,
    /// Pause between passes when the outbox is drained (a [`RelayNotifier`] cuts it short).
    pub interval: Duration,
    /// How long a claimed batch belongs to this relay; also the time limit on one publish, so
    /// that a hung bus call gives the batch back instead of holding it.
    pub lease: Duration,
    /// Ceiling of the exponential pause after failed passes.
    pub max_backoff: Duration,
    /// Sent rows are kept this long (to inspect what went out), then deleted.
    pub retention: Duration,
    /// How often sent rows past `retention` are deleted, `cleanup_batch` rows per statement so
    /// that a large backlog never becomes one long write lock.
    pub cleanup_every: Duration,
    pub cleanup_batch: usize,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch_size: 100,
            interval: Duration::from_millis(200),
            lease: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            retention: Duration::from_secs(60 * 60),
            cleanup_every: Duration::from_secs(60),
            cleanup_batch: 1000,
        }
    }
}

/// A placeholder list is built per batch; keep it far below SQLite's variable limit.
const MAX_BATCH: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Publish(#[from] PublishError),
}

/// Publishes committed outbox rows to the bus. One per process; see the module docs for how
/// several processes share the table.
pub struct OutboxRelay {
    db: Db,
    publisher: Arc<dyn EventPublisher>,
    settings: RelaySettings,
    /// Written to `claimed_by`: unique per relay instance, so a restarted process never mistakes
    /// its predecessor's claims for its own.
    id: String,
    notifier: RelayNotifier,
}

#[derive(sqlx::FromRow)]
struct ClaimedRow {
    id: i64,
    event_id: Uuid,
    payload: String,
}

/// The claim is the same statement on both databases except for the row locking that only
/// PostgreSQL has; `attempts` counts every claim, so a crash mid-publish is counted too.
macro_rules! claim_sql {
    ($locking:literal) => {
        concat!(
            "UPDATE outbox SET claimed_by = $1, claimed_until = $2, attempts = attempts + 1 \
             WHERE id IN (SELECT id FROM outbox \
             WHERE sent_at IS NULL AND (claimed_until IS NULL OR claimed_until < $3) \
             ORDER BY id LIMIT $4",
            $locking,
            ") RETURNING id, event_id, payload"
        )
    };
}

impl OutboxRelay {
    pub fn new(db: Db, publisher: Arc<dyn EventPublisher>, settings: RelaySettings) -> Self {
        Self {
            db,
            publisher,
            settings,
            id: format!("relay-{}", Uuid::new_v4().simple()),
            notifier: RelayNotifier::default(),
        }
    }

    /// This relay, woken by `notifier` (handed out before the relay could exist: the bus may start
    /// later than the services that commit events).
    pub fn with_notifier(mut self, notifier: RelayNotifier) -> Self {
        self.notifier = notifier;
        self
    }

    fn batch_limit(&self) -> usize {
        self.settings.batch_size.clamp(1, MAX_BATCH)
    }

    /// The name this relay writes to `claimed_by`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// A handle that wakes the running relay at once, for callers that just committed an event
    /// and want it published without waiting for the next tick.
    pub fn notifier(&self) -> RelayNotifier {
        self.notifier.clone()
    }

    /// One pass: claims up to `batch_size` unsent rows in id order, publishes them as one batch,
    /// marks them sent. Returns how many were published. On a publish failure the rows stay
    /// unsent, are released for the next pass (here or on another replica), and the error is
    /// returned so the caller backs off.
    pub async fn relay_once(&self) -> Result<usize, RelayError> {
        let limit = self.batch_limit();
        let now = Utc::now();
        let lease = TimeDelta::from_std(self.settings.lease).unwrap_or(TimeDelta::MAX);
        let until = now
            .checked_add_signed(lease)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let mut tx = self.db.begin().await?;
        let mut claimed = claim(&mut tx, &self.id, now, until, limit).await?;
        // PostgreSQL: the open transaction's row locks are the claim. SQLite: the committed lease
        // is, and the single write lock must not be held while the bus is called.
        let mut held = match self.db.backend() {
            Backend::Postgres => Some(tx),
            Backend::Sqlite => {
                tx.commit().await?;
                None
            }
        };
        if claimed.is_empty() {
            if let Some(tx) = held {
                tx.commit().await?;
            }
            return Ok(0);
        }
        // RETURNING promises no order.
        claimed.sort_by_key(|row| row.id);

        let mut ids = Vec::with_capacity(claimed.len());
        let mut events = Vec::with_capacity(claimed.len());
        for row in claimed {
            match serde_json::from_str::<Event>(&row.payload) {
                Ok(event) => {
                    ids.push(row.id);
                    events.push(event);
                }
                // Most likely an event type from a newer build during a rolling deploy: that
                // build's relay can publish it. The row keeps its lease, so it is offered again
                // only once the lease runs out instead of on every pass.
                Err(e) => tracing::error!(
                    outbox_id = row.id, event_id = %row.event_id, error = %e,
                    "an outbox row cannot be read by this build; left for another relay"
                ),
            }
        }
        if events.is_empty() {
            if let Some(tx) = held {
                tx.commit().await?;
            }
            return Ok(0);
        }

        let published = self.publish(&events).await;
        let mut tx = match held.take() {
            Some(tx) => tx,
            None => self.db.begin().await?,
        };
        match published {
            Ok(()) => {
                let marked = mark_sent(&mut tx, &self.id, &ids, Utc::now()).await?;
                tx.commit().await?;
                if marked < ids.len() as u64 {
                    // Only possible with leases: this relay was slower than its lease and another
                    // relay took (and published) part of the batch too.
                    tracing::warn!(
                        relay = %self.id, published = ids.len(), marked,
                        "outbox lease expired while publishing; some events went out twice"
                    );
                }
                metrics::counter!("outbox_published_total").increment(events.len() as u64);
                Ok(events.len())
            }
            Err(e) => {
                release(&mut tx, &self.id, &ids).await?;
                tx.commit().await?;
                Err(e.into())
            }
        }
    }

    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let lease = self.settings.lease;
        match tokio::time::timeout(lease, self.publisher.publish(events)).await {
            Ok(result) => result,
            Err(_) => Err(PublishError::new(format!(
                "no answer within the outbox lease of {lease:?}"
            ))),
        }
    }
}

async fn claim(
    tx: &mut Tx,
    relay: &str,
    now: DateTime<Utc>,
    until: DateTime<Utc>,
    limit: usize,
) -> Result<Vec<ClaimedRow>, DbError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = match tx {
        Tx::Postgres(tx) => {
            sqlx::query_as::<_, ClaimedRow>(claim_sql!(" FOR UPDATE SKIP LOCKED"))
                .bind(relay)
                .bind(until)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await?
        }
        Tx::Sqlite(tx) => {
            sqlx::query_as::<_, ClaimedRow>(claim_sql!(""))
                .bind(relay)
                .bind(until)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut **tx)
                .await?
        }
    };
    Ok(rows)
}

/// `$first, $first+1, …`: an `IN` list of `n` ids bound after the statement's other parameters.
fn id_placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks published rows sent, but only those this relay still holds: a row whose lease another
/// relay took over is that relay's to mark.
async fn mark_sent(
    tx: &mut Tx,
    relay: &str,
    ids: &[i64],
    at: DateTime<Utc>,
) -> Result<u64, DbError> {
    let sql = format!(
        "UPDATE outbox SET sent_at = $1 WHERE claimed_by = $2 AND sent_at IS NULL AND id IN ({})",
        id_placeholders(3, ids.len())
    );
    let marked = on_tx!(tx, conn => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at).bind(relay);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await.map(|r| r.rows_affected())
    })?;
    Ok(marked)
}

/// Gives a batch that failed to publish back at once, so the next pass (on any replica) retries
/// it rather than waiting out the lease.
async fn release(tx: &mut Tx, relay: &str, ids: &[i64]) -> Result<u64, DbError> {
    let sql = format!(
        "UPDATE outbox SET claimed_by = NULL, claimed_until = NULL \
         WHERE claimed_by = $1 AND sent_at IS NULL AND id IN ({})",
        id_placeholders(2, ids.len())
    );
    let released = on_tx!(tx, conn => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(relay);
        for id in ids {
            query = query.bind(*id);
        }
        query.execute(&mut *conn).await.map(|r| r.rows_affected())
    })?;
    Ok(released)
}

#[cfg(test)]
#[path = "outbox_tests.rs"]
mod tests;
