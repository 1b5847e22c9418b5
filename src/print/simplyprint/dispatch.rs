//! Handing queued jobs to SimplyPrint: a background sender per process.
//!
//! Invariants:
//! - A job is sent while it is QUEUED and has no SimplyPrint id. The state lives in the job's row
//!   (`dispatch_*`), so a restart, a crash or an outage loses nothing: what was not acknowledged is
//!   sent again.
//! - A failed send is tried again after 1 s, 2 s, 4 s … (jittered, at most 10 minutes), forever:
//!   the job waits, it is never dropped. The last error is on the job for operators.
//! - A send whose answer was lost is not repeated blindly: before sending a job again, the sender
//!   looks for a queue item carrying the job's tag and adopts it if SimplyPrint has one. An
//!   attempt counts from its claim, so one whose process was killed before it could record
//!   anything still makes the next one look first.
//! - Replicas share the work by lease (`dispatch_lease_until`), as the outbox relay does, and
//!   order jobs go before stock jobs.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::client::{SimplyPrint, SimplyPrintError};
use super::{DispatchNotifier, tag};
use crate::infra::db::{Db, DbError};
use crate::infra::workers::Workers;
use crate::on_pool;

/// Jobs claimed per pass.
const BATCH: i64 = 10;
/// How long a claim holds: longer than one send can take.
const LEASE: TimeDelta = TimeDelta::seconds(60);
/// Without a wake-up, the sender still looks this often (for jobs whose backoff ran out).
const IDLE: Duration = Duration::from_secs(2);
const FIRST_BACKOFF_SECS: i64 = 1;
const MAX_BACKOFF_SECS: i64 = 600;

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    file_id: String,
    dispatch_attempts: i64,
}

/// Runs the sender until shutdown.
pub fn spawn(workers: &Workers, db: Db, client: Arc<SimplyPrint>, notifier: DispatchNotifier) {
    workers.sender(
        "simplyprint-dispatch",
        notifier,
        IDLE,
        BATCH as usize,
        move || {
            let (db, client) = (db.clone(), client.clone());
            async move { pass(&db, &client).await }
        },
    );
}

/// One pass: claims what is due and sends it. Returns how many jobs it handled.
pub async fn pass(db: &Db, client: &SimplyPrint) -> Result<usize, DbError> {
    let now = Utc::now();
    let claimed = claim(db, now).await?;
    for job in &claimed {
        send(db, client, job).await?;
    }
    Ok(claimed.len())
}

async fn claim(db: &Db, now: DateTime<Utc>) -> Result<Vec<Claimed>, DbError> {
    // The lease condition is repeated outside the subquery: PostgreSQL re-checks it on a row a
    // concurrent claim just took, so two replicas never both take one job.
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(
            "UPDATE print_jobs SET dispatch_lease_until = $1, \
             dispatch_attempts = dispatch_attempts + 1 WHERE id IN ( \
               SELECT id FROM print_jobs WHERE status = 'QUEUED' AND simplyprint_job_id IS NULL \
               AND (dispatch_after IS NULL OR dispatch_after <= $2) \
               AND (dispatch_lease_until IS NULL OR dispatch_lease_until < $2) \
               ORDER BY CASE WHEN purpose = 'ORDER' THEN 0 ELSE 1 END, created_at, id LIMIT $3) \
             AND (dispatch_lease_until IS NULL OR dispatch_lease_until < $2) \
             RETURNING id, file_id, dispatch_attempts",
        )
        .bind(now + LEASE)
        .bind(now)
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

async fn send(db: &Db, client: &SimplyPrint, job: &Claimed) -> Result<(), DbError> {
    let tag = tag(job.id);
    // `dispatch_attempts` counts this attempt already: more than one means an earlier one may
    // have reached SimplyPrint.
    let adopted = if job.dispatch_attempts > 1 {
        client.find_queue_item(&tag).await
    } else {
        Ok(None)
    };
    let sent = match adopted {
        Ok(Some(id)) => Ok(id),
        Ok(None) => client.add_queue_item(&job.file_id, &tag).await,
        Err(e) => Err(e),
    };
    match sent {
        Ok(simplyprint_id) => {
            if !mark_sent(db, job.id, &simplyprint_id).await? {
                // Cancelled (or sent by another replica) meanwhile: take the item back out.
                if let Err(e) = client.remove_queue_item(&simplyprint_id).await {
                    tracing::warn!(job = %job.id, error = %e, "could not remove a queue item of a cancelled job");
                }
            }
            Ok(())
        }
        Err(error) => {
            let attempts = job.dispatch_attempts;
            let wait = backoff(attempts);
            tracing::warn!(job = %job.id, attempts, retry_in_secs = wait.num_seconds(), %error, "sending a print job to SimplyPrint failed");
            mark_failed(db, job.id, Utc::now() + wait, &error).await
        }
    }
}

/// 1 s, 2 s, 4 s … up to 10 minutes, with up to 20 % jitter so that replicas do not retry in step.
pub fn backoff(attempts: i64) -> TimeDelta {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let secs = FIRST_BACKOFF_SECS
        .saturating_mul(1_i64 << exponent)
        .min(MAX_BACKOFF_SECS);
    let jitter = (secs as f64 * rand::random_range(0.0..0.2)) as i64;
    TimeDelta::seconds(secs + jitter)
}

/// Records SimplyPrint's id; `false` when the job is no longer waiting to be sent.
async fn mark_sent(db: &Db, id: Uuid, simplyprint_id: &str) -> Result<bool, DbError> {
    let updated = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET simplyprint_job_id = $2, dispatch_lease_until = NULL, \
             dispatch_error = NULL WHERE id = $1 AND status = 'QUEUED' AND simplyprint_job_id IS NULL",
        )
        .bind(id)
        .bind(simplyprint_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(updated == 1)
}

async fn mark_failed(
    db: &Db,
    id: Uuid,
    next: DateTime<Utc>,
    error: &SimplyPrintError,
) -> Result<(), DbError> {
    let message: String = error.to_string().chars().take(500).collect();
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET dispatch_after = $2, dispatch_error = $3, \
             dispatch_lease_until = NULL WHERE id = $1",
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

#[cfg(test)]
mod tests {
    use super::backoff;

    #[test]
    fn backoff_doubles_from_a_second_to_ten_minutes() {
        for (attempts, base) in [(1, 1), (2, 2), (3, 4), (10, 512), (11, 600), (500, 600)] {
            let wait = backoff(attempts).num_seconds();
            assert!(
                (base..=base + base / 5).contains(&wait),
                "{attempts}: {wait}"
            );
        }
    }
}
