//! Print jobs (SPEC §6.4): one print of one file, for a line item of an order (or for stock).

pub mod repository;
pub mod routes;
pub mod transitions;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use crate::order::orders::state::PrintJobStatus;

/// How many jobs are in each status; a status without jobs is absent.
pub type JobCounts = std::collections::HashMap<PrintJobStatus, i64>;

/// A print job as the API shows it (SPEC §6.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrintJob {
    pub id: Uuid,
    pub tenant_id: Uuid,
    /// Null for a stock job.
    pub order_id: Option<Uuid>,
    /// Null for a stock job.
    pub line_item_id: Option<Uuid>,
    pub file_id: String,
    pub file_name: String,
    pub print_profile: Option<String>,
    pub status: PrintJobStatus,
    /// SimplyPrint's id of the job, once it has one.
    pub simply_print_job_id: Option<String>,
    /// How many times the job was queued for printing (retries included).
    pub attempts: u32,
    pub error_message: Option<String>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Which plan of its line item the job belongs to (a re-planned line starts a new one).
    pub plan_generation: u32,
    /// Grows with every change of the job: snapshots of an order's jobs are ordered by the sum.
    pub version: i64,
}
