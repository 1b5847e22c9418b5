//! The `print_jobs` table.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{JobCounts, PrintJob, PrintJobStatus};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Db, DbError, Tx};
use crate::order::inventory::StockJobPlan;
use crate::order::orders::state::Status;
use crate::print::plan::{MAX_PRINTS_PER_LINE, PrintPlan};
use crate::{on_pool, on_tx};

pub(crate) const COLUMNS: &str = "id, tenant_id, order_id, line_item_id, generation, file_id, \
    file_name, print_profile, status, simplyprint_job_id, attempts, error_message, version, \
    started_at, completed_at, created_at, updated_at";

#[derive(sqlx::FromRow)]
pub(crate) struct Row {
    id: Uuid,
    tenant_id: Uuid,
    order_id: Option<Uuid>,
    line_item_id: Option<Uuid>,
    generation: i64,
    file_id: String,
    file_name: String,
    print_profile: Option<String>,
    status: String,
    simplyprint_job_id: Option<String>,
    attempts: i64,
    error_message: Option<String>,
    version: i64,
    started_at: Option<DateTime<Utc>>,
    completed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    pub(crate) fn into_job(self) -> PrintJob {
        let status = PrintJobStatus::parse(&self.status).unwrap_or_else(|| {
            tracing::error!(job = %self.id, status = self.status, "unknown print job status");
            PrintJobStatus::Failed
        });
        PrintJob {
            id: self.id,
            tenant_id: self.tenant_id,
            order_id: self.order_id,
            line_item_id: self.line_item_id,
            file_id: self.file_id,
            file_name: self.file_name,
            print_profile: self.print_profile,
            status,
            simply_print_job_id: self.simplyprint_job_id,
            attempts: u32::try_from(self.attempts).unwrap_or(u32::MAX),
            error_message: self.error_message,
            started_at: self.started_at,
            completed_at: self.completed_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
            plan_generation: u32::try_from(self.generation).unwrap_or(u32::MAX),
            version: self.version,
        }
    }
}

/// Creates the jobs `plan` asks for that do not exist yet, in `tx`, and returns those it created.
/// Planning is idempotent: a job is one print of one file of one plan generation of one line, and
/// a second plan of the same generation finds its jobs there already. Lines over
/// [`MAX_PRINTS_PER_LINE`] create nothing (the order service refuses them before they get here).
pub async fn insert_planned(tx: &mut Tx, plan: &PrintPlan) -> Result<Vec<PrintJob>, DbError> {
    /// One row to insert: line, generation, file index, sequence, file.
    struct Planned<'a> {
        line: Uuid,
        generation: u32,
        index: usize,
        sequence: u64,
        file: &'a crate::order::mappings::PrintFile,
    }
    let mut rows = Vec::new();
    for line in &plan.lines {
        if line.prints() > MAX_PRINTS_PER_LINE {
            tracing::error!(line_item = %line.line_item_id, prints = line.prints(), "refused to plan a line of too many prints");
            continue;
        }
        for (index, file) in line.print_files.iter().enumerate() {
            for sequence in 1..=file.prints_for(line.quantity) {
                rows.push(Planned {
                    line: line.line_item_id,
                    generation: line.generation,
                    index,
                    sequence,
                    file,
                });
            }
        }
    }
    let now = Utc::now();
    let mut created = Vec::with_capacity(rows.len());
    // 8 parameters a row: a few hundred rows per statement, one round trip each.
    for chunk in rows.chunks(500) {
        let values = (0..chunk.len())
            .map(|i| {
                let p = 3 + i * 8;
                format!(
                    "(${}, $1, $2, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 'ORDER', 'QUEUED', 1, 1, $3, $3, $3)",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO print_jobs (id, tenant_id, order_id, line_item_id, generation, file_index, \
             sequence, file_id, file_name, print_profile, purpose, status, attempts, version, \
             dispatch_after, created_at, updated_at) VALUES {values} \
             ON CONFLICT (line_item_id, generation, file_index, sequence) WHERE line_item_id IS NOT NULL \
             DO NOTHING RETURNING {COLUMNS}"
        );
        let inserted = on_tx!(tx, conn => {
            let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql))
                .bind(plan.tenant_id)
                .bind(plan.order_id)
                .bind(now);
            for row in chunk {
                query = query
                    .bind(Uuid::now_v7())
                    .bind(row.line)
                    .bind(i64::from(row.generation))
                    .bind(row.index as i64)
                    .bind(row.sequence as i64)
                    .bind(&row.file.file_id)
                    .bind(&row.file.file_name)
                    .bind(row.file.print_profile.as_deref());
            }
            query.fetch_all(&mut *conn).await
        })?;
        created.extend(inserted.into_iter().map(Row::into_job));
    }
    // RETURNING promises no order; ids are time-ordered.
    created.sort_by_key(|j| j.id);
    Ok(created)
}

