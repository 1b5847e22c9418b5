//! The stock of each product (`inventory_levels`) and what order lines took from it
//! (`stock_allocations`).
//!
//! Stock never goes negative, whatever runs at once: every take is a conditional
//! `UPDATE … WHERE stock_on_hand >= n`, and the table's CHECK refuses anything else.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{InventoryEntry, InventoryUpdate, SkuUnits, StockFigures};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Conn, Db, DbError, Tx};
use crate::{on_conn, on_pool, on_tx};

/// Every mapping of the tenant has an entry: one without a row has target 0 and no stock.
const ENTRY_SELECT: &str = "SELECT m.id AS mapping_id, m.sku, m.product_name, \
    COALESCE(l.stock_target, 0) AS stock_target, COALESCE(l.stock_on_hand, 0) AS stock_on_hand, \
    COALESCE(l.batch_size, 1) AS batch_size, COALESCE(l.replenish, TRUE) AS replenish, \
    COALESCE((SELECT CAST(SUM(b.units) AS BIGINT) FROM stock_batches b \
        WHERE b.mapping_id = m.id AND b.status = 'OPEN'), 0) AS in_production, \
    (SELECT COUNT(*) FROM stock_batches b WHERE b.mapping_id = m.id AND b.status = 'OPEN') \
        AS open_batches \
    FROM product_mappings m LEFT JOIN inventory_levels l ON l.mapping_id = m.id";

#[derive(sqlx::FromRow)]
struct EntryRow {
    mapping_id: Uuid,
    sku: String,
    product_name: String,
    stock_target: i64,
    stock_on_hand: i64,
    batch_size: i64,
    replenish: bool,
    in_production: i64,
    open_batches: i64,
}

impl From<EntryRow> for InventoryEntry {
    fn from(row: EntryRow) -> Self {
        Self {
            mapping_id: row.mapping_id,
            sku: row.sku,
            product_name: row.product_name,
            stock_target: row.stock_target,
            stock_on_hand: row.stock_on_hand,
            batch_size: row.batch_size,
            replenish: row.replenish,
            in_production: row.in_production,
            open_batches: row.open_batches,
        }
    }
}

/// One page of the tenant's products with their stock, by SKU, and how many there are.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    page: PageRequest,
) -> Result<(Vec<InventoryEntry>, i64), DbError> {
    let (limit, offset) = page.limit_offset();
    let sql = sqlx::AssertSqlSafe(format!(
        "{ENTRY_SELECT} WHERE m.tenant_id = $1 ORDER BY m.sku, m.id LIMIT $2 OFFSET $3"
    ));
    // One snapshot, so the page and the count agree while products are mapped.
    let mut tx = db.snapshot().await?;
    let rows = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, EntryRow>(sql)
            .bind(tenant_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    let total = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM product_mappings WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((rows.into_iter().map(InventoryEntry::from).collect(), total))
}

/// The stock of mapping `mapping_id` of the tenant; `None` when there is no such mapping.
pub async fn find(
    conn: &mut Conn<'_>,
    tenant_id: Uuid,
    mapping_id: Uuid,
) -> Result<Option<InventoryEntry>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "{ENTRY_SELECT} WHERE m.tenant_id = $1 AND m.id = $2"
    ));
    let row = on_conn!(conn, c => {
        sqlx::query_as::<_, EntryRow>(sql)
            .bind(tenant_id)
            .bind(mapping_id)
            .fetch_optional(c)
            .await
    })?;
    Ok(row.map(InventoryEntry::from))
}

/// Applies `update` to the mapping's stock in `tx`; the entry before and after, or `None` when the
/// tenant has no such mapping.
pub async fn update(
    tx: &mut Tx,
    tenant_id: Uuid,
    mapping_id: Uuid,
    update: &InventoryUpdate,
) -> Result<Option<(InventoryEntry, InventoryEntry)>, DbError> {
    let now = Utc::now();
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO inventory_levels (mapping_id, tenant_id, updated_at) \
             SELECT id, tenant_id, $3 FROM product_mappings WHERE tenant_id = $1 AND id = $2 \
             ON CONFLICT (mapping_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(mapping_id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(drop)
    })?;
    let Some(before) = find(&mut Conn::Tx(tx), tenant_id, mapping_id).await? else {
        return Ok(None);
    };
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE inventory_levels SET stock_target = COALESCE($3, stock_target), \
             batch_size = COALESCE($4, batch_size), stock_on_hand = COALESCE($5, stock_on_hand), \
             replenish = COALESCE($6, replenish), updated_at = $7 \
             WHERE tenant_id = $1 AND mapping_id = $2",
        )
        .bind(tenant_id)
        .bind(mapping_id)
        .bind(update.stock_target)
        .bind(update.batch_size)
        .bind(update.stock_on_hand)
        .bind(update.replenish)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(drop)
    })?;
    let after = find(&mut Conn::Tx(tx), tenant_id, mapping_id).await?;
    Ok(after.map(|after| (before, after)))
}

