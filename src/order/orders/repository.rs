//! The `orders` and `line_items` tables.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::state::Status;
use super::{
    LineItem, LineItemStatus, LineRecord, NewLineItem, NewOrder, Order, OrderRecord, OrderStatus,
    ShippingAddress,
};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Conn, Db, DbError, Tx, contains_pattern};
use crate::order::mappings::PrintFile;
use crate::{on_conn, on_tx};

const ORDER_COLUMNS: &str = "id, tenant_id, shopify_order_id, order_number, customer_name, \
    customer_email, shipping_address, status, total_price, currency, tracking_number, tracking_url, \
    carrier, jobs_version, created_at, updated_at, shop_domain";
const LINE_COLUMNS: &str = "id, order_id, shopify_line_item_id, sku, product_name, quantity, \
    unit_price, status, product_mapping_id, print_files, plan_generation, stock_units";

#[derive(sqlx::FromRow)]
struct OrderRow {
    id: Uuid,
    tenant_id: Uuid,
    shopify_order_id: String,
    order_number: String,
    customer_name: String,
    customer_email: Option<String>,
    shipping_address: Option<String>,
    status: String,
    total_price: String,
    currency: String,
    tracking_number: Option<String>,
    tracking_url: Option<String>,
    carrier: Option<String>,
    jobs_version: i64,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    shop_domain: Option<String>,
}

#[derive(sqlx::FromRow)]
struct LineRow {
    id: Uuid,
    order_id: Uuid,
    shopify_line_item_id: String,
    sku: String,
    product_name: String,
    quantity: i64,
    unit_price: String,
    status: String,
    product_mapping_id: Option<Uuid>,
    print_files: Option<String>,
    plan_generation: i64,
    stock_units: i64,
}

fn parse_status<S: Status>(text: &str, id: Uuid) -> S {
    S::parse(text).unwrap_or_else(|| {
        tracing::error!(%id, status = text, "unknown {} status in the database", S::ENTITY);
        S::ALL[0]
    })
}

impl OrderRow {
    fn into_record(self, lines: Vec<LineRecord>) -> OrderRecord {
        let shipping_address = self
            .shipping_address
            .as_deref()
            .and_then(|json| serde_json::from_str::<ShippingAddress>(json).ok());
        OrderRecord {
            order: Order {
                id: self.id,
                tenant_id: self.tenant_id,
                shopify_order_id: self.shopify_order_id,
                shop_domain: self.shop_domain,
                order_number: self.order_number,
                customer_name: self.customer_name,
                customer_email: self.customer_email,
                shipping_address,
                status: parse_status(&self.status, self.id),
                total_price: self.total_price,
                currency: self.currency,
                line_items: Vec::new(),
                tracking_number: self.tracking_number,
                tracking_url: self.tracking_url,
                carrier: self.carrier,
                created_at: self.created_at,
                updated_at: self.updated_at,
            },
            lines,
            jobs_version: self.jobs_version,
        }
        .with_public_lines()
    }
}

impl OrderRecord {
    fn with_public_lines(mut self) -> Self {
        self.order.line_items = self.lines.iter().map(|l| l.item.clone()).collect();
        self
    }
}

impl LineRow {
    fn into_record(self) -> LineRecord {
        LineRecord {
            item: LineItem {
                id: self.id,
                shopify_line_item_id: self.shopify_line_item_id,
                sku: self.sku,
                product_name: self.product_name,
                quantity: u32::try_from(self.quantity).unwrap_or(0),
                unit_price: self.unit_price,
                status: parse_status(&self.status, self.id),
                product_mapping_id: self.product_mapping_id,
            },
            print_files: self
                .print_files
                .as_deref()
                .and_then(|json| serde_json::from_str::<Vec<PrintFile>>(json).ok()),
            plan_generation: u32::try_from(self.plan_generation).unwrap_or(1),
            stock_units: u32::try_from(self.stock_units).unwrap_or(0),
        }
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, DbError> {
    serde_json::to_string(value).map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))
}

/// How a new line starts: its status and, when mapped, what it is printed from.
#[derive(Debug, Clone)]
pub struct LinePlan {
    pub status: LineItemStatus,
    pub mapping_id: Option<Uuid>,
    pub print_files: Option<Vec<PrintFile>>,
}

