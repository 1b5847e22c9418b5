//! Serving order lines from stock (SPEC §6.5b): a new order's lines take what stock there is in
//! the transaction that stores the order, so the units are the order's exactly when the order
//! exists. Only the rest of a line is printed; a line served wholly from stock is COMPLETED at
//! once, and the order moves on through the one state machine. Cancelling the order gives the
//! units back, once; so does Shopify changing or removing a line, whose new quantity is then served
//! anew.

use serde_json::json;
use uuid::Uuid;

use super::repository::{self, Allocation};
use crate::events::internal::InternalEvent;
use crate::infra::db::{DbError, Tx};
use crate::order::event_log::{self, Entry, Severity, types};
use crate::order::orchestration::lines_moved;
use crate::order::orders::state::LineItemStatus;
use crate::order::orders::{LineRecord, Order, OrderRecord, repository as orders};

/// Takes stock for the lines of the new order `record` in its transaction `tx`; returns the
/// internal events of the order's move, if it moved (every line served: ready for fulfillment).
pub async fn serve_new_order(
    tx: &mut Tx,
    record: &OrderRecord,
) -> Result<Vec<InternalEvent>, DbError> {
    let mut lines = record.lines.clone();
    if !serve_lines(tx, &record.order, lines.iter_mut().collect()).await? {
        return Ok(Vec::new());
    }
    let statuses: Vec<LineItemStatus> = lines.iter().map(|l| l.item.status).collect();
    lines_moved(tx, &record.order, &statuses).await
}

/// Serves `lines` of `order` from stock in `tx`: each line to print takes what stock there is for
/// the units it has not taken yet, and is COMPLETED when that is all of them. Writes and logs each
/// line it served, and changes `lines` to match; returns whether it served any. The order's status
/// is the caller's to derive.
pub async fn serve_lines(
    tx: &mut Tx,
    order: &Order,
    lines: Vec<&mut LineRecord>,
) -> Result<bool, DbError> {
    let mut served_any = false;
    for line in lines {
        // Lines to print only: not unmapped ones, not ones refused as too large.
        let mapping_id = match (line.item.status, line.item.product_mapping_id) {
            (LineItemStatus::Pending, Some(mapping_id)) => mapping_id,
            _ => continue,
        };
        let wanted = i64::from(line.item.quantity.saturating_sub(line.stock_units));
        let taken = repository::take(tx, order.tenant_id, mapping_id, wanted).await?;
        if taken == 0 {
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
        orders::set_line(tx, line).await?;
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
        served_any = true;
    }
    Ok(served_any)
}

/// Gives back the units the cancelled order `record` took from stock, in its cancellation's
/// transaction `tx`; logged per line.
pub async fn give_back(tx: &mut Tx, record: &OrderRecord) -> Result<(), DbError> {
    give_back_of(tx, &record.order, None).await
}

/// Gives back the units `line` of `order` took from stock, in `tx`, and takes them off the line:
/// Shopify changed or removed it, and what it needs now is served anew.
pub async fn give_back_line(
    tx: &mut Tx,
    order: &Order,
    line: &mut LineRecord,
) -> Result<(), DbError> {
    if line.stock_units > 0 {
        give_back_of(tx, order, Some(line.item.id)).await?;
        line.stock_units = 0;
    }
    Ok(())
}

async fn give_back_of(tx: &mut Tx, order: &Order, line: Option<Uuid>) -> Result<(), DbError> {
    for returned in repository::give_back(tx, order.tenant_id, order.id, line).await? {
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
