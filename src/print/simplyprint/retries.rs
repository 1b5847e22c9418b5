//! The print side's part of the retry queue ([`crate::order::retry_queue`]): jobs SimplyPrint
//! did not take, waiting for the sender to try again.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::infra::db::DbError;
use crate::on_pool;
use crate::order::retry_queue::{CallKind, RetryEntry};
use crate::print::jobs::PrintJobStatus;
use crate::print::jobs::transitions::ChangeError;
use crate::print::{JobChange, PrintCore};

/// A job whose send failed and is still to be sent.
const FAILED_SEND: &str = "status = 'QUEUED' AND simplyprint_job_id IS NULL \
    AND dispatch_error IS NOT NULL";

/// The tenant's jobs whose send to SimplyPrint failed, next attempt first.
pub async fn entries(core: &PrintCore, tenant_id: Uuid) -> Result<Vec<RetryEntry>, DbError> {
    type Row = (
        Uuid,
        Option<Uuid>,
        i64,
        Option<DateTime<Utc>>,
        Option<String>,
    );
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT id, order_id, dispatch_attempts, dispatch_after, dispatch_error FROM print_jobs \
         WHERE tenant_id = $1 AND {FAILED_SEND} ORDER BY dispatch_after, id"
    ));
    let rows: Vec<Row> = on_pool!(&core.db, pool => {
        sqlx::query_as(sql).bind(tenant_id).fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|(id, order_id, attempts, next, error)| {
            RetryEntry::new(
                CallKind::SimplyPrintJob,
                id,
                order_id,
                attempts,
                next,
                error.unwrap_or_default(),
            )
        })
        .collect())
}

/// Makes a failed send due now and wakes the sender; `false` when the job has none waiting.
pub async fn send_now(core: &PrintCore, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE print_jobs SET dispatch_after = $3 \
         WHERE tenant_id = $1 AND id = $2 AND {FAILED_SEND}"
    ));
    let updated = on_pool!(&core.db, pool => {
        sqlx::query(sql)
            .bind(tenant_id)
            .bind(id)
            .bind(Utc::now())
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })?;
    if updated == 1 {
        core.dispatch.notify();
    }
    Ok(updated == 1)
}

/// Stops trying: the job fails with the reason, so its order follows (and it can be queued again
/// with `POST /api/v1/print-jobs/{id}/retry`). `false` when the job has no failed send waiting.
pub async fn give_up(core: &PrintCore, tenant_id: Uuid, id: Uuid) -> Result<bool, ChangeError> {
    // The one job is looked up, not the tenant's whole list: after an outage that list is every
    // job the farm did not take.
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM print_jobs WHERE tenant_id = $1 AND id = $2 AND {FAILED_SEND}"
    ));
    let waiting: i64 = on_pool!(&core.db, pool => {
        sqlx::query_scalar(sql).bind(tenant_id).bind(id).fetch_one(pool).await
    })
    .map_err(DbError::from)?;
    if waiting == 0 {
        return Ok(false);
    }
    let reason = Some("Given up from the retry queue: SimplyPrint did not take the job".into());
    match core
        .change(tenant_id, id, PrintJobStatus::Failed, reason)
        .await?
    {
        JobChange::Changed(_) => Ok(true),
        JobChange::Unchanged(_) | JobChange::NotFound => Ok(false),
    }
}