/// Stores a new order and its lines in `tx`; `None` when the tenant has this Shopify order
/// already (nothing is written then).
pub async fn insert(
    tx: &mut Tx,
    new: &NewOrder,
    status: OrderStatus,
    lines: &[(NewLineItem, LinePlan)],
) -> Result<Option<OrderRecord>, DbError> {
    let now = Utc::now();
    let id = Uuid::now_v7();
    let address = new.shipping_address.as_ref().map(encode).transpose()?;
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO orders ({ORDER_COLUMNS}, shopify_updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, NULL, NULL, NULL, 0, $11, $11, $12, $13) \
         ON CONFLICT (tenant_id, shopify_order_id) DO NOTHING RETURNING {ORDER_COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, OrderRow>(sql)
            .bind(id)
            .bind(new.tenant_id)
            .bind(&new.shopify_order_id)
            .bind(&new.order_number)
            .bind(&new.customer_name)
            .bind(new.customer_email.as_deref())
            .bind(address.as_deref())
            .bind(status.as_str())
            .bind(&new.total_price)
            .bind(&new.currency)
            .bind(now)
            .bind(new.shop_domain.as_deref())
            .bind(new.shopify_updated_at)
            .fetch_optional(&mut *conn)
            .await
    })?;
    let Some(row) = row else { return Ok(None) };
    let records = insert_lines(tx, new.tenant_id, id, 0, lines, now).await?;
    Ok(Some(row.into_record(records)))
}

/// Rows per multi-row INSERT: 12 parameters each stays far below SQLite's limit of 32 766.
const LINES_PER_STATEMENT: usize = 500;

/// Inserts `lines` of an order at positions `first_position…`, a few hundred rows per statement:
/// one round trip instead of one per line.
async fn insert_lines(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
    first_position: usize,
    lines: &[(NewLineItem, LinePlan)],
    now: DateTime<Utc>,
) -> Result<Vec<LineRecord>, DbError> {
    let mut records = Vec::with_capacity(lines.len());
    for (chunk_index, chunk) in lines.chunks(LINES_PER_STATEMENT).enumerate() {
        let values = (0..chunk.len())
            .map(|i| {
                let p = 3 + i * 10;
                format!(
                    "(${}, $1, $2, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, 1, $3, $3)",
                    p + 1,
                    p + 2,
                    p + 3,
                    p + 4,
                    p + 5,
                    p + 6,
                    p + 7,
                    p + 8,
                    p + 9,
                    p + 10
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO line_items (id, tenant_id, order_id, position, shopify_line_item_id, sku, \
             product_name, quantity, unit_price, status, product_mapping_id, print_files, \
             plan_generation, created_at, updated_at) VALUES {values} RETURNING {LINE_COLUMNS}, position"
        );
        let mut files = Vec::with_capacity(chunk.len());
        for (_, plan) in chunk {
            files.push(plan.print_files.as_ref().map(encode).transpose()?);
        }
        let rows = on_tx!(tx, conn => {
            let mut query = sqlx::query_as::<_, PositionedLine>(sqlx::AssertSqlSafe(sql))
                .bind(tenant_id)
                .bind(order_id)
                .bind(now);
            for (i, ((line, plan), files)) in chunk.iter().zip(&files).enumerate() {
                let position = first_position + chunk_index * LINES_PER_STATEMENT + i;
                query = query
                    .bind(Uuid::now_v7())
                    .bind(position as i64)
                    .bind(&line.shopify_line_item_id)
                    .bind(&line.sku)
                    .bind(&line.product_name)
                    .bind(i64::from(line.quantity))
                    .bind(&line.unit_price)
                    .bind(plan.status.as_str())
                    .bind(plan.mapping_id)
                    .bind(files.as_deref());
            }
            query.fetch_all(&mut *conn).await
        })?;
        let mut rows = rows;
        // RETURNING promises no order.
        rows.sort_by_key(|r| r.position);
        records.extend(rows.into_iter().map(|r| r.line.into_record()));
    }
    Ok(records)
}

#[derive(sqlx::FromRow)]
struct PositionedLine {
    #[sqlx(flatten)]
    line: LineRow,
    position: i64,
}

/// Adds a line to an existing order (a line added in Shopify before anything printed).
pub async fn insert_line(
    tx: &mut Tx,
    tenant_id: Uuid,
    order_id: Uuid,
    position: usize,
    line: &NewLineItem,
    plan: &LinePlan,
    now: DateTime<Utc>,
) -> Result<LineRecord, DbError> {
    let lines = [(line.clone(), plan.clone())];
    let mut records = insert_lines(tx, tenant_id, order_id, position, &lines, now).await?;
    records.pop().ok_or(DbError::Sqlx(sqlx::Error::RowNotFound))
}

/// The lines of `order_ids`, by order, in their Shopify order.
async fn lines_of(
    conn: &mut Conn<'_>,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Vec<LineRecord>>, DbError> {
    let mut by_order: HashMap<Uuid, Vec<LineRecord>> = HashMap::new();
    if order_ids.is_empty() {
        return Ok(by_order);
    }
    let placeholders = (1..=order_ids.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {LINE_COLUMNS} FROM line_items WHERE order_id IN ({placeholders}) \
         ORDER BY order_id, position"
    );
    let rows = on_conn!(conn, c => {
        let mut query = sqlx::query_as::<_, LineRow>(sqlx::AssertSqlSafe(sql.clone()));
        for id in order_ids {
            query = query.bind(*id);
        }
        query.fetch_all(c).await
    })?;
    for row in rows {
        by_order
            .entry(row.order_id)
            .or_default()
            .push(row.into_record());
    }
    Ok(by_order)
}

async fn with_lines(
    conn: &mut Conn<'_>,
    row: Option<OrderRow>,
) -> Result<Option<OrderRecord>, DbError> {
    let Some(row) = row else { return Ok(None) };
    let lines = lines_of(conn, &[row.id])
        .await?
        .remove(&row.id)
        .unwrap_or_default();
    Ok(Some(row.into_record(lines)))
}

/// The tenant's order `id`, with its lines.
pub async fn find(
    conn: &mut Conn<'_>,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<Option<OrderRecord>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND id = $2"
    ));
    let row = on_conn!(conn, c => {
        sqlx::query_as::<_, OrderRow>(sql).bind(tenant_id).bind(id).fetch_optional(c).await
    })?;
    with_lines(conn, row).await
}