/// Creates the stock job `plan` in `tx` unless it exists (its id was chosen by the order service);
/// returns it when created. A stock job has no order and no line (SPEC §6.5b).
pub async fn insert_stock(tx: &mut Tx, plan: &StockJobPlan) -> Result<Option<PrintJob>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO print_jobs (id, tenant_id, order_id, line_item_id, generation, file_index, \
         sequence, file_id, file_name, print_profile, purpose, status, attempts, version, \
         dispatch_after, created_at, updated_at) VALUES ($1, $2, NULL, NULL, 1, 0, 1, $3, $4, $5, \
         'STOCK', 'QUEUED', 1, 1, $6, $6, $6) ON CONFLICT (id) DO NOTHING RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql)
            .bind(plan.print_job_id)
            .bind(plan.tenant_id)
            .bind(&plan.file_id)
            .bind(&plan.file_name)
            .bind(plan.print_profile.as_deref())
            .bind(Utc::now())
            .fetch_optional(&mut *conn)
            .await
    })?;
    Ok(row.map(Row::into_job))
}

pub async fn find(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<Option<PrintJob>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM print_jobs WHERE tenant_id = $1 AND id = $2"
    ));
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(sql).bind(tenant_id).bind(id).fetch_optional(pool).await
    })?;
    Ok(row.map(Row::into_job))
}

/// The job, taken for the rest of `tx`: nothing else changes it until `tx` ends (PostgreSQL's row
/// lock; SQLite's single writer, this being a write).
pub async fn lock(tx: &mut Tx, tenant_id: Uuid, id: Uuid) -> Result<Option<PrintJob>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE print_jobs SET version = version WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql).bind(tenant_id).bind(id).fetch_optional(&mut *conn).await
    })?;
    Ok(row.map(Row::into_job))
}

/// Every job of an order, oldest first.
pub async fn of_order(db: &Db, tenant_id: Uuid, order_id: Uuid) -> Result<Vec<PrintJob>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM print_jobs WHERE tenant_id = $1 AND order_id = $2 \
         ORDER BY created_at, id"
    ));
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(sql).bind(tenant_id).bind(order_id).fetch_all(pool).await
    })?;
    Ok(rows.into_iter().map(Row::into_job).collect())
}

/// How many of the tenant's jobs (for orders and for stock) created in `from..=to` are in each
/// status: the index on tenant and creation time holds every column it reads.
pub const COUNTS_BY_STATUS: &str = "\
    SELECT status, COUNT(*) AS jobs FROM print_jobs \
    WHERE tenant_id = $1 AND created_at >= $2 AND created_at <= $3 \
    GROUP BY status";

