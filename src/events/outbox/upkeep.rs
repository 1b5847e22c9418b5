//! Upkeep of the outbox table: the backlog behind the relay's gauges, and deletion of sent rows
//! once they are no longer worth inspecting.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::infra::db::{Db, DbError};
use crate::on_pool;

/// What is waiting in the outbox: the numbers behind `outbox_pending` and `outbox_lag_seconds`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backlog {
    pub pending: i64,
    /// Age of the oldest unsent row; zero when nothing waits.
    pub lag: Duration,
}

impl Backlog {
    /// Sets the gauges. Every replica reports the same shared table, so the values agree.
    pub fn record(&self) {
        metrics::gauge!("outbox_pending").set(self.pending as f64);
        metrics::gauge!("outbox_lag_seconds").set(self.lag.as_secs_f64());
    }
}

pub async fn backlog(db: &Db) -> Result<Backlog, DbError> {
    let (pending, oldest) = on_pool!(db, pool => {
        let pending = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL",
        )
        .fetch_one(pool)
        .await?;
        // The lowest unsent id is the oldest row; created_at of that row is the lag.
        let oldest = sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT created_at FROM outbox WHERE sent_at IS NULL ORDER BY id LIMIT 1",
        )
        .fetch_optional(pool)
        .await?;
        Ok::<_, sqlx::Error>((pending, oldest))
    })?;
    let lag = oldest
        .and_then(|at| (Utc::now() - at).to_std().ok())
        .unwrap_or_default();
    Ok(Backlog { pending, lag })
}

/// Deletes up to `batch` rows sent before `cutoff`; returns how many. Call again while it returns
/// `batch`.
pub async fn delete_sent_before(
    db: &Db,
    cutoff: DateTime<Utc>,
    batch: usize,
) -> Result<u64, DbError> {
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let deleted = on_pool!(db, pool => {
        sqlx::query(
            "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox \
             WHERE sent_at IS NOT NULL AND sent_at < $1 ORDER BY id LIMIT $2)",
        )
        .bind(cutoff)
        .bind(batch)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(deleted)
}
