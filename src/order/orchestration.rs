//! The order side's reaction to its print jobs (SPEC §6.1, §8.1): every `print-job.*` event makes
//! the order re-derive its lines' and its own status from a fresh snapshot of its jobs, through
//! the one state machine.
//!
//! Invariants:
//! - The snapshot is read from the print service (which owns the jobs), never from its tables.
//! - Events arrive in any order and more than once. Each is handled once ([`handle_once_returning`])
//!   and a snapshot is applied only if it is newer than the one the order last followed (the sum
//!   of its jobs' versions, which only grows), so a late event never takes an order back.
//! - Only a job's revival (terminal → active) brings a cancelled order back, and that is logged as
//!   `order.revived`; shipped and fulfilled orders no longer follow their jobs.
//! - An order that becomes READY_FOR_FULFILLMENT publishes `order.ready-for-fulfillment` in the
//!   same transaction.

use serde_json::json;
use uuid::Uuid;

use crate::clients::http::ClientError;
use crate::events::bridge;
use crate::events::bus::subscriptions::consumers::ORDER;
use crate::events::bus::{BusError, EventBus, HandlerError};
use crate::events::catalog::{Event, EventPayload, names};
use crate::events::idempotency::handle_once_returning;
use crate::events::internal::{self as internal_events, InternalEvent};
use crate::events::outbox;
use crate::infra::db::{DbError, Tx};
use crate::order::OrderCore;
use crate::order::event_log::{self, Entry, Severity, types};
use crate::order::notifications;
use crate::order::orders::state::{
    LineItemStatus, OrderStatus, PrintJobStatus, Status, line_item_status, order_status,
};
use crate::order::orders::{Order, repository};
use crate::print::jobs::PrintJob;

/// The consumer name of the dedupe records.
const CONSUMER: &str = "order.orchestration";

/// Subscribes the order side to the print-job events.
pub fn subscribe(bus: &EventBus, core: OrderCore) -> Result<(), BusError> {
    for name in [
        names::PRINT_JOB_COMPLETED,
        names::PRINT_JOB_FAILED,
        names::PRINT_JOB_STATUS_CHANGED,
        names::PRINT_JOB_CANCELLED,
    ] {
        let core = core.clone();
        bus.subscribe(ORDER, name, move |event: Event| {
            let core = core.clone();
            async move { on_print_job_event(&core, &event).await }
        })?;
    }
    Ok(())
}

/// One `print-job.*` event.
pub async fn on_print_job_event(core: &OrderCore, event: &Event) -> Result<(), HandlerError> {
    // A stock job's news is the inventory's (SPEC §6.5b): it has no order to follow.
    if crate::order::inventory::batches::is_stock_job_event(event) {
        return crate::order::inventory::batches::on_stock_job_event(core, event).await;
    }
    let Some(internal) = bridge::to_internal(event) else {
        return Ok(());
    };
    let (tenant_id, order_id) = (internal.tenant_id(), internal.order_id());
    // `Some((from, to))` for the one event that says what moved.
    let moved = match &event.payload {
        EventPayload::PrintJobStatusChanged(e) => PrintJobStatus::parse(&e.previous_status)
            .zip(PrintJobStatus::parse(&e.new_status))
            .map(|moved| (Uuid::parse_str(&e.print_job_id).ok(), moved)),
        _ => None,
    };
    // Read before the transaction: a call to another service never holds a write lock.
    let snapshot = core
        .print
        .jobs_of_order(tenant_id, order_id)
        .await
        .map_err(ClientError::into_handler_error)?;
    let emitted = handle_once_returning(&core.db, event, CONSUMER, |tx| {
        Box::pin(async move { follow_jobs(tx, tenant_id, order_id, &snapshot, moved).await })
    })
    .await?;
    core.relay.notify();
    // The print side told it when it happened (in this process or another order replica); told
    // again for the subscribers that record it, should that process have died before it told.
    core.events.emit_again(internal).await;
    for event in emitted.unwrap_or_default() {
        core.events.emit(event).await;
    }
    Ok(())
}

type Moved = Option<(Option<Uuid>, (PrintJobStatus, PrintJobStatus))>;

