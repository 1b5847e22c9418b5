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
//!   order jobs go before stock jobs. A claim's jobs are sent one after another, so each send
//!   first renews its job's lease, and does not start once the claim no longer holds (its lease
//!   ran out while the jobs before it were sent, and another replica may have claimed the job):
//!   two sends of one job at once would both find no item and both add one.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::client::{SimplyPrint, SimplyPrintError};
use super::{DispatchNotifier, tag};
use crate::infra::db::{Db, DbError};
use crate::infra::workers::{Workers, backoff, each_claimed};
use crate::on_pool;
use crate::order::orders::state::Status;
use crate::print::jobs::PrintJobStatus;
use crate::print::jobs::repository::{self, Removal};

const WORKER: &str = "simplyprint-dispatch";
/// Jobs claimed per pass.
const BATCH: i64 = 10;
/// How long a claim holds: longer than one send can take.
const LEASE: TimeDelta = TimeDelta::seconds(60);
/// Without a wake-up, the sender still looks this often (for jobs whose backoff ran out).
const IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, sqlx::FromRow)]
pub(super) struct Claimed {
    id: Uuid,
    file_id: String,
    dispatch_attempts: i64,
    /// The job's attempts (1, then one more per retry).
    attempts: i64,
}

/// Runs the sender until shutdown.
pub fn spawn(workers: &Workers, db: Db, client: Arc<SimplyPrint>, notifier: DispatchNotifier) {
    workers.sender(WORKER, notifier, IDLE, BATCH as usize, move || {
        let (db, client) = (db.clone(), client.clone());
        async move { pass(&db, &client).await }
    });
}

/// One pass: claims what is due and sends it, then takes out of the farm's queue the items of
/// jobs cancelled there. Returns how many jobs it handled.
pub async fn pass(db: &Db, client: &SimplyPrint) -> Result<usize, DbError> {
    let now = Utc::now();
    let claimed = claim(db, now).await?;
    let sent = each_claimed(WORKER, &claimed, |job| send(db, client, job)).await;
    let removals = repository::claim_removals(db, now, LEASE, BATCH).await?;
    let removed = each_claimed(WORKER, &removals, |removal| take_out(db, client, removal)).await;
    Ok(sent + removed)
}

/// Takes a cancelled job's item out of the farm's queue, on the `removal.attempts`th try. An item
/// never recorded is looked for by the job's tag, unless the job is queued again (the tag is then
/// its new attempt's). Done when SimplyPrint took it out, refused to (it is not queued any more)
/// or has no item of the job; else tried again after a backoff.
pub async fn take_out(db: &Db, client: &SimplyPrint, removal: &Removal) -> Result<(), DbError> {
    let (id, recorded) = (removal.id, removal.item.as_str());
    let found = if !recorded.is_empty() && repository::waits_on(db, id, recorded).await? {
        // The job's new attempt adopted the item meanwhile: it is the one to print.
        Ok(None)
    } else if !recorded.is_empty() {
        Ok(Some(recorded.to_owned()))
    } else if PrintJobStatus::parse(&removal.status).is_some_and(PrintJobStatus::is_active) {
        Ok(None)
    } else {
        client.find_queue_item(&tag(id)).await
    };
    // Found by the tag: the job may have been retried and sent since the removal was claimed,
    // adopting the very item.
    let found = match found {
        Ok(Some(item)) if recorded.is_empty() && repository::waits_on(db, id, &item).await? => {
            Ok(None)
        }
        other => other,
    };
    let outcome = match found {
        Ok(Some(item)) => client.remove_queue_item(&item).await,
        Ok(None) => Ok(()),
        Err(error) => Err(error),
    };
    match outcome {
        Ok(()) => repository::removal_done(db, id, recorded).await,
        Err(SimplyPrintError::Rejected(message)) => {
            tracing::info!(job = %id, recorded, message, "SimplyPrint did not take the item out: it is not queued any more");
            repository::removal_done(db, id, recorded).await
        }
        Err(error) => {
            let wait = backoff(removal.attempts);
            tracing::warn!(job = %id, recorded, attempts = removal.attempts, retry_in_secs = wait.num_seconds(), %error, "could not take a cancelled job's item out of SimplyPrint's queue");
            repository::removal_failed(db, id, recorded, Utc::now() + wait).await
        }
    }
}

