//! Reconciliation: SimplyPrint is asked about every job it holds that forma still sees queued or
//! printing, so a change whose webhook never arrived (SimplyPrint down, forma down, a lost
//! delivery) is caught within `simplyprint.reconcile_secs`. Changes go through the same state
//! machine and events as a webhook's.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::client::{SimplyPrint, SimplyPrintError};
use super::status_from_remote;
use crate::infra::db::DbError;
use crate::infra::workers::Workers;
use crate::on_pool;
use crate::print::PrintCore;

/// Jobs asked about per pass, those asked about longest ago first (never asked: first of all).
const BATCH: i64 = 200;

#[derive(sqlx::FromRow)]
struct Held {
    id: Uuid,
    tenant_id: Uuid,
    simplyprint_job_id: String,
}

/// Runs a pass every `every` until shutdown.
pub fn spawn(workers: &Workers, core: PrintCore, client: Arc<SimplyPrint>, every: Duration) {
    workers.spawn("simplyprint-reconcile", move |stop| async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                _ = tick.tick() => {
                    if let Err(e) = pass(&core, &client).await {
                        tracing::warn!(error = %e, "SimplyPrint reconciliation failed");
                    }
                }
            }
        }
    });
}

/// One pass; returns how many jobs changed.
pub async fn pass(core: &PrintCore, client: &SimplyPrint) -> Result<usize, DbError> {
    let held = on_pool!(&core.db, pool => {
        sqlx::query_as::<_, Held>(
            "SELECT id, tenant_id, simplyprint_job_id FROM print_jobs \
             WHERE status IN ('QUEUED', 'PRINTING') AND simplyprint_job_id IS NOT NULL \
             ORDER BY reconciled_at NULLS FIRST, updated_at, id LIMIT $1",
        )
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    let mut changed = 0;
    let mut asked = Vec::with_capacity(held.len());
    for job in held {
        let remote = match client.job(&job.simplyprint_job_id).await {
            Ok(remote) => remote,
            Err(e @ SimplyPrintError::Rejected(_)) => {
                // About this job only: the next pass asks the others first.
                tracing::warn!(job = %job.id, error = %e, "SimplyPrint refused to tell of a job");
                asked.push(job.id);
                continue;
            }
            Err(e) => {
                tracing::warn!(job = %job.id, error = %e, "could not ask SimplyPrint about a job");
                // One failure is likely all of them: the next pass goes on from here.
                break;
            }
        };
        asked.push(job.id);
        let Some(status) = remote.and_then(|r| status_from_remote(&r.status)) else {
            continue;
        };
        // The pass asks about many jobs: this one may have been cancelled, or failed and retried
        // and sent to the farm again as another item, meanwhile. What the old item says is not
        // its news.
        let reason = Some("Reported by SimplyPrint (reconciliation)".to_owned());
        let item = &job.simplyprint_job_id;
        match core
            .change_of_item(job.tenant_id, job.id, item, status, reason)
            .await
        {
            Ok(crate::print::JobChange::Changed(_)) => changed += 1,
            Ok(_) => {}
            Err(e) => {
                tracing::info!(job = %job.id, error = %e, "reconciliation left a job as it is")
            }
        }
    }
    core.db
        .stamp("print_jobs", "reconciled_at", &asked, Utc::now())
        .await?;
    Ok(changed)
}
