//! The print farm on SimplyPrint (SPEC §6.4): queued jobs are handed to SimplyPrint's queue
//! ([`dispatch`]), its webhooks move them on ([`webhook`]), and a reconciliation task asks it about
//! the changes whose webhook was missed ([`reconcile`]).
//!
//! Without `simplyprint.api_key` and `simplyprint.company_id` the integration is disconnected:
//! jobs wait QUEUED, `/health` says so, and nothing is sent anywhere.

pub mod client;
pub mod dispatch;
pub mod reconcile;
pub mod retries;
pub mod webhook;

#[cfg(test)]
mod tests;

use std::sync::Arc;

pub use client::SimplyPrint;

/// Where SimplyPrint's API is when `simplyprint.base_url` is not set.
pub const DEFAULT_BASE_URL: &str = "https://api.simplyprint.io";

/// Wakes the sender: a job was queued. Cheap to clone; a no-op while disconnected.
pub type DispatchNotifier = crate::infra::workers::Wakeup;

/// The tag forma puts on every queue item it creates: its own print-job id, which SimplyPrint
/// hands back as the job's `uid` when the item is printed.
pub fn tag(job_id: uuid::Uuid) -> String {
    job_id.to_string()
}

/// SimplyPrint's word for a job's state, as forma's status; `None` for words forma does not act on.
pub fn status_from_remote(remote: &str) -> Option<crate::print::jobs::PrintJobStatus> {
    use crate::print::jobs::PrintJobStatus::*;
    match remote.to_ascii_lowercase().as_str() {
        "queued" | "pending" => Some(Queued),
        "printing" | "started" | "ongoing" => Some(Printing),
        "done" | "completed" | "finished" => Some(Completed),
        "failed" | "error" => Some(Failed),
        "cancelled" | "canceled" => Some(Cancelled),
        _ => None,
    }
}

/// The SimplyPrint client when the integration is connected.
pub type Link = Option<Arc<SimplyPrint>>;
