//! Orders in from Shopify (SPEC §6.3): `orders/create`, `orders/updated` and `orders/cancelled`,
//! each in one transaction with the delivery's record, so a delivery Shopify repeats (it retries
//! for hours) changes nothing the second time.
//!
//! An order, its lines and its `order.created` event commit together before the webhook is
//! answered: once Shopify hears 200, the order exists and the print side will plan it.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::repository::{self, LinePlan};
use super::state::{LineItemStatus, OrderStatus, Status, order_status};
use super::{LineRecord, NewLineItem, NewOrder, Order, OrderRecord};
use crate::events::bridge;
use crate::events::internal::{self as internal_events, InternalEvent};
use crate::events::outbox;
use crate::infra::db::{Conn, DbError, Tx};
use crate::order::OrderCore;
use crate::order::event_log::{self, Entry, Severity, types};
use crate::order::inventory;
use crate::order::mappings::{ProductMapping, active_for_skus};
use crate::order::orchestration::lines_moved;
use crate::order::shopify::{self, Delivery};
use crate::print::plan::MAX_PRINTS_PER_LINE;

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    /// The order exists already: nothing was created.
    Exists,
    /// This delivery (or its event) was handled before.
    Duplicate,
    Updated,
    Cancelled,
    /// Acknowledged without change (logged): e.g. a cancellation of a shipped order.
    Unchanged,
    /// Nothing for forma to do, nothing stored: an order with nothing to print or ship (gift
    /// cards, digital products), or one Shopify had closed before forma heard of it.
    Ignored,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Exists => "exists",
            Outcome::Duplicate => "duplicate",
            Outcome::Updated => "updated",
            Outcome::Cancelled => "cancelled",
            Outcome::Unchanged => "unchanged",
            Outcome::Ignored => "ignored",
        }
    }
}

/// How a line with `sku` and `quantity` starts, given the tenant's active mapping of the SKU.
pub fn plan_line(quantity: u32, mapping: Option<&ProductMapping>) -> LinePlan {
    match mapping.filter(|m| !m.print_files.is_empty()) {
        None => LinePlan {
            status: LineItemStatus::Unmapped,
            mapping_id: None,
            print_files: None,
        },
        Some(mapping) => {
            let prints: u64 = mapping
                .print_files
                .iter()
                .map(|f| f.prints_for(quantity))
                .sum();
            LinePlan {
                // More prints than any real line needs: a mistake, shown instead of printed.
                status: if prints > MAX_PRINTS_PER_LINE {
                    LineItemStatus::Failed
                } else {
                    LineItemStatus::Pending
                },
                mapping_id: Some(mapping.id),
                print_files: Some(mapping.print_files.clone()),
            }
        }
    }
}

/// Plans every line of `new` with the tenant's mappings as `conn` sees them.
async fn plan_lines(
    conn: &mut Conn<'_>,
    new: &NewOrder,
) -> Result<Vec<(NewLineItem, LinePlan)>, DbError> {
    let skus: Vec<&str> = new.line_items.iter().map(|l| l.sku.as_str()).collect();
    let mappings = active_for_skus(conn, new.tenant_id, &skus).await?;
    Ok(new
        .line_items
        .iter()
        .map(|line| {
            (
                line.clone(),
                plan_line(line.quantity, mappings.get(&line.sku)),
            )
        })
        .collect())
}

/// The events written with a new order, in its transaction: the log entries, `order.created` and
/// the notice of its unmapped lines; returns the internal events to emit after commit.
async fn record_created(tx: &mut Tx, record: &OrderRecord) -> Result<Vec<InternalEvent>, DbError> {
    let order = &record.order;
    let entry = Entry::order(
        order.tenant_id,
        order.id,
        types::ORDER_CREATED,
        Severity::Info,
        format!("Order {} received from Shopify", order.order_number),
    )
    .with_details(json!({"status": order.status, "lines": record.lines.len()}));
    event_log::append(tx, &entry).await?;
    let unmapped = record
        .lines
        .iter()
        .filter(|l| l.item.status == LineItemStatus::Unmapped);
    let unmapped = record_unmapped(tx, order, unmapped).await?;
    let created = InternalEvent::OrderCreated(internal_events::OrderCreated {
        tenant_id: order.tenant_id,
        order_id: order.id,
        line_items: record
            .lines
            .iter()
            .map(|l| internal_events::OrderLineItem {
                line_item_id: l.item.id,
                product_sku: l.item.sku.clone(),
                quantity: l.item.quantity,
            })
            .collect(),
    });
    if let Some(event) = bridge::to_bus_event(&created, bridge::ORDER_SERVICE) {
        outbox::enqueue(tx, &event).await?;
    }
    // Told after `order.created`: the live view has the order when it hears of its lines.
    Ok([Some(created), unmapped].into_iter().flatten().collect())
}

