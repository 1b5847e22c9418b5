//! Stock batches (`stock_batches`, `stock_jobs`): what the scheduler asked the print service to
//! print for stock, and their completion.
//!
//! Invariants:
//! - The order service chooses every stock job's id when it schedules it, and the batch, its jobs
//!   and one `inventory.stock-replenishment-scheduled` per job commit together (the outbox): the
//!   print service creates each job once, however often it hears of it.
//! - A stock job counts as completed once (`stock_jobs.completed_at`), whatever repeats the news;
//!   the batch's last job adds the batch's units to stock in the same transaction and publishes
//!   `inventory.stock-batch-completed`.
//! - A cancelled stock job cancels its open batch: the units stop counting as printing for stock
//!   and the next pass plans them again. The batch's other open jobs are then cancelled too
//!   ([`take_back_given_up`]): a batch counts only whole, so what they printed would be counted
//!   nowhere while the next batch prints the same units again. Should every job of a cancelled
//!   batch complete after all (queued again by hand), its units are counted then: they are on the
//!   shelf.

use chrono::Utc;
use uuid::Uuid;

use super::StockJobPlan;
use super::repository;
use crate::clients::http::ClientError;
use crate::events::bridge::ORDER_SERVICE;
use crate::events::bus::HandlerError;
use crate::events::catalog::{
    Event, EventPayload, PrintJobPurpose, StockBatchCompleted, StockReplenishmentScheduled,
};
use crate::events::idempotency::handle_once;
use crate::events::outbox;
use crate::infra::db::{Db, DbError, Tx};
use crate::order::OrderCore;
use crate::order::mappings::PrintFile;
use crate::print::plan::MAX_PRINTS_PER_LINE;
use crate::{on_pool, on_tx};

/// The consumer name of the dedupe records.
const CONSUMER: &str = "order.inventory";

/// A product whose stock, with what is printing for it, is below its target.
#[derive(Debug, Clone)]
pub struct Shortfall {
    pub tenant_id: Uuid,
    pub mapping_id: Uuid,
    pub sku: String,
    pub print_files: Vec<PrintFile>,
    pub batch_size: i64,
    /// Units missing: target − on hand − printing for stock.
    pub missing: i64,
}

#[derive(sqlx::FromRow)]
struct ShortfallRow {
    tenant_id: Uuid,
    mapping_id: Uuid,
    sku: String,
    print_files: String,
    batch_size: i64,
    missing: i64,
}

/// Every product of every tenant that needs stock printed, in `tx`.
pub async fn shortfalls(tx: &mut Tx) -> Result<Vec<Shortfall>, DbError> {
    let rows = on_tx!(tx, conn => {
        sqlx::query_as::<_, ShortfallRow>(
            "SELECT l.tenant_id, l.mapping_id, m.sku, m.print_files, l.batch_size, \
             l.stock_target - l.stock_on_hand - COALESCE((SELECT CAST(SUM(b.units) AS BIGINT) \
                FROM stock_batches b WHERE b.mapping_id = l.mapping_id AND b.status = 'OPEN'), 0) \
                AS missing \
             FROM inventory_levels l JOIN product_mappings m ON m.id = l.mapping_id \
             WHERE l.replenish = TRUE AND m.is_active = TRUE AND l.stock_target > l.stock_on_hand \
             ORDER BY l.tenant_id, m.sku",
        )
        .fetch_all(&mut *conn)
        .await
    })?;
    Ok(rows
        .into_iter()
        .filter(|r| r.missing > 0)
        .filter_map(|r| {
            let print_files: Vec<PrintFile> = serde_json::from_str(&r.print_files)
                .inspect_err(|e| tracing::error!(mapping = %r.mapping_id, error = %e, "unreadable print files; no stock scheduled"))
                .ok()?;
            Some(Shortfall {
                tenant_id: r.tenant_id,
                mapping_id: r.mapping_id,
                sku: r.sku,
                print_files,
                batch_size: r.batch_size.max(1),
                missing: r.missing,
            })
        })
        .collect())
}

/// One stock job of a batch about to be scheduled.
struct PlannedJob<'a> {
    id: Uuid,
    file: &'a PrintFile,
}