/// Re-derives a locked order from `snapshot` in `tx`; returns the internal events to emit.
async fn follow_jobs(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
    snapshot: &[PrintJob],
    moved: Moved,
) -> Result<Vec<InternalEvent>, HandlerError> {
    let Some(record) = repository::lock(tx, tenant_id, order_id).await? else {
        tracing::warn!(%order_id, "a print job event for an order forma does not have");
        return Ok(Vec::new());
    };
    if let Some((job_id, (from, to))) = moved {
        let mut entry = Entry::order(
            tenant_id,
            order_id,
            types::PRINT_JOB_STATUS_CHANGED,
            if to == PrintJobStatus::Failed {
                Severity::Error
            } else {
                Severity::Info
            },
            format!("Print job {} → {}", from.as_str(), to.as_str()),
        )
        .with_details(json!({"previousStatus": from, "newStatus": to}));
        if let Some(job_id) = job_id {
            entry = entry.with_print_job(job_id);
        }
        event_log::append(tx, &entry).await?;
    }
    let revived = moved.is_some_and(|(_, (from, to))| PrintJobStatus::is_revival(from, to));
    let version: i64 = snapshot.iter().map(|j| j.version).sum();
    let newer = version > record.jobs_version || (revived && version >= record.jobs_version);
    if !newer {
        return Ok(Vec::new());
    }
    let order = &record.order;
    let frozen = order.status == OrderStatus::Cancelled && !revived;
    let mut statuses = Vec::with_capacity(record.lines.len());
    for line in record.lines.iter().filter(|l| !l.is_removed()) {
        let jobs: Vec<PrintJobStatus> = snapshot
            .iter()
            .filter(|j| {
                j.line_item_id == Some(line.item.id) && j.plan_generation == line.plan_generation
            })
            .map(|j| j.status)
            .collect();
        let current = line.item.status;
        let derived = if frozen {
            current
        } else {
            line_item_status(current, line.print_files.is_some(), &jobs)
        };
        let next = match current.transition(derived) {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(line = %line.item.id, error = %e, "a derived line status is not a legal move; kept");
                current
            }
        };
        if next != current {
            let mut updated = line.clone();
            updated.item.status = next;
            repository::set_line(tx, &updated).await?;
            let entry = Entry::order(
                tenant_id,
                order_id,
                types::LINE_ITEM_STATUS_CHANGED,
                Severity::Info,
                format!(
                    "Line {} {} → {}",
                    line.item.sku,
                    current.as_str(),
                    next.as_str()
                ),
            )
            .with_details(
                json!({"lineItemId": line.item.id, "previousStatus": current, "newStatus": next}),
            );
            event_log::append(tx, &entry).await?;
        }
        statuses.push(next);
    }
    let derived = order_status(order.status, &statuses, revived);
    let next = match order.status.transition(derived) {
        Ok(next) => next,
        Err(e) => {
            tracing::error!(%order_id, error = %e, "a derived order status is not a legal move; kept");
            order.status
        }
    };
    repository::set_status(tx, order_id, next, Some(version), None).await?;
    if next == order.status {
        return Ok(Vec::new());
    }
    Ok(order_moved(tx, &record.order, next).await?)
}

/// Moves `order` to the status its lines' `statuses` call for, when that is another status and a
/// legal move: the status, its log entry, bus event and e-mail in `tx`. Returns the internal
/// events to emit after commit. For changes made by forma itself (lines served from stock, lines
/// Shopify changed), which follow no job snapshot.
pub(crate) async fn lines_moved(
    tx: &mut Tx,
    order: &Order,
    statuses: &[LineItemStatus],
) -> Result<Vec<InternalEvent>, DbError> {
    let next = order_status(order.status, statuses, false);
    if next == order.status || !order.status.can_become(next) {
        return Ok(Vec::new());
    }
    repository::set_status(tx, order.id, next, None, None).await?;
    order_moved(tx, order, next).await
}

/// The log entry, bus event, e-mail and internal events of an order's move from its status to
/// `next`.
pub(crate) async fn order_moved(
    tx: &mut Tx,
    order: &Order,
    next: OrderStatus,
) -> Result<Vec<InternalEvent>, DbError> {
    let (tenant_id, order_id) = (order.tenant_id, order.id);
    let revival = next == OrderStatus::Processing
        && matches!(
            order.status,
            OrderStatus::Failed | OrderStatus::PartiallyCompleted | OrderStatus::Cancelled
        );
    let (event_type, severity) = match next {
        _ if revival => (types::ORDER_REVIVED, Severity::Info),
        OrderStatus::Failed => (types::ORDER_STATUS_CHANGED, Severity::Error),
        OrderStatus::PartiallyCompleted => (types::ORDER_STATUS_CHANGED, Severity::Warning),
        _ => (types::ORDER_STATUS_CHANGED, Severity::Info),
    };
    let message = if revival {
        format!(
            "Order revived: {} → {}",
            order.status.as_str(),
            next.as_str()
        )
    } else {
        format!("Order {} → {}", order.status.as_str(), next.as_str())
    };
    let entry = Entry::order(tenant_id, order_id, event_type, severity, message)
        .with_details(json!({"previousStatus": order.status, "newStatus": next}));
    event_log::append(tx, &entry).await?;
    if revival {
        tracing::info!(%order_id, from = order.status.as_str(), "order revived");
    }
    let mut events = vec![InternalEvent::OrderStatusChanged(
        internal_events::StatusChanged {
            tenant_id,
            order_id,
            previous_status: order.status.as_str().to_owned(),
            new_status: next.as_str().to_owned(),
        },
    )];
    let reference = internal_events::OrderRef {
        tenant_id,
        order_id,
    };
    match next {
        OrderStatus::ReadyForFulfillment => {
            let ready = InternalEvent::OrderReadyForFulfillment(reference);
            if let Some(event) = bridge::to_bus_event(&ready, bridge::ORDER_SERVICE) {
                outbox::enqueue(tx, &event).await?;
            }
            events.push(ready);
        }
        OrderStatus::Fulfilled => events.push(InternalEvent::OrderFulfilled(reference)),
        OrderStatus::Failed => {
            let reason = "Every line failed";
            notifications::order_failed(tx, order, reason).await?;
            events.push(InternalEvent::OrderFailed(internal_events::OrderFailed {
                tenant_id,
                order_id,
                reason: reason.to_owned(),
            }))
        }
        _ => {}
    }
    Ok(events)
}