/// Inserts `new` in `tx` with `lines` as planned, its lines served from stock first; `None` when
/// it exists. Returns the internal events to emit after commit.
async fn insert_new(
    tx: &mut Tx,
    new: &NewOrder,
    lines: &[(NewLineItem, LinePlan)],
) -> Result<Option<(OrderRecord, Vec<InternalEvent>)>, DbError> {
    let statuses: Vec<LineItemStatus> = lines.iter().map(|(_, plan)| plan.status).collect();
    let status = if statuses.is_empty() {
        OrderStatus::Pending
    } else {
        order_status(OrderStatus::Pending, &statuses, false)
    };
    let Some(record) = repository::insert(tx, new, status, lines).await? else {
        return Ok(None);
    };
    let mut events = record_created(tx, &record).await?;
    if record.order.status == OrderStatus::Failed {
        // Every line refused when planned: failed from the start, and told as any failure is.
        let reason = "No line can be printed as ordered";
        crate::order::notifications::order_failed(tx, &record.order, reason).await?;
        events.push(InternalEvent::OrderFailed(internal_events::OrderFailed {
            tenant_id: record.order.tenant_id,
            order_id: record.order.id,
            reason: reason.to_owned(),
        }));
    }
    // In the order's own transaction (SPEC §6.5b): two orders never both get the last unit.
    events.extend(inventory::serving::serve_new_order(tx, &record).await?);
    Ok(Some((record, events)))
}

/// An order without a line to print or ship (its lines were gift cards, digital products, or
/// removed): forma has nothing to do for it, and does not store it.
fn nothing_to_make(new: &NewOrder) -> bool {
    let nothing = new.line_items.is_empty();
    if nothing {
        tracing::info!(
            shopify_order_id = new.shopify_order_id,
            "a Shopify order with nothing to print or ship: not stored"
        );
    }
    nothing
}