pub(super) async fn claim(db: &Db, now: DateTime<Utc>) -> Result<Vec<Claimed>, DbError> {
    // The whole condition is repeated outside the subquery: PostgreSQL re-checks it
    // on a row another replica changed meanwhile, so two replicas never both take one job, and none
    // takes one another replica sent since its subquery read it.
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(
            "UPDATE print_jobs SET dispatch_lease_until = $1, \
             dispatch_attempts = dispatch_attempts + 1 WHERE id IN ( \
               SELECT id FROM print_jobs WHERE status = 'QUEUED' AND simplyprint_job_id IS NULL \
               AND (dispatch_after IS NULL OR dispatch_after <= $2) \
               AND (dispatch_lease_until IS NULL OR dispatch_lease_until < $2) \
               ORDER BY CASE WHEN purpose = 'ORDER' THEN 0 ELSE 1 END, created_at, id LIMIT $3) \
             AND status = 'QUEUED' AND simplyprint_job_id IS NULL \
             AND (dispatch_after IS NULL OR dispatch_after <= $2) \
             AND (dispatch_lease_until IS NULL OR dispatch_lease_until < $2) \
             RETURNING id, file_id, dispatch_attempts, attempts",
        )
        .bind(now + LEASE)
        .bind(now)
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

pub(super) async fn send(db: &Db, client: &SimplyPrint, job: &Claimed) -> Result<(), DbError> {
    if !renew(db, job, Utc::now()).await? {
        tracing::info!(job = %job.id, "a claimed print job's lease ran out before its turn; left to the next claim");
        return Ok(());
    }
    let tag = tag(job.id);
    // `dispatch_attempts` counts this attempt already: more than one means an earlier one may
    // have reached SimplyPrint. So may an earlier attempt of the job (a retry), whose item can
    // still wait in the queue when its removal has not run yet: it is the one to print.
    let adopted = if job.dispatch_attempts > 1 || job.attempts > 1 {
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
        Ok(simplyprint_id) => match mark_sent(db, job.id, &simplyprint_id).await {
            Ok(true) => Ok(()),
            Ok(false) => {
                // Cancelled meanwhile, or sent by another replica (this claim's lease ran out
                // while SimplyPrint answered): the item goes back out, unless it is the very item
                // the job now waits on (the other replica adopted it by its tag).
                if repository::waits_on(db, job.id, &simplyprint_id).await? {
                    tracing::info!(job = %job.id, simplyprint_id, "another replica recorded the same queue item");
                } else if let Err(e) = client.remove_queue_item(&simplyprint_id).await {
                    tracing::warn!(job = %job.id, error = %e, "could not remove a queue item of a cancelled job");
                }
                Ok(())
            }
            Err(error) => {
                // SimplyPrint has the item and we could not say so: the next attempt looks for it
                // by its tag and adopts it, after a backoff rather than the whole lease.
                let wait = backoff(job.dispatch_attempts);
                tracing::warn!(job = %job.id, simplyprint_id, retry_in_secs = wait.num_seconds(), %error, "a print job reached SimplyPrint but could not be recorded");
                mark_failed(db, job.id, Utc::now() + wait, &error).await
            }
        },
        Err(error) => {
            let attempts = job.dispatch_attempts;
            let wait = backoff(attempts);
            tracing::warn!(job = %job.id, attempts, retry_in_secs = wait.num_seconds(), %error, "sending a print job to SimplyPrint failed");
            mark_failed(db, job.id, Utc::now() + wait, &error).await
        }
    }
}

/// Renews the claim on `job` for one send from `now`: `false` when the claim no longer holds. A
/// claim by another replica counts an attempt, so `dispatch_attempts` still being this claim's
/// says nobody claimed the job since; and a lease that ran out is not renewed, as another
/// replica's claim may be under way.
async fn renew(db: &Db, job: &Claimed, now: DateTime<Utc>) -> Result<bool, DbError> {
    let renewed = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET dispatch_lease_until = $2 WHERE id = $1 \
             AND dispatch_attempts = $3 AND dispatch_lease_until >= $4 \
             AND status = 'QUEUED' AND simplyprint_job_id IS NULL",
        )
        .bind(job.id)
        .bind(now + LEASE)
        .bind(job.dispatch_attempts)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(renewed == 1)
}

/// Records SimplyPrint's id; `false` when the job is no longer waiting to be sent. An item the
/// job adopted from an earlier attempt is no longer to be taken out of the queue.
async fn mark_sent(db: &Db, id: Uuid, simplyprint_id: &str) -> Result<bool, DbError> {
    let updated = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET simplyprint_job_id = $2, dispatch_lease_until = NULL, \
             dispatch_error = NULL, \
             farm_removal_after = CASE WHEN farm_removal = $2 THEN NULL ELSE farm_removal_after END, \
             farm_removal_attempts = CASE WHEN farm_removal = $2 THEN 0 ELSE farm_removal_attempts END, \
             farm_removal = CASE WHEN farm_removal = $2 THEN NULL ELSE farm_removal END \
             WHERE id = $1 AND status = 'QUEUED' AND simplyprint_job_id IS NULL",
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
    error: &impl std::fmt::Display,
) -> Result<(), DbError> {
    let message: String = error.to_string().chars().take(500).collect();
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET dispatch_after = $2, dispatch_error = $3, \
             dispatch_lease_until = NULL WHERE id = $1 AND status = 'QUEUED' \
             AND simplyprint_job_id IS NULL",
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