/// [`COUNTS_BY_STATUS`]: statuses without jobs are absent.
pub async fn counts_by_status(
    db: &Db,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<JobCounts, DbError> {
    let rows: Vec<(String, i64)> = on_pool!(db, pool => {
        sqlx::query_as(COUNTS_BY_STATUS)
            .bind(tenant_id)
            .bind(from)
            .bind(to)
            .fetch_all(pool)
            .await
    })?;
    let mut counts = JobCounts::new();
    for (status, jobs) in rows {
        match PrintJobStatus::parse(&status) {
            Some(status) => {
                counts.insert(status, jobs);
            }
            None => tracing::error!(status, jobs, "unknown print job status"),
        }
    }
    Ok(counts)
}

/// The ids of an order's jobs still to print or printing, in `tx`.
pub async fn open_of_order(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
) -> Result<Vec<Uuid>, DbError> {
    let ids = on_tx!(tx, conn => {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM print_jobs WHERE tenant_id = $1 AND order_id = $2 \
             AND status IN ('QUEUED', 'PRINTING') ORDER BY created_at, id",
        )
        .bind(tenant_id)
        .bind(order_id)
        .fetch_all(&mut *conn)
        .await
    })?;
    Ok(ids)
}

/// Which jobs to list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub status: Option<PrintJobStatus>,
    pub order_id: Option<Uuid>,
}

/// One page of a tenant's jobs, newest first, and how many match.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &JobFilter,
    page: PageRequest,
) -> Result<(Vec<PrintJob>, i64), DbError> {
    let condition =
        "tenant_id = $1 AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR order_id = $3)";
    let (limit, offset) = page.limit_offset();
    let select = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM print_jobs WHERE {condition} \
         ORDER BY created_at DESC, id DESC LIMIT $4 OFFSET $5"
    ));
    let count = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM print_jobs WHERE {condition}"));
    let status = filter.status.map(|s| s.as_str());
    // One snapshot, so the page and the count agree while jobs are queued.
    let mut tx = db.snapshot().await?;
    let rows = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, Row>(select)
            .bind(tenant_id)
            .bind(status)
            .bind(filter.order_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    let total = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>(count)
            .bind(tenant_id)
            .bind(status)
            .bind(filter.order_id)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((rows.into_iter().map(Row::into_job).collect(), total))
}

/// The job SimplyPrint calls `simplyprint_id`, else the job whose own id is one of `own_ids` (a
/// print started by hand from a file forma queued carries forma's tag, not forma's record of it).
pub async fn find_for_simplyprint(
    db: &Db,
    simplyprint_id: Option<&str>,
    own_ids: &[Uuid],
) -> Result<Option<PrintJob>, DbError> {
    if let Some(simplyprint_id) = simplyprint_id {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM print_jobs WHERE simplyprint_job_id = $1 \
             ORDER BY created_at DESC LIMIT 1"
        ));
        let row = on_pool!(db, pool => {
            sqlx::query_as::<_, Row>(sql).bind(simplyprint_id).fetch_optional(pool).await
        })?;
        if let Some(row) = row {
            return Ok(Some(row.into_job()));
        }
    }
    for id in own_ids {
        let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM print_jobs WHERE id = $1"));
        let row = on_pool!(db, pool => {
            sqlx::query_as::<_, Row>(sql).bind(*id).fetch_optional(pool).await
        })?;
        if let Some(row) = row {
            return Ok(Some(row.into_job()));
        }
    }
    Ok(None)
}

/// What changes with a status: the new status, the timestamps it sets, the error it carries, and
/// whether it is a new attempt (a retry).
#[derive(Debug, Clone)]
pub struct StatusUpdate {
    pub status: PrintJobStatus,
    pub error_message: Option<String>,
    pub new_attempt: bool,
    /// The farm reported it: a job it failed or cancelled has no item left in its queue.
    pub reported_by_the_farm: bool,
}

