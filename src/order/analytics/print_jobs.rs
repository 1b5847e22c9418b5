//! The print-job figures of the overview: the one place where the order side reads a table of
//! the print service.
//!
//! STYLE.md wants the order side never to read another service's tables, and the order side
//! follows its print jobs otherwise through `PrintClient` and the bus. But nothing it already
//! holds can answer "how many jobs are in each status": its line items have line statuses (one
//! line, several jobs), its event log has no entry for a job that never moved (created QUEUED and
//! still waiting), and `PrintClient` lists jobs one order at a time (100 000 calls for a year).
//! So this one query reads `print_jobs` directly, read-only, and nothing else here does.
//!
//! When print runs as a service of its own this function becomes a `PrintClient` method (say
//! `job_counts(tenant_id, from, to)`, in-process: this very query in the print module; over HTTP:
//! `GET /internal/print-jobs/counts`), and its callers do not change.

use std::collections::HashMap;

use uuid::Uuid;

use super::{Period, PrintJobFigures, repository::by_status};
use crate::infra::db::{Db, DbError};
use crate::on_pool;
use crate::order::orders::PrintJobStatus;
use crate::order::orders::state::Status;

/// The tenant's print jobs (for orders and for stock) created in the period, by status.
pub(super) const JOBS_BY_STATUS: &str = "\
    SELECT status, COUNT(*) AS jobs FROM print_jobs \
    WHERE tenant_id = $1 AND created_at >= $2 AND created_at <= $3 \
    GROUP BY status";

/// The print-job section of the overview: counts by status and the success rate.
pub async fn figures(db: &Db, tenant_id: Uuid, period: Period) -> Result<PrintJobFigures, DbError> {
    let rows: Vec<(String, i64)> = on_pool!(db, pool => {
        sqlx::query_as(JOBS_BY_STATUS)
            .bind(tenant_id)
            .bind(period.from)
            .bind(period.to)
            .fetch_all(pool)
            .await
    })?;
    let counts: HashMap<String, i64> = rows.into_iter().collect();
    let count = |status: PrintJobStatus| counts.get(status.as_str()).copied().unwrap_or(0);
    let (completed, failed) = (
        count(PrintJobStatus::Completed),
        count(PrintJobStatus::Failed),
    );
    let finished = completed + failed;
    Ok(PrintJobFigures {
        total: counts.values().sum(),
        by_status: by_status::<PrintJobStatus>(&counts),
        success_rate: (finished > 0).then(|| completed as f64 / finished as f64),
    })
}
