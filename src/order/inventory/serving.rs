//! Serving order lines from stock (SPEC §6.5b): a new order's lines take what stock there is in
//! the transaction that stores the order, so the units are the order's exactly when the order
//! exists. Only the rest of a line is printed; a line served wholly from stock is COMPLETED at
//! once, and the order moves on through the one state machine. Cancelling the order gives the
//! units back, once.

use serde_json::json;

use super::repository::{self, Allocation};
use crate::events::internal::InternalEvent;
use crate::infra::db::{DbError, Tx};
use crate::order::event_log::{self, Entry, Severity, types};
use crate::order::orchestration::order_moved;
use crate::order::orders::state::{LineItemStatus, Status, order_status};
use crate::order::orders::{OrderRecord, repository as orders};

/// Takes stock for the lines of the new order `record` in its transaction `tx`; returns the
/// internal events of the order's move, if it moved (every line served: ready for fulfillment).
pub async fn serve_new_order(
    tx: &mut Tx,
    record: &OrderRecord,
) -> Result<Vec<InternalEvent>, DbError> {
    let order = &record.order;
    let mut statuses = Vec::with_capacity(record.lines.len());
    let mut served_any = false;
    for line in &record.lines {
        let mut line = line.clone();
        // Lines to print only: not unmapped ones, not ones refused as too large.
        let mapping_id = match (line.item.status, line.item.product_mapping_id) {
            (LineItemStatus::Pending, Some(mapping_id)) => mapping_id,
            _ => {
                statuses.push(line.item.status);
                continue;
            }
        };
        let wanted = i64::from(line.item.quantity.saturating_sub(line.stock_units));
        let taken = repository::take(tx, order.tenant_id, mapping_id, wanted).await?;
        if taken == 0 {
            statuses.push(line.item.status);
            continue;
        }
        let allocation = Allocation {
            line_item_id: line.item.id,
            order_id: order.id,
            mapping_id,
            sku: line.item.sku.clone(),
            units: taken,
        };
        repository::record_allocation(tx, order.tenant_id, &allocation).await?;
        line.stock_units += u32::try_from(taken).unwrap_or(0);
        let to_print = line.item.quantity.saturating_sub(line.stock_units);
        if to_print == 0 {
            line.item.status = LineItemStatus::Completed;
        }
        orders::set_line(tx, &line).await?;
        let entry = Entry::order(
            order.tenant_id,
            order.id,
            types::LINE_ITEM_SERVED_FROM_STOCK,
            Severity::Info,
            format!(
                "Line {}: {taken} of {} from stock, {to_print} to print",
                line.item.sku, line.item.quantity
            ),
        )
        .with_details(json!({
            "lineItemId": line.item.id,
            "sku": line.item.sku,
            "productMappingId": mapping_id,
            "fromStock": taken,
            "toPrint": to_print,
        }));
        event_log::append(tx, &entry).await?;
        statuses.push(line.item.status);
        served_any = true;
    }
    if !served_any {
        return Ok(Vec::new());
    }
    let next = order_status(order.status, &statuses, false);
    if next == order.status || !order.status.can_become(next) {
        return Ok(Vec::new());
    }
    orders::set_status(tx, order.id, next, None, None).await?;
    order_moved(tx, order, next).await.map_err(into_db_error)
}

/// Gives back the units the cancelled order `record` took from stock, in its cancellation's
/// transaction `tx`; logged per line.
pub async fn give_back(tx: &mut Tx, record: &OrderRecord) -> Result<(), DbError> {
    let order = &record.order;
    for returned in repository::give_back(tx, order.tenant_id, order.id).await? {
        let entry = Entry::order(
            order.tenant_id,
            order.id,
            types::LINE_ITEM_RETURNED_TO_STOCK,
            Severity::Info,
            format!("Line {}: {} back to stock", returned.sku, returned.units),
        )
        .with_details(json!({
            "lineItemId": returned.line_item_id,
            "sku": returned.sku,
            "productMappingId": returned.mapping_id,
            "units": returned.units,
        }));
        event_log::append(tx, &entry).await?;
    }
    Ok(())
}

/// The order's move writes only to the database; its error is a database error behind the bus
/// handlers' boxed type.
fn into_db_error(error: crate::events::bus::HandlerError) -> DbError {
    match error.downcast::<DbError>() {
        Ok(db) => *db,
        Err(other) => DbError::Sqlx(sqlx::Error::Protocol(other.to_string())),
    }
}