/// Most stock jobs one pass schedules for one mapping (a batch is never split: the first batch
/// always goes, whatever its size). A shortfall of thousands (a target of 100 000 in batches of
/// one) is scheduled over several passes: in one, its rows and events would hold the database's
/// write lock for minutes, and its jobs would fill the farm's queue ahead of every order.
pub const MAX_JOBS_PER_PASS: usize = 100;

/// Schedules batches that cover `shortfall` in `tx`, up to [`MAX_JOBS_PER_PASS`] jobs (the next
/// passes schedule the rest: the shortfall counts what is printing): each batch, its jobs, and
/// their `inventory.stock-replenishment-scheduled` events. Returns the ids of the jobs it
/// scheduled.
pub async fn schedule(tx: &mut Tx, shortfall: &Shortfall) -> Result<Vec<Uuid>, DbError> {
    let units = u32::try_from(shortfall.batch_size).unwrap_or(u32::MAX);
    let prints: u64 = shortfall
        .print_files
        .iter()
        .map(|f| f.prints_for(units))
        .sum();
    if prints == 0 || prints > MAX_PRINTS_PER_LINE {
        tracing::error!(mapping = %shortfall.mapping_id, prints, "a stock batch of no or too many prints; none scheduled");
        return Ok(Vec::new());
    }
    let mut scheduled = Vec::new();
    let mut missing = shortfall.missing;
    while missing > 0 && scheduled.len() < MAX_JOBS_PER_PASS {
        let batch_id = Uuid::now_v7();
        let jobs: Vec<PlannedJob> = shortfall
            .print_files
            .iter()
            .flat_map(|file| (0..file.prints_for(units)).map(move |_| file))
            .map(|file| PlannedJob {
                id: Uuid::now_v7(),
                file,
            })
            .collect();
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO stock_batches (id, tenant_id, mapping_id, sku, units, total_jobs, \
                 status, created_at) VALUES ($1, $2, $3, $4, $5, $6, 'OPEN', $7)",
            )
            .bind(batch_id)
            .bind(shortfall.tenant_id)
            .bind(shortfall.mapping_id)
            .bind(&shortfall.sku)
            .bind(shortfall.batch_size)
            .bind(jobs.len() as i64)
            .bind(Utc::now())
            .execute(&mut *conn)
            .await
            .map(drop)
        })?;
        for job in &jobs {
            on_tx!(tx, conn => {
                sqlx::query(
                    "INSERT INTO stock_jobs (print_job_id, tenant_id, batch_id, file_id, file_name, \
                     print_profile) VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(job.id)
                .bind(shortfall.tenant_id)
                .bind(batch_id)
                .bind(&job.file.file_id)
                .bind(&job.file.file_name)
                .bind(job.file.print_profile.as_deref())
                .execute(&mut *conn)
                .await
                .map(drop)
            })?;
            let payload = EventPayload::StockReplenishmentScheduled(StockReplenishmentScheduled {
                print_job_id: job.id.to_string(),
                file_id: Some(job.file.file_id.clone()),
                purpose: PrintJobPurpose::Stock,
                stock_batch_id: batch_id.to_string(),
            });
            let event = Event::new(ORDER_SERVICE, shortfall.tenant_id.to_string(), payload);
            outbox::enqueue(tx, &event).await?;
        }
        tracing::info!(sku = shortfall.sku, batch = %batch_id, units = shortfall.batch_size, jobs = jobs.len(), "stock batch scheduled");
        scheduled.extend(jobs.iter().map(|j| j.id));
        missing -= shortfall.batch_size;
    }
    Ok(scheduled)
}

/// Most jobs of given-up batches one [`take_back_given_up`] call cancels.
const TAKE_BACK_BATCH: i64 = 100;

