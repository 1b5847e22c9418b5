//! Every status change of a print job, whoever asks for it (a SimplyPrint webhook, reconciliation,
//! an operator's retry or cancel, an order's cancellation): checked against the one state machine,
//! written with a new version, and announced on the bus through the outbox in the same
//! transaction (SPEC §8.1): `print-job.status-changed` always, and `print-job.completed`,
//! `print-job.failed` or `print-job.cancelled` when the job ends so.

use super::repository::{self, StatusUpdate};
use super::{PrintJob, PrintJobStatus};
use crate::events::catalog::{self, Event, EventPayload};
use crate::events::outbox;
use crate::infra::db::{DbError, Tx};
use crate::order::orders::state::{IllegalTransition, Status};

/// The `source` of the events the print side publishes.
pub const PRINT_SERVICE: &str = "print-service";

#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Illegal(#[from] IllegalTransition),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// A change that happened: the job before and after.
#[derive(Debug, Clone)]
pub struct Changed {
    pub before: PrintJob,
    pub after: PrintJob,
}

/// Who says a job moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    /// forma itself: an operator, an order's cancellation or change.
    Forma,
    /// The farm (a webhook, reconciliation): what it reports failed or cancelled has left its
    /// queue already, so there is nothing to take out of it.
    Farm,
}

/// Moves a locked `job` to `to` in `tx`, as `reporter` says. `Ok(None)` when it is there already
/// (a repeated webhook).
pub async fn change(
    tx: &mut Tx,
    job: &PrintJob,
    to: PrintJobStatus,
    error_message: Option<String>,
    reporter: Reporter,
) -> Result<Option<Changed>, ChangeError> {
    if job.status == to {
        return Ok(None);
    }
    job.status.transition(to)?;
    let update = StatusUpdate {
        status: to,
        error_message: match to {
            PrintJobStatus::Failed => error_message.or_else(|| Some("Print failed".to_owned())),
            // Given up after it failed: why it failed stays, with why it was given up.
            PrintJobStatus::Cancelled => match (job.status, &job.error_message) {
                (PrintJobStatus::Failed, Some(failure)) => Some(match error_message {
                    Some(reason) => format!("{failure} (then: {reason})"),
                    None => failure.clone(),
                }),
                _ => error_message,
            },
            _ => None,
        },
        // Back to the queue from a terminal status is a new attempt: it goes to the farm again.
        new_attempt: to == PrintJobStatus::Queued,
        reported_by_the_farm: reporter == Reporter::Farm,
    };
    let after = repository::set_status(tx, job, &update).await?;
    for event in bus_events(job, &after) {
        outbox::enqueue(tx, &event).await?;
    }
    Ok(Some(Changed {
        before: job.clone(),
        after,
    }))
}

/// The bus events of a change.
fn bus_events(before: &PrintJob, after: &PrintJob) -> Vec<Event> {
    let (Some(order_id), Some(line_item_id)) = (after.order_id, after.line_item_id) else {
        return stock_job_events(after);
    };
    let (print_job_id, order_id, line_item_id) = (
        after.id.to_string(),
        order_id.to_string(),
        line_item_id.to_string(),
    );
    let tenant = after.tenant_id.to_string();
    let mut payloads = vec![EventPayload::PrintJobStatusChanged(
        catalog::PrintJobStatusChanged {
            print_job_id: print_job_id.clone(),
            order_id: order_id.clone(),
            line_item_id: line_item_id.clone(),
            previous_status: before.status.as_str().to_owned(),
            new_status: after.status.as_str().to_owned(),
        },
    )];
    match after.status {
        PrintJobStatus::Completed => payloads.push(EventPayload::PrintJobCompleted(
            catalog::PrintJobCompleted {
                print_job_id,
                order_id,
                line_item_id,
            },
        )),
        PrintJobStatus::Failed => {
            payloads.push(EventPayload::PrintJobFailed(catalog::PrintJobFailed {
                print_job_id,
                order_id,
                line_item_id,
                error_message: after.error_message.clone().unwrap_or_default(),
            }))
        }
        PrintJobStatus::Cancelled => payloads.push(EventPayload::PrintJobCancelled(
            catalog::PrintJobCancelled {
                print_job_id,
                order_id,
                line_item_id,
            },
        )),
        PrintJobStatus::Queued | PrintJobStatus::Printing => {}
    }
    payloads
        .into_iter()
        .map(|payload| Event::new(PRINT_SERVICE, tenant.clone(), payload))
        .collect()
}

/// A stock job (SPEC §6.5b) has no order to tell; its completion (the batch's units come) and its
/// cancellation (they never will) go out for the order service's inventory. A failed one waits
/// for an operator's retry, as an order's job does, and tells nothing. The catalog's `orderId`
/// and `lineItemId` are strings, not nullable: they are empty, which is how a consumer tells a
/// stock job.
fn stock_job_events(after: &PrintJob) -> Vec<Event> {
    let (print_job_id, order_id, line_item_id) =
        (after.id.to_string(), String::new(), String::new());
    let payload = match after.status {
        PrintJobStatus::Completed => EventPayload::PrintJobCompleted(catalog::PrintJobCompleted {
            print_job_id,
            order_id,
            line_item_id,
        }),
        PrintJobStatus::Cancelled => EventPayload::PrintJobCancelled(catalog::PrintJobCancelled {
            print_job_id,
            order_id,
            line_item_id,
        }),
        PrintJobStatus::Queued | PrintJobStatus::Printing | PrintJobStatus::Failed => {
            return Vec::new();
        }
    };
    vec![Event::new(
        PRINT_SERVICE,
        after.tenant_id.to_string(),
        payload,
    )]
}
