//! Re-planning an order Shopify changed, until the print service has done it (SPEC §6.1, §6.4):
//! the old plan's jobs cancelled, the new plan's created.
//!
//! Invariants:
//! - A change that plans a line anew marks its order (`replan_after`) in the change's own
//!   transaction, and the mark goes only once a re-planning begun after it has succeeded. A print
//!   service that cannot be reached, or a process that stops, after the change committed leaves
//!   the order marked; not with the old plan's jobs printing and the new plan's missing, and the
//!   order PROCESSING for ever.
//! - The change re-plans at once; what fails is tried again by every order replica's worker,
//!   after 1 s, 2 s, 4 s … (at most 10 minutes) per order. Re-planning is idempotent (jobs of
//!   older plans cancelled, the current plans' jobs created once). Two re-plannings of one order
//!   can overlap (the change's own and a worker's, or two changes'): one that read the order
//!   before a line was planned anew leaves the newer plan's jobs alone, and, finding the line
//!   planned anew after it made the older plan's jobs, marks the order again, so the next one
//!   cancels them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::retry::RetryError;
use crate::infra::db::{Db, DbError, Tx};
use crate::infra::workers::{Workers, backoff};
use crate::order::OrderCore;
use crate::{on_pool, on_tx};

/// How often a replica looks for orders whose re-planning failed.
const EVERY: Duration = Duration::from_secs(2);
/// Orders re-planned per pass at most.
const BATCH: i64 = 20;

/// Marks `order_id` for re-planning, due now, in the transaction that changed its lines. Returns
/// the mark, for [`now`].
pub async fn mark(tx: &mut Tx, order_id: Uuid) -> Result<DateTime<Utc>, DbError> {
    let due = Utc::now();
    on_tx!(tx, conn => {
        sqlx::query("UPDATE orders SET replan_after = $2, replan_attempts = 0 WHERE id = $1")
            .bind(order_id)
            .bind(due)
            .execute(&mut *conn)
            .await
            .map(drop)
    })?;
    Ok(due)
}

/// Re-plans the order marked `mark` now, after the commit of its change. A failure is logged,
/// left to the worker, and returned.
pub async fn now(
    core: &OrderCore,
    tenant_id: Uuid,
    order_id: Uuid,
    mark: DateTime<Utc>,
) -> Result<(), RetryError> {
    let due = Due {
        id: order_id,
        tenant_id,
        replan_after: mark,
        replan_attempts: 0,
    };
    attempt(core, &due).await?
}

/// Marks `order_id` for another re-planning, due now: a line was planned anew while one ran.
pub async fn again(db: &Db, order_id: Uuid) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    mark(&mut tx, order_id).await?;
    tx.commit().await
}

/// Re-plans every marked order that is due, every [`EVERY`], until shutdown.
pub fn spawn(workers: &Workers, core: OrderCore) {
    workers.every("order-replanning", EVERY, move || {
        let core = core.clone();
        async move {
            pass(&core, Utc::now())
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    });
}

#[derive(Debug, sqlx::FromRow)]
struct Due {
    id: Uuid,
    tenant_id: Uuid,
    replan_after: DateTime<Utc>,
    replan_attempts: i64,
}

/// One pass at `now`: re-plans the marked orders that are due. Returns how many.
pub async fn pass(core: &OrderCore, now: DateTime<Utc>) -> Result<usize, DbError> {
    let due = on_pool!(&core.db, pool => {
        sqlx::query_as::<_, Due>(
            "SELECT id, tenant_id, replan_after, replan_attempts FROM orders \
             WHERE replan_after IS NOT NULL AND replan_after <= $1 \
             ORDER BY replan_after, id LIMIT $2",
        )
        .bind(now)
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    for order in &due {
        // A failed re-planning is logged and recorded by the attempt, and the pass goes on; only
        // a failure to record it ends the pass.
        let _failed = attempt(core, order).await?;
    }
    Ok(due.len())
}

/// Re-plans one order and records the outcome: the re-planning's own result, inside the result of
/// recording it. The records are conditional on the mark: an order changed again meanwhile keeps
/// the newer mark, which a later re-planning answers. A line planned anew during this one marks
/// the order again.
async fn attempt(core: &OrderCore, due: &Due) -> Result<Result<(), RetryError>, DbError> {
    match super::retry::replan(core, due.tenant_id, due.id).await {
        Ok(true) => settle(&core.db, due, None).await.map(Ok),
        Ok(false) => {
            tracing::info!(order = %due.id, "a line was planned anew during a re-planning; it is made again");
            again(&core.db, due.id).await.map(Ok)
        }
        Err(error) => {
            let attempts = due.replan_attempts + 1;
            let wait = backoff(attempts);
            tracing::warn!(order = %due.id, attempts, retry_in_secs = wait.num_seconds(), %error, "re-planning a changed order failed; it is tried again");
            settle(&core.db, due, Some(Utc::now() + wait)).await?;
            Ok(Err(error))
        }
    }
}

/// Clears the mark (`next` is `None`), or moves it to `next` with one more attempt counted.
async fn settle(db: &Db, due: &Due, next: Option<DateTime<Utc>>) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE orders SET replan_after = $3, \
             replan_attempts = CASE WHEN $3 IS NULL THEN 0 ELSE replan_attempts + 1 END \
             WHERE id = $1 AND replan_after = $2",
        )
        .bind(due.id)
        .bind(due.replan_after)
        .bind(next)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}