/// Cancels, at the print service, the jobs still open of stock batches given up (a job of theirs
/// was cancelled), so the farm stops printing units no batch will count. Runs after a scheduler
/// pass, outside its transaction; what a call leaves (the print service unavailable, a job not
/// created there yet) is tried again after the next pass. Returns how many jobs it cancelled.
pub async fn take_back_given_up(core: &OrderCore) -> Result<usize, DbError> {
    let open = on_pool!(&core.db, pool => {
        sqlx::query_as::<_, (Uuid, Uuid)>(
            "SELECT j.tenant_id, j.print_job_id FROM stock_jobs j \
             JOIN stock_batches b ON b.id = j.batch_id \
             WHERE b.status = 'CANCELLED' AND j.completed_at IS NULL AND j.cancelled_at IS NULL \
             ORDER BY j.print_job_id LIMIT $1",
        )
        .bind(TAKE_BACK_BATCH)
        .fetch_all(pool)
        .await
    })?;
    let mut cancelled = 0;
    for (tenant_id, job_id) in open {
        match core.print.cancel_print_job(tenant_id, job_id).await {
            Ok(_) => cancelled += 1,
            // Completed meanwhile: its completion still counts when its news comes.
            Err(ClientError::Rejected { status: 409, .. }) => {}
            // Not created at the print service yet (its event is on its way): next time.
            Err(ClientError::Rejected { status: 404, .. }) => continue,
            Err(e) => {
                tracing::warn!(job = %job_id, error = %e, "a job of a given-up stock batch could not be cancelled; tried again after the next pass");
                continue;
            }
        }
        let mut tx = core.db.begin().await?;
        mark_cancelled(&mut tx, tenant_id, job_id).await?;
        tx.commit().await?;
    }
    if cancelled > 0 {
        tracing::info!(
            jobs = cancelled,
            "the open jobs of given-up stock batches were cancelled"
        );
    }
    Ok(cancelled)
}

/// Marks stock job `job_id` cancelled in `tx` unless it completed or was marked before; returns
/// its batch when this marked it.
async fn mark_cancelled(
    tx: &mut Tx,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Uuid>, DbError> {
    on_tx!(tx, conn => {
        sqlx::query_scalar::<_, Uuid>(
            "UPDATE stock_jobs SET cancelled_at = $3 WHERE tenant_id = $1 AND print_job_id = $2 \
             AND completed_at IS NULL AND cancelled_at IS NULL RETURNING batch_id",
        )
        .bind(tenant_id)
        .bind(job_id)
        .bind(Utc::now())
        .fetch_optional(&mut *conn)
        .await
    })
    .map_err(Into::into)
}

/// The stock job `print_job_id` of the tenant, as the print service creates it.
pub async fn stock_job(
    db: &Db,
    tenant_id: Uuid,
    print_job_id: Uuid,
) -> Result<Option<StockJobPlan>, DbError> {
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, (Uuid, Uuid, Uuid, String, String, Option<String>)>(
            "SELECT tenant_id, print_job_id, batch_id, file_id, file_name, print_profile \
             FROM stock_jobs WHERE tenant_id = $1 AND print_job_id = $2",
        )
        .bind(tenant_id)
        .bind(print_job_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(
        |(tenant_id, print_job_id, stock_batch_id, file_id, file_name, print_profile)| {
            StockJobPlan {
                tenant_id,
                print_job_id,
                stock_batch_id,
                file_id,
                file_name,
                print_profile,
            }
        },
    ))
}

/// Whether a `print-job.*` event is about a stock job: those name no order (SPEC §6.5b).
pub fn is_stock_job_event(event: &Event) -> bool {
    match &event.payload {
        EventPayload::PrintJobCompleted(e) => e.order_id.is_empty(),
        EventPayload::PrintJobFailed(e) => e.order_id.is_empty(),
        EventPayload::PrintJobStatusChanged(e) => e.order_id.is_empty(),
        EventPayload::PrintJobCancelled(e) => e.order_id.is_empty(),
        _ => false,
    }
}

/// A stock job's `print-job.completed` (counted once; the batch's last adds to stock) or
/// `print-job.cancelled` (its batch stops counting as printing for stock).
pub async fn on_stock_job_event(core: &OrderCore, event: &Event) -> Result<(), HandlerError> {
    match &event.payload {
        EventPayload::PrintJobCompleted(_) => {
            count_completion(&core.db, event).await?;
            core.relay.notify();
        }
        EventPayload::PrintJobCancelled(_) => count_cancellation(&core.db, event).await?,
        _ => {}
    }
    Ok(())
}

/// The database side of a stock job's cancellation: its batch, while open, is cancelled, so the
/// next scheduler pass plans its units again. Should the job be queued again and complete after
/// all, the batch's units are counted then: they are on the shelf, however late.
pub async fn count_cancellation(db: &Db, event: &Event) -> Result<(), HandlerError> {
    let EventPayload::PrintJobCancelled(cancelled) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, job_id)) = event.tenant_and(&cancelled.print_job_id) else {
        return Ok(());
    };
    handle_once(db, event, CONSUMER, |tx| {
        Box::pin(async move { cancel_job(tx, tenant_id, job_id).await.map(drop) })
    })
    .await?;
    Ok(())
}