/// Writes a status change of a locked job and bumps its version; returns the job as stored. A job
/// cancelled or failed (given up) while it waited in the farm's queue (or may have: an attempt
/// was made) leaves its item to take out of the queue (`farm_removal`), due now: a given-up send
/// may have reached the farm, and its item would print a job forma counts as failed; so may a
/// retried job's (a retry can hand an item back, below), looked for by its tag. What the farm
/// itself reports failed or cancelled has left its queue: nothing to take out. A new attempt
/// clears SimplyPrint's id and the job's dispatch state, so the job is sent again. The item of a
/// job cancelled in forma that still waits to be taken out is handed back to the job instead (the
/// next send adopts it by its tag while the farm still queues it); any other item of the job
/// (printing, failed or cancelled at the farm, out of the queue) is kept among its earlier items
/// ([`is_earlier_item`]), whose news is not the new attempt's.
pub async fn set_status(
    tx: &mut Tx,
    job: &PrintJob,
    update: &StatusUpdate,
) -> Result<PrintJob, DbError> {
    let now = Utc::now();
    let started = match update.status {
        PrintJobStatus::Printing => Some(job.started_at.unwrap_or(now)),
        PrintJobStatus::Queued => None,
        _ => job.started_at,
    };
    let completed = matches!(
        update.status,
        PrintJobStatus::Completed | PrintJobStatus::Failed | PrintJobStatus::Cancelled
    )
    .then_some(now);
    if update.new_attempt {
        on_tx!(tx, conn => {
            sqlx::query(
                "INSERT INTO print_job_earlier_items (print_job_id, simplyprint_id) \
                 SELECT id, simplyprint_job_id FROM print_jobs WHERE id = $1 \
                 AND simplyprint_job_id IS NOT NULL \
                 AND NOT (status = 'CANCELLED' AND farm_removal IS NOT NULL \
                   AND farm_removal = simplyprint_job_id) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(job.id)
            .execute(&mut *conn)
            .await
            .map(drop)
        })?;
    }
    let leaves_the_queue = job.status == PrintJobStatus::Queued
        && !update.reported_by_the_farm
        && matches!(
            update.status,
            PrintJobStatus::Cancelled | PrintJobStatus::Failed
        );
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE print_jobs SET status = $2, error_message = $3, started_at = $4, completed_at = $5, \
         attempts = attempts + $6, version = version + 1, updated_at = $7, \
         simplyprint_job_id = CASE WHEN $6 = 1 THEN NULL ELSE simplyprint_job_id END, \
         dispatch_after = CASE WHEN $6 = 1 THEN $7 ELSE dispatch_after END, \
         dispatch_attempts = CASE WHEN $6 = 1 THEN 0 ELSE dispatch_attempts END, \
         dispatch_error = CASE WHEN $6 = 1 THEN NULL ELSE dispatch_error END, \
         farm_removal = CASE WHEN $8 = 1 AND (simplyprint_job_id IS NOT NULL OR dispatch_attempts > 0 \
             OR attempts > 1) \
           THEN COALESCE(simplyprint_job_id, '') \
           WHEN $6 = 1 AND status = 'CANCELLED' AND farm_removal = simplyprint_job_id THEN NULL \
           ELSE farm_removal END, \
         farm_removal_after = CASE WHEN $8 = 1 AND (simplyprint_job_id IS NOT NULL OR dispatch_attempts > 0 \
             OR attempts > 1) \
           THEN $7 WHEN $6 = 1 AND status = 'CANCELLED' AND farm_removal = simplyprint_job_id THEN NULL \
           ELSE farm_removal_after END, \
         farm_removal_attempts = CASE WHEN $8 = 1 THEN 0 ELSE farm_removal_attempts END \
         WHERE id = $1 RETURNING {COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, Row>(sql)
            .bind(job.id)
            .bind(update.status.as_str())
            .bind(update.error_message.as_deref())
            .bind(started)
            .bind(completed)
            .bind(i64::from(update.new_attempt))
            .bind(now)
            .bind(i64::from(leaves_the_queue))
            .fetch_one(&mut *conn)
            .await
    })?;
    Ok(row.into_job())
}