/// The tenant's order with Shopify's id `shopify_order_id`.
pub async fn find_by_shopify_id(
    conn: &mut Conn<'_>,
    tenant_id: Uuid,
    shopify_order_id: &str,
) -> Result<Option<OrderRecord>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE tenant_id = $1 AND shopify_order_id = $2"
    ));
    let row = on_conn!(conn, c => {
        sqlx::query_as::<_, OrderRow>(sql)
            .bind(tenant_id)
            .bind(shopify_order_id)
            .fetch_optional(c)
            .await
    })?;
    with_lines(conn, row).await
}

/// The order, taken for the rest of `tx` (PostgreSQL's row lock; SQLite's single writer, this
/// being a write), with its lines as they are now.
pub async fn lock(tx: &mut Tx, tenant_id: Uuid, id: Uuid) -> Result<Option<OrderRecord>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET jobs_version = jobs_version WHERE tenant_id = $1 AND id = $2 \
         RETURNING {ORDER_COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, OrderRow>(sql).bind(tenant_id).bind(id).fetch_optional(&mut *conn).await
    })?;
    with_lines(&mut Conn::Tx(tx), row).await
}

/// [`lock`] by Shopify's order id.
pub async fn lock_by_shopify_id(
    tx: &mut Tx,
    tenant_id: Uuid,
    shopify_order_id: &str,
) -> Result<Option<OrderRecord>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET jobs_version = jobs_version WHERE tenant_id = $1 AND shopify_order_id = $2 \
         RETURNING {ORDER_COLUMNS}"
    ));
    let row = on_tx!(tx, conn => {
        sqlx::query_as::<_, OrderRow>(sql)
            .bind(tenant_id)
            .bind(shopify_order_id)
            .fetch_optional(&mut *conn)
            .await
    })?;
    with_lines(&mut Conn::Tx(tx), row).await
}

/// Writes an order's status (and, when derived from a job snapshot, that snapshot's version).
pub async fn set_status(
    tx: &mut Tx,
    id: Uuid,
    status: OrderStatus,
    jobs_version: Option<i64>,
    cancel_reason: Option<&str>,
) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE orders SET status = $2, jobs_version = COALESCE($3, jobs_version), \
             cancel_reason = COALESCE($4, cancel_reason), updated_at = $5 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(jobs_version)
        .bind(cancel_reason)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Writes a line's status and plan.
pub async fn set_line(tx: &mut Tx, line: &LineRecord) -> Result<(), DbError> {
    let files = line.print_files.as_ref().map(encode).transpose()?;
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE line_items SET status = $2, product_mapping_id = $3, print_files = $4, \
             plan_generation = $5, quantity = $6, sku = $7, product_name = $8, unit_price = $9, \
             updated_at = $10, stock_units = $11 WHERE id = $1",
        )
        .bind(line.item.id)
        .bind(line.item.status.as_str())
        .bind(line.item.product_mapping_id)
        .bind(files.as_deref())
        .bind(i64::from(line.plan_generation))
        .bind(i64::from(line.item.quantity))
        .bind(&line.item.sku)
        .bind(&line.item.product_name)
        .bind(&line.item.unit_price)
        .bind(Utc::now())
        .bind(i64::from(line.stock_units))
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Writes who order `id` is for and where it goes, from Shopify's document `new`, and when
/// Shopify changed it.
pub async fn set_customer(tx: &mut Tx, id: Uuid, new: &NewOrder) -> Result<(), DbError> {
    let address = new.shipping_address.as_ref().map(encode).transpose()?;
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE orders SET customer_name = $2, customer_email = $3, shipping_address = $4, \
             updated_at = $5, shopify_updated_at = COALESCE($6, shopify_updated_at) WHERE id = $1",
        )
        .bind(id)
        .bind(&new.customer_name)
        .bind(new.customer_email.as_deref())
        .bind(address.as_deref())
        .bind(Utc::now())
        .bind(new.shopify_updated_at)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// When Shopify last changed order `id`, as the newest document applied to it says.
