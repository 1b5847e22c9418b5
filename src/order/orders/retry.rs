//! Retrying an order (SPEC §6.1, `POST /api/v1/orders/{id}/retry`): unmapped lines are mapped
//! with the tenant's mappings as they are now and planned; failed lines get their failed and
//! cancelled jobs queued again (or, when they never had any, are planned anew). And re-planning:
//! making the print service's jobs match the lines' current plans (after a retry, or after Shopify
//! changed an order's lines).

use std::collections::HashSet;

use serde_json::json;
use uuid::Uuid;

use super::ingest::plan_line;
use super::repository;
use super::state::{LineItemStatus, OrderStatus};
use super::{Order, OrderRecord};
use crate::clients::http::ClientError;
use crate::infra::db::{Conn, DbError};
use crate::order::OrderCore;
use crate::order::event_log::{self, Entry, Severity, types};
use crate::order::mappings::active_for_skus;
use crate::order::orchestration::lines_moved;
use crate::print::jobs::{PrintJob, PrintJobStatus};
use crate::print::plan::{MAX_PRINTS_PER_LINE, PlannedLine, PrintPlan};

#[derive(Debug, thiserror::Error)]
pub enum RetryError {
    #[error("Order not found")]
    NotFound,
    #[error("The order has no unmapped or failed lines to retry")]
    NothingToRetry,
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Print(#[from] ClientError),
}

/// The lines of `record` that should have print jobs now, as the print service's plan.
pub fn print_plan(record: &OrderRecord) -> PrintPlan {
    let order = &record.order;
    PrintPlan {
        tenant_id: order.tenant_id,
        order_id: order.id,
        lines: record
            .lines
            .iter()
            .filter(|l| {
                matches!(
                    l.item.status,
                    LineItemStatus::Pending | LineItemStatus::Printing | LineItemStatus::Failed
                )
            })
            // Units served from stock (SPEC §6.5b) are not printed.
            .filter(|l| l.item.quantity > l.stock_units)
            .filter_map(|l| {
                Some(PlannedLine {
                    line_item_id: l.item.id,
                    generation: l.plan_generation,
                    quantity: l.item.quantity - l.stock_units,
                    print_files: l.print_files.clone()?,
                })
            })
            .collect(),
    }
}

/// Makes the order's jobs match its lines' plans: jobs of an older plan (or of a cancelled line)
/// that are still open are cancelled, and the current plans' jobs are created (idempotent).
/// Returns whether the plans it made are still the order's: a line planned anew meanwhile (its
/// jobs possibly made by another re-planning before this one made the older plan's) calls for
/// another re-planning.
pub async fn replan(core: &OrderCore, tenant_id: Uuid, order_id: Uuid) -> Result<bool, RetryError> {
    let record = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    let jobs = core.print.jobs_of_order(tenant_id, order_id).await?;
    for job in stale_jobs(&record, &jobs) {
        match core.print.cancel_print_job(tenant_id, job).await {
            Ok(_) => {}
            // It completed since it was read: nothing to end.
            Err(ClientError::Rejected { status: 409, .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let plan = print_plan(&record);
    if !plan.lines.is_empty() {
        core.print.create_print_jobs(&plan).await?;
    }
    let now = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    Ok(plans_of(&now) == plans_of(&record))
}

/// Each line's plan generation, by line.
fn plans_of(record: &OrderRecord) -> Vec<(Uuid, u32)> {
    let mut plans: Vec<(Uuid, u32)> = record
        .lines
        .iter()
        .map(|l| (l.item.id, l.plan_generation))
        .collect();
    plans.sort_unstable();
    plans
}

/// Whether the order's jobs do not match its lines' plans: a re-planning did not finish (the
/// print service was unavailable after the change had committed).
fn needs_replan(record: &OrderRecord, jobs: &[PrintJob]) -> bool {
    let unplanned = print_plan(record)
        .lines
        .into_iter()
        // A line refused when planned gets no jobs, however often it is planned.
        .filter(|line| line.prints() <= MAX_PRINTS_PER_LINE)
        .any(|line| {
            !jobs.iter().any(|j| {
                j.line_item_id == Some(line.line_item_id) && j.plan_generation == line.generation
            })
        });
    unplanned || !stale_jobs(record, jobs).is_empty()
}

/// Open jobs that no current plan wants.
fn stale_jobs(record: &OrderRecord, jobs: &[PrintJob]) -> Vec<Uuid> {
    jobs.iter()
        .filter(|j| j.status.is_active())
        .filter(|j| {
            record
                .lines
                .iter()
                .find(|l| Some(l.item.id) == j.line_item_id)
                // A newer plan's job than `record` has was made by a re-planning that read the
                // order after it: not stale.
                .is_none_or(|l| {
                    l.item.status == LineItemStatus::Cancelled
                        || j.plan_generation < l.plan_generation
                })
        })
        .map(|j| j.id)
        .collect()
}

/// `POST /api/v1/orders/{id}/retry`.
pub async fn retry(core: &OrderCore, tenant_id: Uuid, order_id: Uuid) -> Result<Order, RetryError> {
    let jobs = core.print.jobs_of_order(tenant_id, order_id).await?;
    let mut tx = core.db.begin().await?;
    let Some(record) = repository::lock(&mut tx, tenant_id, order_id).await? else {
        tx.rollback().await?;
        return Err(RetryError::NotFound);
    };
    if matches!(
        record.order.status,
        OrderStatus::Shipped | OrderStatus::Fulfilled | OrderStatus::Cancelled
    ) {
        tx.rollback().await?;
        return Err(RetryError::NothingToRetry);
    }
    let skus: Vec<&str> = record.lines.iter().map(|l| l.item.sku.as_str()).collect();
    let mappings = active_for_skus(&mut Conn::Tx(&mut tx), tenant_id, &skus).await?;
    let mut to_retry = Vec::new();
    let mut replanned = 0;
    let mut statuses = Vec::new();
    for line in record.lines.iter().filter(|l| !l.is_removed()) {
        let mut next = line.clone();
        let failed_jobs: Vec<Uuid> = jobs
            .iter()
            .filter(|j| {
                j.line_item_id == Some(line.item.id)
                    && j.plan_generation == line.plan_generation
                    && matches!(j.status, PrintJobStatus::Failed | PrintJobStatus::Cancelled)
            })
            .map(|j| j.id)
            .collect();
        match line.item.status {
            LineItemStatus::Failed if !failed_jobs.is_empty() => to_retry.extend(failed_jobs),
            LineItemStatus::Unmapped | LineItemStatus::Failed => {
                let plan = plan_line(line.item.quantity, mappings.get(&line.item.sku));
                if plan.status == LineItemStatus::Pending {
                    next.item.status = LineItemStatus::Pending;
                    next.item.product_mapping_id = plan.mapping_id;
                    next.print_files = plan.print_files;
                    next.plan_generation += 1;
                    repository::set_line(&mut tx, &next).await?;
                    replanned += 1;
                }
            }
            _ => {}
        }
        statuses.push(next.item.status);
    }
    if to_retry.is_empty() && replanned == 0 {
        tx.rollback().await?;
        if !needs_replan(&record, &jobs) {
            return Err(RetryError::NothingToRetry);
        }
        // What a re-planning left undone: done now.
        if !replan(core, tenant_id, order_id).await? {
            super::replanning::again(&core.db, order_id).await?;
        }
        let record = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id)
            .await?
            .ok_or(RetryError::NotFound)?;
        return Ok(record.into_order());
    }
    // The move (FAILED → PROCESSING, say) is told as every other: its log entry, bus event and
    // live update.
    let moved = lines_moved(&mut tx, &record.order, &statuses).await?;
    let entry = Entry::order(
        tenant_id,
        order_id,
        types::ORDER_RETRIED,
        Severity::Info,
        format!(
            "Retried: {replanned} line(s) planned, {} job(s) queued again",
            to_retry.len()
        ),
    )
    .with_details(json!({"replannedLines": replanned, "retriedJobs": to_retry}));
    event_log::append(&mut tx, &entry).await?;
    // Marked in this transaction: should the re-planning below fail, it is tried again.
    let mark = if replanned > 0 {
        Some(super::replanning::mark(&mut tx, order_id).await?)
    } else {
        None
    };
    tx.commit().await?;
    core.relay.notify();
    for event in moved {
        core.events.emit(event).await;
    }

    let retried: HashSet<Uuid> = to_retry.iter().copied().collect();
    for job in retried {
        core.print.retry_print_job(tenant_id, job).await?;
    }
    if let Some(mark) = mark {
        super::replanning::now(core, tenant_id, order_id, mark).await?;
    }
    let record = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id)
        .await?
        .ok_or(RetryError::NotFound)?;
    Ok(record.into_order())
}