/// A farm queue item to take out, as a sender claimed it.
#[derive(Debug, sqlx::FromRow)]
pub struct Removal {
    /// The job's id (and its tag at the farm).
    pub id: Uuid,
    /// SimplyPrint's item id; empty when it was never recorded.
    pub item: String,
    /// The job's status now.
    pub status: String,
    /// Attempts so far, this claim's included.
    pub attempts: i64,
}

/// Claims up to `limit` queue items due to be taken out, until `now + lease`. The due condition is
/// repeated outside the subquery: PostgreSQL re-checks it on a row a concurrent claim just took.
pub async fn claim_removals(
    db: &Db,
    now: DateTime<Utc>,
    lease: chrono::TimeDelta,
    limit: i64,
) -> Result<Vec<Removal>, DbError> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Removal>(
            "UPDATE print_jobs SET farm_removal_after = $1, \
             farm_removal_attempts = farm_removal_attempts + 1 WHERE id IN ( \
               SELECT id FROM print_jobs WHERE farm_removal IS NOT NULL AND farm_removal_after <= $2 \
               ORDER BY farm_removal_after, id LIMIT $3) \
             AND farm_removal IS NOT NULL AND farm_removal_after <= $2 \
             RETURNING id, farm_removal AS item, status, farm_removal_attempts AS attempts",
        )
        .bind(now + lease)
        .bind(now)
        .bind(limit)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

/// Records that `item` of job `id` is out of the farm's queue (or never was): nothing left to
/// take out, unless a later cancellation left another item meanwhile.
pub async fn removal_done(db: &Db, id: Uuid, item: &str) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET farm_removal = NULL, farm_removal_after = NULL, \
             farm_removal_attempts = 0 WHERE id = $1 AND farm_removal = $2",
        )
        .bind(id)
        .bind(item)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Records a failed attempt at taking `item` of job `id` out, and when to try next.
pub async fn removal_failed(
    db: &Db,
    id: Uuid,
    item: &str,
    next: DateTime<Utc>,
) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE print_jobs SET farm_removal_after = $3 WHERE id = $1 AND farm_removal = $2",
        )
        .bind(id)
        .bind(item)
        .bind(next)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Whether job `id` is still to be printed (queued or printing) as SimplyPrint's
/// `simplyprint_id`, and not as an item of an earlier attempt.
pub async fn waits_on(db: &Db, id: Uuid, simplyprint_id: &str) -> Result<bool, DbError> {
    let found = on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM print_jobs WHERE id = $1 AND simplyprint_job_id = $2 \
             AND status IN ('QUEUED', 'PRINTING')",
        )
        .bind(id)
        .bind(simplyprint_id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(found.is_some())
}

/// Whether SimplyPrint's `simplyprint_id` was the item of an earlier attempt of job `id` (before
/// a retry). Its news is not the current attempt's, though it carries the job's tag: a print the
/// operator gave up in forma and then stopped at the printer must not cancel the reprint.
pub async fn is_earlier_item(tx: &mut Tx, id: Uuid, simplyprint_id: &str) -> Result<bool, DbError> {
    let found = on_tx!(tx, conn => {
        sqlx::query_scalar::<_, i64>(
            "SELECT 1 FROM print_job_earlier_items WHERE print_job_id = $1 AND simplyprint_id = $2",
        )
        .bind(id)
        .bind(simplyprint_id)
        .fetch_optional(&mut *conn)
        .await
    })?;
    Ok(found.is_some())
}

/// Records SimplyPrint's id for a job (first match of a webhook by forma's own tag).
pub async fn set_simplyprint_id(
    tx: &mut Tx,
    id: Uuid,
    simplyprint_id: &str,
) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE print_jobs SET simplyprint_job_id = $2 WHERE id = $1 AND simplyprint_job_id IS NULL",
        )
        .bind(id)
        .bind(simplyprint_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}
