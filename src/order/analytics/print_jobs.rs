//! The print-job figures of the overview, asked of the print service: how many of the tenant's
//! jobs created in the period are in each status ([`PrintClient::job_counts`]), and the share of
//! finished ones that completed. The order side holds nothing that could answer it (a line has
//! one status for several jobs, and a job that never moved has no event-log entry), and it never
//! reads the print service's tables.

use uuid::Uuid;

use super::{Period, PrintJobFigures, by_status};
use crate::clients::print::PrintClient;
use crate::http::ApiError;
use crate::order::orders::PrintJobStatus;

/// The print-job section of the overview: counts by status and the success rate.
pub async fn figures(
    print: &dyn PrintClient,
    tenant_id: Uuid,
    period: Period,
) -> Result<PrintJobFigures, ApiError> {
    let counts = print
        .job_counts(tenant_id, period.from, period.to)
        .await
        .map_err(|e| e.into_api_error("print"))?;
    let count = |status: PrintJobStatus| counts.get(&status).copied().unwrap_or(0);
    let (completed, failed) = (
        count(PrintJobStatus::Completed),
        count(PrintJobStatus::Failed),
    );
    let finished = completed + failed;
    Ok(PrintJobFigures {
        total: counts.values().sum(),
        by_status: by_status(count),
        success_rate: (finished > 0).then(|| completed as f64 / finished as f64),
    })
}