/// Marks stock job `job_id` cancelled in `tx` and cancels its batch while it is open. Returns the
/// batch's id when this cancelled it.
pub async fn cancel_job(
    tx: &mut Tx,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Uuid>, DbError> {
    let Some(batch_id) = mark_cancelled(tx, tenant_id, job_id).await? else {
        return Ok(None);
    };
    let cancelled = on_tx!(tx, conn => {
        sqlx::query("UPDATE stock_batches SET status = 'CANCELLED' WHERE id = $1 AND status = 'OPEN'")
            .bind(batch_id)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    if cancelled != 1 {
        return Ok(None);
    }
    tracing::warn!(batch = %batch_id, job = %job_id, "a stock job was cancelled: its batch is given up and planned again");
    Ok(Some(batch_id))
}

/// The database side of [`on_stock_job_completed`]: the same event twice (`handle_once`), or the
/// same job's completion in two events (`completed_at`), counts once.
pub async fn count_completion(db: &Db, event: &Event) -> Result<(), HandlerError> {
    let EventPayload::PrintJobCompleted(completed) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, job_id)) = event.tenant_and(&completed.print_job_id) else {
        return Ok(());
    };
    handle_once(db, event, CONSUMER, |tx| {
        Box::pin(async move { complete_job(tx, tenant_id, job_id).await.map(drop) })
    })
    .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct BatchProgress {
    mapping_id: Uuid,
    units: i64,
    completed_jobs: i64,
    total_jobs: i64,
}

/// Counts stock job `job_id` as completed in `tx`, once. Returns the batch's id when this completed
/// the batch (and its units went into stock).
pub async fn complete_job(
    tx: &mut Tx,
    tenant_id: Uuid,
    job_id: Uuid,
) -> Result<Option<Uuid>, DbError> {
    let now = Utc::now();
    let batch_id = on_tx!(tx, conn => {
        sqlx::query_scalar::<_, Uuid>(
            "UPDATE stock_jobs SET completed_at = $3 \
             WHERE tenant_id = $1 AND print_job_id = $2 AND completed_at IS NULL RETURNING batch_id",
        )
        .bind(tenant_id)
        .bind(job_id)
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
    })?;
    let Some(batch_id) = batch_id else {
        tracing::info!(job = %job_id, "a stock job completed again, or is not one of ours; ignored");
        return Ok(None);
    };
    let progress = on_tx!(tx, conn => {
        sqlx::query_as::<_, BatchProgress>(
            "UPDATE stock_batches SET completed_jobs = completed_jobs + 1 WHERE id = $1 \
             RETURNING mapping_id, units, completed_jobs, total_jobs",
        )
        .bind(batch_id)
        .fetch_one(&mut *conn)
        .await
    })?;
    if progress.completed_jobs < progress.total_jobs {
        return Ok(None);
    }
    let closed = on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE stock_batches SET status = 'COMPLETED', completed_at = $2 \
             WHERE id = $1 AND status IN ('OPEN', 'CANCELLED')",
        )
        .bind(batch_id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    if closed != 1 {
        return Ok(None);
    }
    repository::add(tx, progress.mapping_id, progress.units).await?;
    let payload = EventPayload::StockBatchCompleted(StockBatchCompleted {
        stock_batch_id: batch_id.to_string(),
        product_mapping_id: progress.mapping_id.to_string(),
        total_jobs: u32::try_from(progress.total_jobs).unwrap_or(u32::MAX),
    });
    outbox::enqueue(
        tx,
        &Event::new(ORDER_SERVICE, tenant_id.to_string(), payload),
    )
    .await?;
    tracing::info!(batch = %batch_id, units = progress.units, "stock batch completed; stock added");
    Ok(Some(batch_id))
}