pub async fn shopify_updated_at(tx: &mut Tx, id: Uuid) -> Result<Option<DateTime<Utc>>, DbError> {
    let at = on_tx!(tx, conn => {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT shopify_updated_at FROM orders WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
    })?;
    Ok(at.flatten())
}

/// The carrier's tracking of the order's parcel.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tracking {
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub carrier: Option<String>,
}

/// Writes the tracking of the tenant's order `id`; the order as stored after, `None` if unknown.
pub async fn set_tracking(
    db: &Db,
    tenant_id: Uuid,
    id: Uuid,
    tracking: &Tracking,
) -> Result<Option<OrderRecord>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE orders SET tracking_number = $3, tracking_url = $4, carrier = $5, updated_at = $6 \
         WHERE tenant_id = $1 AND id = $2 RETURNING {ORDER_COLUMNS}"
    ));
    let mut conn = Conn::Pool(db);
    let row = on_conn!(&mut conn, c => {
        sqlx::query_as::<_, OrderRow>(sql)
            .bind(tenant_id)
            .bind(id)
            .bind(tracking.tracking_number.as_deref())
            .bind(tracking.tracking_url.as_deref())
            .bind(tracking.carrier.as_deref())
            .bind(Utc::now())
            .fetch_optional(c)
            .await
    })?;
    with_lines(&mut conn, row).await
}

/// Writes the tracking of order `id` in `tx` (the order locked by the caller).
pub async fn set_tracking_in(tx: &mut Tx, id: Uuid, tracking: &Tracking) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE orders SET tracking_number = $2, tracking_url = $3, carrier = $4, updated_at = $5 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(tracking.tracking_number.as_deref())
        .bind(tracking.tracking_url.as_deref())
        .bind(tracking.carrier.as_deref())
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Which orders to list.
#[derive(Debug, Clone, Default)]
pub struct OrderFilter {
    pub status: Option<OrderStatus>,
    /// A part of the order number, customer name or e-mail, any case.
    pub search: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
}

/// One page of a tenant's orders, newest first, with their lines, and how many match.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &OrderFilter,
    page: PageRequest,
) -> Result<(Vec<Order>, i64), DbError> {
    let pattern = filter.search.as_deref().map(contains_pattern);
    let condition = "tenant_id = $1 AND ($2 IS NULL OR status = $2) \
        AND ($3 IS NULL OR LOWER(order_number) LIKE $3 ESCAPE '\\' \
             OR LOWER(customer_name) LIKE $3 ESCAPE '\\' OR LOWER(customer_email) LIKE $3 ESCAPE '\\') \
        AND ($4 IS NULL OR created_at >= $4) AND ($5 IS NULL OR created_at <= $5)";
    let (limit, offset) = page.limit_offset();
    let select = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE {condition} \
         ORDER BY created_at DESC, id DESC LIMIT $6 OFFSET $7"
    );
    let count = format!("SELECT COUNT(*) FROM orders WHERE {condition}");
    let status = filter.status.map(|s| s.as_str());
    // One snapshot: orders arriving between the page and the count would make them disagree.
    let mut tx = db.snapshot().await?;
    let mut conn = Conn::Tx(&mut tx);
    let rows = on_conn!(&mut conn, c => {
        sqlx::query_as::<_, OrderRow>(sqlx::AssertSqlSafe(select.clone()))
            .bind(tenant_id)
            .bind(status)
            .bind(pattern.as_deref())
            .bind(filter.from)
            .bind(filter.to)
            .bind(limit)
            .bind(offset)
            .fetch_all(c)
            .await
    })?;
    let total = on_conn!(&mut conn, c => {
        sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count.clone()))
            .bind(tenant_id)
            .bind(status)
            .bind(pattern.as_deref())
            .bind(filter.from)
            .bind(filter.to)
            .fetch_one(c)
            .await
    })?;
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let mut lines = lines_of(&mut conn, &ids).await?;
    tx.commit().await?;
    let orders = rows
        .into_iter()
        .map(|row| {
            let id = row.id;
            row.into_record(lines.remove(&id).unwrap_or_default())
                .into_order()
        })
        .collect();
    Ok((orders, total))
}
