//! The replenishment scheduler (SPEC §6.5b): every `inventory.interval_secs` it prints stock for
//! the products below target, in batches, and takes given-up batches' open jobs off the farm.
//!
//! Every replica runs the timer, but one pass runs per interval across all of them: a pass first
//! takes the one `inventory_scheduler` row with a conditional UPDATE (due only when the last pass is
//! an interval old) and holds it until it commits — PostgreSQL's row lock, SQLite's one writer —
//! so a second replica either finds the pass not due or waits and then sees the batches the first
//! one scheduled. A replica that dies mid-pass rolls back and releases the row with its connection.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::batches;
use crate::infra::db::{Db, DbError, Tx};
use crate::infra::workers::Workers;
use crate::on_tx;
use crate::order::OrderCore;

/// `inventory.interval_secs` when unset.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the scheduler every `inventory.interval_secs` until shutdown.
pub fn spawn(workers: &Workers, core: OrderCore, config: &crate::config::Config) {
    let interval = config
        .inventory
        .interval_secs
        .map_or(DEFAULT_INTERVAL, Duration::from_secs);
    workers.every("inventory-replenishment", interval, move || {
        let core = core.clone();
        async move {
            let scheduled = pass(&core.db, interval).await.map_err(|e| e.to_string())?;
            if scheduled.is_some_and(|jobs| jobs > 0) {
                core.relay.notify();
            }
            if scheduled.is_some() {
                // The replica whose pass it was; the jobs' news reaches the batches by the bus.
                batches::take_back_given_up(&core)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    });
}

/// One pass, if one is due across the replicas. Returns how many stock jobs it scheduled (`None`
/// when another replica's pass was recent enough).
pub async fn pass(db: &Db, interval: Duration) -> Result<Option<usize>, DbError> {
    let now = Utc::now();
    // A tenth of slack: replicas' timers drift, and a pass a few ms early must not wait a whole
    // interval more.
    let interval = TimeDelta::from_std(interval.mul_f64(0.9)).unwrap_or(TimeDelta::MAX);
    let due_before = now.checked_sub_signed(interval).unwrap_or(now);
    let mut tx = db.begin().await?;
    if !claim(&mut tx, now, due_before).await? {
        tx.rollback().await?;
        return Ok(None);
    }
    let mut scheduled = 0;
    for shortfall in batches::shortfalls(&mut tx).await? {
        scheduled += batches::schedule(&mut tx, &shortfall).await?.len();
    }
    tx.commit().await?;
    Ok(Some(scheduled))
}

/// Takes the pass in `tx` when the last one ran at or before `due_before`.
async fn claim(
    tx: &mut Tx,
    now: DateTime<Utc>,
    due_before: DateTime<Utc>,
) -> Result<bool, DbError> {
    let claimed = on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE inventory_scheduler SET last_run_at = $1, runs = runs + 1 \
             WHERE name = 'replenishment' AND (last_run_at IS NULL OR last_run_at <= $2)",
        )
        .bind(now)
        .bind(due_before)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(claimed == 1)
}

/// How many passes ran so far, across every replica (for tests and operators).
pub async fn passes(db: &Db) -> Result<i64, DbError> {
    let runs = crate::on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>(
            "SELECT runs FROM inventory_scheduler WHERE name = 'replenishment'",
        )
        .fetch_one(pool)
        .await
    })?;
    Ok(runs)
}