/// Takes up to `wanted` units of the mapping's stock in `tx`; returns how many it took (0 when
/// there is none). Two transactions racing for the last unit never both get it: the UPDATE only
/// succeeds while the stock covers it (PostgreSQL re-checks the condition on the row a concurrent
/// take just changed; SQLite has one writer), and a take that lost the race reads again.
pub async fn take(
    tx: &mut Tx,
    tenant_id: Uuid,
    mapping_id: Uuid,
    wanted: i64,
) -> Result<i64, DbError> {
    // Every lost race means another take succeeded, so this ends; the bound only guards a bug.
    for _ in 0..1_000 {
        let on_hand = on_tx!(tx, conn => {
            sqlx::query_scalar::<_, i64>(
                "SELECT stock_on_hand FROM inventory_levels WHERE tenant_id = $1 AND mapping_id = $2",
            )
            .bind(tenant_id)
            .bind(mapping_id)
            .fetch_optional(&mut *conn)
            .await
        })?;
        let units = wanted.min(on_hand.unwrap_or(0));
        if units <= 0 {
            return Ok(0);
        }
        let taken = on_tx!(tx, conn => {
            sqlx::query(
                "UPDATE inventory_levels SET stock_on_hand = stock_on_hand - $3, updated_at = $4 \
                 WHERE tenant_id = $1 AND mapping_id = $2 AND stock_on_hand >= $3",
            )
            .bind(tenant_id)
            .bind(mapping_id)
            .bind(units)
            .bind(Utc::now())
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        if taken == 1 {
            return Ok(units);
        }
    }
    tracing::error!(%mapping_id, "taking stock kept losing races; nothing taken");
    Ok(0)
}

/// Adds `units` to the mapping's stock in `tx` (a completed batch, units given back).
pub async fn add(tx: &mut Tx, mapping_id: Uuid, units: i64) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE inventory_levels SET stock_on_hand = stock_on_hand + $2, updated_at = $3 \
             WHERE mapping_id = $1",
        )
        .bind(mapping_id)
        .bind(units)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Units one order line took from stock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Allocation {
    pub line_item_id: Uuid,
    pub order_id: Uuid,
    pub mapping_id: Uuid,
    pub sku: String,
    pub units: i64,
}

/// Records that a line took units from stock, in the transaction that took them. A line has one
/// allocation: one it gave back (Shopify changed the line) is replaced by what it takes anew.
pub async fn record_allocation(
    tx: &mut Tx,
    tenant_id: Uuid,
    allocation: &Allocation,
) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO stock_allocations (line_item_id, tenant_id, order_id, mapping_id, sku, \
             units, allocated_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (line_item_id) DO UPDATE SET mapping_id = excluded.mapping_id, \
               sku = excluded.sku, units = excluded.units, allocated_at = excluded.allocated_at, \
               returned_at = NULL \
             WHERE stock_allocations.returned_at IS NOT NULL",
        )
        .bind(allocation.line_item_id)
        .bind(tenant_id)
        .bind(allocation.order_id)
        .bind(allocation.mapping_id)
        .bind(&allocation.sku)
        .bind(allocation.units)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Gives the units an order took from stock back, once (a second cancellation finds nothing to
/// give): every line's, or only `line`'s. Returns what went back.
pub async fn give_back(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
    line: Option<Uuid>,
) -> Result<Vec<Allocation>, DbError> {
    let returned = on_tx!(tx, conn => {
        sqlx::query_as::<_, Allocation>(
            "UPDATE stock_allocations SET returned_at = $3 \
             WHERE tenant_id = $1 AND order_id = $2 AND returned_at IS NULL \
             AND ($4 IS NULL OR line_item_id = $4) \
             RETURNING line_item_id, order_id, mapping_id, sku, units",
        )
        .bind(tenant_id)
        .bind(order_id)
        .bind(Utc::now())
        .bind(line)
        .fetch_all(&mut *conn)
        .await
    })?;
    for allocation in &returned {
        add(tx, allocation.mapping_id, allocation.units).await?;
    }
    Ok(returned)
}

#[derive(sqlx::FromRow)]
struct SkuRow {
    sku: String,
    units: i64,
}

/// Stock figures for analytics: units served from stock in `[from, to]`, both ends included as in
/// every figure of the overview (units given back by a cancellation do not count), per SKU, and
/// the stock on hand per SKU now.
pub async fn stock_figures(
    db: &Db,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<StockFigures, DbError> {
    let served = on_pool!(db, pool => {
        sqlx::query_as::<_, SkuRow>(
            "SELECT sku, CAST(SUM(units) AS BIGINT) AS units FROM stock_allocations \
             WHERE tenant_id = $1 AND allocated_at >= $2 AND allocated_at <= $3 \
             AND returned_at IS NULL GROUP BY sku ORDER BY sku",
        )
        .bind(tenant_id)
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await
    })?;
    let on_hand = on_pool!(db, pool => {
        sqlx::query_as::<_, SkuRow>(
            "SELECT m.sku, l.stock_on_hand AS units FROM inventory_levels l \
             JOIN product_mappings m ON m.id = l.mapping_id WHERE l.tenant_id = $1 ORDER BY m.sku",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })?;
    let to_units = |rows: Vec<SkuRow>| -> Vec<SkuUnits> {
        rows.into_iter()
            .map(|r| SkuUnits {
                sku: r.sku,
                units: r.units,
            })
            .collect()
    };
    let served = to_units(served);
    Ok(StockFigures {
        total_served_from_stock: served.iter().map(|s| s.units).sum(),
        served_from_stock: served,
        on_hand: to_units(on_hand),
    })
}
