//! The print side's reactions to orders (SPEC §6.4, §8.1): `order.created` plans the order's print
//! jobs, `order.cancelled` cancels the ones still open, `inventory.stock-replenishment-scheduled`
//! creates a stock job ([`super::stock`]). Each runs once per event
//! ([`handle_once`]): a redelivered event changes nothing.
//!
//! The plan comes from the order service ([`OrderClient::print_plan`]), which owns the product
//! mappings; the webhook that stored the order never calls here directly.

use std::collections::HashSet;
use std::sync::Arc;

use uuid::Uuid;

use super::PrintCore;
use super::jobs::transitions::{self, ChangeError, Changed, Reporter};
use super::jobs::{PrintJob, PrintJobStatus, repository};
use crate::clients::http::ClientError;
use crate::clients::order::OrderClient;
use crate::events::bus::subscriptions::consumers::PRINT;
use crate::events::bus::{BusError, EventBus, HandlerError};
use crate::events::catalog::{Event, EventPayload, names};
use crate::events::idempotency::handle_once_returning;

/// The consumer names of the dedupe records.
const PLANNER: &str = "print.planner";
const CANCELLER: &str = "print.order-cancelled";

/// Subscribes the print side to the order events it acts on.
pub fn subscribe(
    bus: &EventBus,
    core: PrintCore,
    orders: Arc<dyn OrderClient>,
) -> Result<(), BusError> {
    let planner = core.clone();
    let stock_orders = orders.clone();
    bus.subscribe(PRINT, names::ORDER_CREATED, move |event: Event| {
        let (core, orders) = (planner.clone(), orders.clone());
        async move { plan_order(&core, orders.as_ref(), &event).await }
    })?;
    let canceller = core.clone();
    bus.subscribe(PRINT, names::ORDER_CANCELLED, move |event: Event| {
        let core = canceller.clone();
        async move { cancel_order(&core, &event).await }
    })?;
    bus.subscribe(
        PRINT,
        names::STOCK_REPLENISHMENT_SCHEDULED,
        move |event: Event| {
            let (core, orders) = (core.clone(), stock_orders.clone());
            async move { super::stock::create_stock_job(&core, orders.as_ref(), &event).await }
        },
    )?;
    Ok(())
}

/// `order.created`: the order's jobs, planned once.
pub async fn plan_order(
    core: &PrintCore,
    orders: &dyn OrderClient,
    event: &Event,
) -> Result<(), HandlerError> {
    let EventPayload::OrderCreated(created) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, order_id)) = event.tenant_and(&created.order_id) else {
        return Ok(());
    };
    // Read before the transaction: a call to another service never holds a write lock.
    let Some(plan) = orders
        .print_plan(tenant_id, order_id)
        .await
        .map_err(ClientError::into_handler_error)?
    else {
        tracing::warn!(%order_id, "order.created for an order the order service does not know");
        return Ok(());
    };
    let created: Option<Vec<PrintJob>> = handle_once_returning(&core.db, event, PLANNER, |tx| {
        Box::pin(async move { Ok::<_, HandlerError>(repository::insert_planned(tx, &plan).await?) })
    })
    .await?;
    let created = created.unwrap_or_default();
    core.announce_created(&created).await;
    // The plan may have changed between its read and the jobs' insert. `order.cancelled` travels
    // in a queue of its own, and may have been handled meanwhile and found no job to cancel; and
    // Shopify may have changed a line, whose new plan was made (and the old one's jobs looked
    // for, none found yet) meanwhile. Read again: an open job no current plan has is cancelled
    // now. On every delivery: one whose insert committed but which ended before this check (the
    // read failed, the process died) is delivered again, creates nothing, and must still make it.
    // The jobs are read before the plan: a job a re-planning creates between the two reads, of a
    // plan newer than the one read, is not taken for a stale one.
    let open = repository::of_order(&core.db, tenant_id, order_id).await?;
    let now = orders
        .print_plan(tenant_id, order_id)
        .await
        .map_err(ClientError::into_handler_error)?;
    let current: HashSet<(Uuid, u32)> = now
        .iter()
        .flat_map(|plan| &plan.lines)
        .map(|line| (line.line_item_id, line.generation))
        .collect();
    let stale: Vec<&PrintJob> = open
        .iter()
        .filter(|job| job.status.is_active())
        .filter(|job| {
            !job.line_item_id
                .is_some_and(|line| current.contains(&(line, job.plan_generation)))
        })
        .collect();
    if stale.is_empty() {
        return Ok(());
    }
    tracing::info!(%order_id, jobs = stale.len(), "jobs planned for a plan the order no longer has are cancelled");
    let reason = if current.is_empty() {
        "Order cancelled"
    } else {
        "Order changed"
    };
    for job in stale {
        let reason = Some(reason.to_owned());
        match core
            .change(tenant_id, job.id, PrintJobStatus::Cancelled, reason)
            .await
        {
            Ok(_) | Err(ChangeError::Illegal(_)) => {}
            Err(ChangeError::Db(e)) => return Err(e.into()),
        }
    }
    Ok(())
}

/// `order.cancelled`: every job of the order still queued or printing is cancelled.
pub async fn cancel_order(core: &PrintCore, event: &Event) -> Result<(), HandlerError> {
    let EventPayload::OrderCancelled(cancelled) = &event.payload else {
        return Ok(());
    };
    let Some((tenant_id, order_id)) = event.tenant_and(&cancelled.order_id) else {
        return Ok(());
    };
    let changes = handle_once_returning(&core.db, event, CANCELLER, |tx| {
        Box::pin(async move {
            let mut changes: Vec<Changed> = Vec::new();
            for id in repository::open_of_order(tx, tenant_id, order_id).await? {
                let Some(job) = repository::lock(tx, tenant_id, id).await? else {
                    continue;
                };
                let reason = Some("Order cancelled".to_owned());
                match transitions::change(tx, &job, PrintJobStatus::Cancelled, reason, Reporter::Forma).await {
                    Ok(Some(changed)) => changes.push(changed),
                    Ok(None) => {}
                    Err(ChangeError::Illegal(e)) => {
                        tracing::info!(job = %id, error = %e, "left a job of a cancelled order as it is")
                    }
                    Err(ChangeError::Db(e)) => return Err(HandlerError::from(e)),
                }
            }
            Ok(changes)
        })
    })
    .await?;
    for changed in changes.iter().flatten() {
        core.announce_changed(changed).await;
    }
    Ok(())
}
