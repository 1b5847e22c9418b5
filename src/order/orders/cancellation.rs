//! Cancelling an order (SPEC §6.1): by an operator (`POST /api/v1/orders/{id}/cancel`) or by
//! Shopify (`orders/cancelled`). The order and its unfinished lines become CANCELLED and
//! `order.cancelled` goes to the bus in the same transaction; the print side cancels the order's
//! open jobs when it hears it.

use serde_json::json;

use super::OrderRecord;
use super::repository;
use super::state::{LineItemStatus, OrderStatus, Status};
use crate::events::bridge;
use crate::events::internal::{self as internal_events, InternalEvent};
use crate::events::outbox;
use crate::infra::db::{DbError, Tx};
use crate::order::event_log::{self, Entry, Severity, types};

/// Cancels a locked order in `tx`; the internal events to emit after commit, or `None` when the
/// order can no longer be cancelled (shipped, fulfilled, cancelled already).
pub async fn cancel_in(
    tx: &mut Tx,
    record: &OrderRecord,
    reason: &str,
) -> Result<Option<Vec<InternalEvent>>, DbError> {
    let order = &record.order;
    if !order.status.is_cancellable() {
        return Ok(None);
    }
    repository::set_status(tx, order.id, OrderStatus::Cancelled, None, Some(reason)).await?;
    // Units it took from stock go back (SPEC §6.5b): it will not ship.
    crate::order::inventory::serving::give_back(tx, record).await?;
    for line in &record.lines {
        if line.item.status.can_become(LineItemStatus::Cancelled)
            && line.item.status != LineItemStatus::Cancelled
        {
            let mut cancelled = line.clone();
            cancelled.item.status = LineItemStatus::Cancelled;
            repository::set_line(tx, &cancelled).await?;
        }
    }
    let entry = Entry::order(
        order.tenant_id,
        order.id,
        types::ORDER_CANCELLED,
        Severity::Warning,
        format!("Order cancelled: {reason}"),
    )
    .with_details(json!({"previousStatus": order.status, "reason": reason}));
    event_log::append(tx, &entry).await?;
    let cancelled = InternalEvent::OrderCancelled(internal_events::OrderCancelled {
        tenant_id: order.tenant_id,
        order_id: order.id,
        reason: Some(reason.to_owned()),
    });
    if let Some(event) = bridge::to_bus_event(&cancelled, bridge::ORDER_SERVICE) {
        outbox::enqueue(tx, &event).await?;
    }
    let changed = InternalEvent::OrderStatusChanged(internal_events::StatusChanged {
        tenant_id: order.tenant_id,
        order_id: order.id,
        previous_status: order.status.as_str().to_owned(),
        new_status: OrderStatus::Cancelled.as_str().to_owned(),
    });
    Ok(Some(vec![cancelled, changed]))
}