/// `orders/create`: the order, once per tenant and Shopify order.
pub async fn create(
    core: &OrderCore,
    delivery: &Delivery,
    new: &NewOrder,
) -> Result<Outcome, DbError> {
    if nothing_to_make(new) {
        return Ok(Outcome::Ignored);
    }
    // Planned before the transaction: SQLite holds its one write lock from a transaction's first
    // write to its commit, and every statement inside is time every other writer waits.
    let lines = plan_lines(&mut Conn::Pool(&core.db), new).await?;
    let mut tx = core.db.begin().await?;
    if !shopify::first_delivery(&mut tx, delivery).await? {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    let Some((_, created)) = insert_new(&mut tx, new, &lines).await? else {
        // Keep the delivery's record: the same delivery again is a plain duplicate.
        tx.commit().await?;
        return Ok(Outcome::Exists);
    };
    tx.commit().await?;
    core.relay.notify();
    for event in created {
        core.events.emit(event).await;
    }
    Ok(Outcome::Created)
}

/// `orders/cancelled`: cancels the order (and, through `order.cancelled`, its open jobs). A
/// cancellation that overtook its create (Shopify retries each delivery on its own) stores the
/// order as cancelled, so the create that follows finds it and prints nothing.
pub async fn cancel(
    core: &OrderCore,
    delivery: &Delivery,
    new: &NewOrder,
    reason: Option<String>,
) -> Result<Outcome, DbError> {
    let reason = reason.unwrap_or_else(|| "Cancelled in Shopify".to_owned());
    let mut tx = core.db.begin().await?;
    if !shopify::first_delivery(&mut tx, delivery).await? {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    let record = match repository::lock_by_shopify_id(&mut tx, new.tenant_id, &new.shopify_order_id)
        .await?
    {
        Some(record) => record,
        // Stored even with no line left (a cancellation refunds them): its create may still come,
        // retried, and must find the order cancelled.
        None => match insert_cancelled(&mut tx, new, &reason).await? {
            true => {
                tx.commit().await?;
                return Ok(Outcome::Cancelled);
            }
            false => lock_created(&mut tx, new).await?,
        },
    };
    match super::cancellation::cancel_in(&mut tx, &record, &reason).await? {
        Some(events) => {
            tx.commit().await?;
            core.relay.notify();
            for event in events {
                core.events.emit(event).await;
            }
            Ok(Outcome::Cancelled)
        }
        None => {
            let entry = Entry::order(
                record.order.tenant_id,
                record.order.id,
                types::ORDER_UPDATE_IGNORED,
                Severity::Warning,
                format!(
                    "Shopify cancelled the order, but it is {} already",
                    record.order.status.as_str()
                ),
            );
            event_log::append(&mut tx, &entry).await?;
            tx.commit().await?;
            Ok(Outcome::Unchanged)
        }
    }
}

/// The order an insert of `new` found already there: its create committed meanwhile (PostgreSQL
/// waits for it on the unique key, then the insert does nothing), locked in `tx`.
async fn lock_created(tx: &mut Tx, new: &NewOrder) -> Result<OrderRecord, DbError> {
    repository::lock_by_shopify_id(tx, new.tenant_id, &new.shopify_order_id)
        .await?
        .ok_or(DbError::Sqlx(sqlx::Error::RowNotFound))
}

/// Stores an order forma hears of first through its cancellation: CANCELLED, every line too, with
/// nothing planned and nothing announced (no job, no stock, no `order.created`). `false` when the
/// tenant has the order already.
async fn insert_cancelled(tx: &mut Tx, new: &NewOrder, reason: &str) -> Result<bool, DbError> {
    let lines: Vec<(NewLineItem, LinePlan)> = new
        .line_items
        .iter()
        .map(|line| {
            let plan = LinePlan {
                status: LineItemStatus::Cancelled,
                mapping_id: None,
                print_files: None,
            };
            (line.clone(), plan)
        })
        .collect();
    let Some(record) = repository::insert(tx, new, OrderStatus::Cancelled, &lines).await? else {
        return Ok(false);
    };
    let order = &record.order;
    repository::set_status(tx, order.id, OrderStatus::Cancelled, None, Some(reason)).await?;
    let entry = Entry::order(
        order.tenant_id,
        order.id,
        types::ORDER_CANCELLED,
        Severity::Warning,
        format!(
            "Order {} cancelled in Shopify before forma received it: {reason}",
            order.order_number
        ),
    )
    .with_details(json!({"reason": reason, "lines": record.lines.len()}));
    event_log::append(tx, &entry).await?;
    tracing::info!(order = %order.id, shopify_order_id = new.shopify_order_id, "orders/cancelled came before the order: stored as cancelled");
    Ok(true)
}

/// Lines that wait for a product mapping, in the order's transaction: a warning in the event log
/// for each, and one notification (SPEC §6.2, §6.5) naming their SKUs, e-mailed (recorded here)
/// and told live (the internal event returned, to emit after commit).
async fn record_unmapped<'a>(
    tx: &mut Tx,
    order: &Order,
    lines: impl IntoIterator<Item = &'a LineRecord>,
) -> Result<Option<InternalEvent>, DbError> {
    let lines: Vec<&LineRecord> = lines.into_iter().collect();
    for line in &lines {
        let entry = Entry::order(
            order.tenant_id,
            order.id,
            types::LINE_ITEM_UNMAPPED,
            Severity::Warning,
            format!("No active product mapping for SKU {:?}", line.item.sku),
        )
        .with_details(json!({"lineItemId": line.item.id, "sku": line.item.sku}));
        event_log::append(tx, &entry).await?;
        tracing::warn!(order = %order.id, sku = line.item.sku, "a line has no product mapping");
    }
    if lines.is_empty() {
        return Ok(None);
    }
    let skus: Vec<&str> = lines.iter().map(|l| l.item.sku.as_str()).collect();
    crate::order::notifications::unmapped_skus(tx, order, &skus).await?;
    let mut named: Vec<String> = Vec::with_capacity(skus.len());
    for sku in skus {
        if !named.iter().any(|n| n == sku) {
            named.push(sku.to_owned());
        }
    }
    Ok(Some(InternalEvent::OrderLinesUnmapped(
        internal_events::OrderLinesUnmapped {
            tenant_id: order.tenant_id,
            order_id: order.id,
            skus: named,
        },
    )))
}

/// `orders/updated`: who and where always (until shipped); the lines only while nothing of the
/// order has started printing, and then the changed lines are planned anew. An update about an
/// order forma does not have creates it, unless Shopify has `closed` it (cancelled, or fulfilled
/// already: an old order the merchant touched, not one to print).
pub async fn update(
    core: &OrderCore,
    delivery: &Delivery,
    new: &NewOrder,
    closed: bool,
) -> Result<Outcome, DbError> {
    let mut tx = core.db.begin().await?;
    if !shopify::first_delivery(&mut tx, delivery).await? {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    let record = match repository::lock_by_shopify_id(&mut tx, new.tenant_id, &new.shopify_order_id)
        .await?
    {
        Some(record) => record,
        None if closed => {
            tx.commit().await?;
            tracing::info!(
                shopify_order_id = new.shopify_order_id,
                "orders/updated for a closed order forma does not have: not created"
            );
            return Ok(Outcome::Unchanged);
        }
        None if nothing_to_make(new) => {
            tx.commit().await?;
            return Ok(Outcome::Ignored);
        }
        None => {
            // An update that overtook its create: the order as it is now.
            let lines = plan_lines(&mut Conn::Tx(&mut tx), new).await?;
            if let Some((_, created)) = insert_new(&mut tx, new, &lines).await? {
                tx.commit().await?;
                core.relay.notify();
                for event in created {
                    core.events.emit(event).await;
                }
                return Ok(Outcome::Created);
            }
            // The update applies to it.
            lock_created(&mut tx, new).await?
        }
    };
    let order = &record.order;
    if matches!(
        order.status,
        OrderStatus::Shipped | OrderStatus::Fulfilled | OrderStatus::Cancelled
    ) {
        tx.commit().await?;
        return Ok(Outcome::Unchanged);
    }
    if let Some(newer) = newer_version(&mut tx, order, new).await? {
        let entry = Entry::order(
            order.tenant_id,
            order.id,
            types::ORDER_UPDATE_IGNORED,
            Severity::Info,
            format!(
                "Shopify's version of the order from {} arrived after the one from {newer}; \
                 the newer one was kept",
                new.shopify_updated_at
                    .map_or_else(String::new, |at| at.to_rfc3339())
            ),
        );
        event_log::append(&mut tx, &entry).await?;
        tx.commit().await?;
        return Ok(Outcome::Unchanged);
    }
    repository::set_customer(&mut tx, order.id, new).await?;
    let (replanned, events) = update_lines(&mut tx, &record, new).await?;
    let replan = if replanned {
        Some(super::replanning::mark(&mut tx, order.id).await?)
    } else {
        None
    };
    tx.commit().await?;
    if !events.is_empty() {
        core.relay.notify();
    }
    for event in events {
        core.events.emit(event).await;
    }
    if let Some(mark) = replan {
        // The new plan's jobs, and the end of the old plan's: outside the transaction, as calls to
        // the print service never hold a write lock. A failure is logged and tried again.
        let _tried = super::replanning::now(core, order.tenant_id, order.id, mark).await;
    }
    Ok(Outcome::Updated)
}

/// When `order` holds a version from Shopify newer than the document `new`: Shopify does not
/// deliver webhooks in order, and retries one it could not deliver for hours, so an older
/// document can arrive after a newer one was applied. Documents of one second (Shopify's
/// precision) are applied in the order they arrive.
async fn newer_version(
    tx: &mut Tx,
    order: &Order,
    new: &NewOrder,
) -> Result<Option<DateTime<Utc>>, DbError> {
    let Some(incoming) = new.shopify_updated_at else {
        return Ok(None);
    };
    let applied = repository::shopify_updated_at(tx, order.id).await?;
    Ok(applied.filter(|applied| *applied > incoming))
}

/// Applies Shopify's lines to a locked order whose lines have not started printing. A changed or
/// removed line gives back what it took from stock, and a changed or new line is served from
/// stock anew. Returns whether any line needs planning anew, and the internal events to emit after
/// commit (the order's move, if it moved; lines newly waiting for a mapping).
async fn update_lines(
    tx: &mut Tx,
    record: &OrderRecord,
    new: &NewOrder,
) -> Result<(bool, Vec<InternalEvent>), DbError> {
    let order = &record.order;
    let current: HashMap<&str, &LineRecord> = record
        .lines
        .iter()
        .map(|l| (l.item.shopify_line_item_id.as_str(), l))
        .collect();
    let incoming: HashMap<&str, &NewLineItem> = new
        .line_items
        .iter()
        .map(|l| (l.shopify_line_item_id.as_str(), l))
        .collect();
    let changed_lines = new.line_items.iter().any(|l| {
        current
            .get(l.shopify_line_item_id.as_str())
            .is_none_or(|c| c.item.quantity != l.quantity || c.item.sku != l.sku)
    }) || record.lines.iter().any(|l| {
        l.item.status != LineItemStatus::Cancelled
            && !incoming.contains_key(l.item.shopify_line_item_id.as_str())
    });
    if !changed_lines {
        return Ok((false, Vec::new()));
    }
    // A line served wholly from stock has not started: its units wait on the shelf, and go back
    // there. Once the order is ready for fulfillment, though, its parcel is on its way.
    let open = matches!(order.status, OrderStatus::Pending | OrderStatus::Processing);
    let started = !open
        || record.lines.iter().any(|l| match l.item.status {
            LineItemStatus::Pending | LineItemStatus::Unmapped | LineItemStatus::Cancelled => false,
            LineItemStatus::Completed => l.stock_units < l.item.quantity,
            _ => true,
        });
    if started {
        let entry = Entry::order(
            order.tenant_id,
            order.id,
            types::ORDER_UPDATE_IGNORED,
            Severity::Warning,
            "Shopify changed the lines of an order already being made; the lines were kept",
        );
        event_log::append(tx, &entry).await?;
        return Ok((false, Vec::new()));
    }
    let skus: Vec<&str> = new.line_items.iter().map(|l| l.sku.as_str()).collect();
    let mappings = active_for_skus(&mut Conn::Tx(tx), order.tenant_id, &skus).await?;
    let now = Utc::now();
    // Every line as it is now, and those planned anew (served from stock first).
    let mut lines = Vec::with_capacity(record.lines.len() + new.line_items.len());
    let mut replanned_lines = HashSet::new();
    // Lines that wait for a mapping now and did not before (or waited for another SKU's).
    let mut unmapped = Vec::new();
    for line in &record.lines {
        let shopify_id = line.item.shopify_line_item_id.as_str();
        let mut updated = line.clone();
        match incoming.get(shopify_id) {
            None => {
                // As Shopify keeps a removed line: no units left.
                updated.item.status = LineItemStatus::Cancelled;
                updated.item.quantity = 0;
                updated.plan_generation += 1;
            }
            Some(next) if next.quantity != line.item.quantity || next.sku != line.item.sku => {
                let plan = plan_line(next.quantity, mappings.get(&next.sku));
                updated.item.quantity = next.quantity;
                updated.item.sku = next.sku.clone();
                updated.item.product_name = next.product_name.clone();
                updated.item.unit_price = next.unit_price.clone();
                updated.item.status = plan.status;
                updated.item.product_mapping_id = plan.mapping_id;
                updated.print_files = plan.print_files;
                updated.plan_generation += 1;
            }
            Some(_) => {}
        }
        let replanned = updated.plan_generation != line.plan_generation;
        if replanned {
            inventory::serving::give_back_line(tx, order, &mut updated).await?;
        }
        if updated != *line {
            repository::set_line(tx, &updated).await?;
            if updated.item.status == LineItemStatus::Unmapped
                && (line.item.status != LineItemStatus::Unmapped
                    || updated.item.sku != line.item.sku)
            {
                unmapped.push(updated.clone());
            }
        }
        if replanned {
            replanned_lines.insert(updated.item.id);
        }
        lines.push(updated);
    }
    for (position, next) in new.line_items.iter().enumerate() {
        if current.contains_key(next.shopify_line_item_id.as_str()) {
            continue;
        }
        let plan = plan_line(next.quantity, mappings.get(&next.sku));
        let position = record.lines.len() + position;
        let line =
            repository::insert_line(tx, order.tenant_id, order.id, position, next, &plan, now)
                .await?;
        if line.item.status == LineItemStatus::Unmapped {
            unmapped.push(line.clone());
        }
        replanned_lines.insert(line.item.id);
        lines.push(line);
    }
    let unmapped = record_unmapped(tx, order, &unmapped).await?;
    // After every give-back: a line may take what another line of the order gave back.
    let replanned = lines
        .iter_mut()
        .filter(|l| replanned_lines.contains(&l.item.id))
        .collect();
    inventory::serving::serve_lines(tx, order, replanned).await?;
    let entry = Entry::order(
        order.tenant_id,
        order.id,
        types::ORDER_UPDATED,
        Severity::Info,
        "Shopify changed the order's lines; they are planned anew",
    );
    event_log::append(tx, &entry).await?;
    let statuses: Vec<LineItemStatus> = lines
        .iter()
        .filter(|l| !l.is_removed())
        .map(|l| l.item.status)
        .collect();
    let mut events = lines_moved(tx, order, &statuses).await?;
    events.extend(unmapped);
    Ok((true, events))
}
