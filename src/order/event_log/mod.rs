//! The business event log (SPEC §6.5): one entry per state change of an order, its lines and its
//! print jobs, written in the transaction of the change itself, so the log never tells of a change
//! that did not happen nor misses one that did.

pub mod routes;

use chrono::Utc;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::infra::db::{DbError, Tx};
use crate::on_tx;

/// The entry types, decided here and nowhere else.
pub mod types {
    pub const ORDER_CREATED: &str = "order.created";
    pub const ORDER_STATUS_CHANGED: &str = "order.status_changed";
    pub const ORDER_CANCELLED: &str = "order.cancelled";
    pub const ORDER_REVIVED: &str = "order.revived";
    pub const ORDER_UPDATED: &str = "order.updated";
    pub const ORDER_UPDATE_IGNORED: &str = "order.update_ignored";
    pub const ORDER_RETRIED: &str = "order.retried";
    pub const LINE_ITEM_UNMAPPED: &str = "line_item.unmapped";
    pub const LINE_ITEM_STATUS_CHANGED: &str = "line_item.status_changed";
    /// A line took units from stock (SPEC §6.5b); its details say how many, and how many print.
    pub const LINE_ITEM_SERVED_FROM_STOCK: &str = "line_item.served_from_stock";
    /// A cancelled order gave its line's units back to stock.
    pub const LINE_ITEM_RETURNED_TO_STOCK: &str = "line_item.returned_to_stock";
    pub const PRINT_JOB_STATUS_CHANGED: &str = "print_job.status_changed";
    pub const SHIPMENT_CREATED: &str = "shipment.created";
    pub const SHIPMENT_STATUS_CHANGED: &str = "shipment.status_changed";
    pub const FULFILLMENT_CREATED: &str = "fulfillment.created";
    pub const FULFILLMENT_FAILED: &str = "fulfillment.failed";
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Error,
}

impl Severity {
    pub const ALL: [Self; 3] = [Self::Info, Self::Warning, Self::Error];

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One entry, as its writer describes it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub tenant_id: Uuid,
    pub order_id: Option<Uuid>,
    pub print_job_id: Option<Uuid>,
    pub event_type: &'static str,
    pub severity: Severity,
    pub message: String,
    pub details: serde_json::Value,
}

impl Entry {
    pub fn order(
        tenant_id: Uuid,
        order_id: Uuid,
        event_type: &'static str,
        severity: Severity,
        message: impl Into<String>,
    ) -> Self {
        Self {
            tenant_id,
            order_id: Some(order_id),
            print_job_id: None,
            event_type,
            severity,
            message: message.into(),
            details: serde_json::Value::Object(Default::default()),
        }
    }

    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    pub fn with_print_job(mut self, print_job_id: Uuid) -> Self {
        self.print_job_id = Some(print_job_id);
        self
    }
}

/// Appends `entry` in `tx`.
pub async fn append(tx: &mut Tx, entry: &Entry) -> Result<(), DbError> {
    let details = entry.details.to_string();
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO event_log (id, tenant_id, order_id, print_job_id, event_type, severity, \
             message, details, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(entry.tenant_id)
        .bind(entry.order_id)
        .bind(entry.print_job_id)
        .bind(entry.event_type)
        .bind(entry.severity.as_str())
        .bind(&entry.message)
        .bind(&details)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// One entry as the API shows it (SPEC §6.5).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggedEvent {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub order_id: Option<Uuid>,
    pub print_job_id: Option<Uuid>,
    /// e.g. `order.status_changed`, `print_job.status_changed`, `fulfillment.failed`.
    pub event_type: String,
    /// `info`, `warning` or `error`.
    pub severity: String,
    pub message: String,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    pub created_at: chrono::DateTime<Utc>,
}

/// Which entries to list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    pub order_id: Option<Uuid>,
    pub event_type: Option<String>,
    pub severity: Option<Severity>,
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    order_id: Option<Uuid>,
    print_job_id: Option<Uuid>,
    event_type: String,
    severity: String,
    message: String,
    details: String,
    created_at: chrono::DateTime<Utc>,
}

/// One page of the tenant's entries, newest first, and how many match.
pub async fn list(
    db: &crate::infra::db::Db,
    tenant_id: Uuid,
    filter: &EventFilter,
    page: crate::http::pagination::PageRequest,
) -> Result<(Vec<LoggedEvent>, i64), DbError> {
    let condition = "tenant_id = $1 AND ($2 IS NULL OR order_id = $2) \
        AND ($3 IS NULL OR event_type = $3) AND ($4 IS NULL OR severity = $4)";
    let (limit, offset) = page.limit_offset();
    let select = sqlx::AssertSqlSafe(format!(
        "SELECT id, tenant_id, order_id, print_job_id, event_type, severity, message, details, \
         created_at FROM event_log WHERE {condition} \
         ORDER BY created_at DESC, id DESC LIMIT $5 OFFSET $6"
    ));
    let count = sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM event_log WHERE {condition}"));
    let severity = filter.severity.map(Severity::as_str);
    // One snapshot: entries appended between the page and the count would make them disagree.
    let mut tx = db.snapshot().await?;
    let rows = crate::on_tx!(&mut tx, c => {
        sqlx::query_as::<_, Row>(select)
            .bind(tenant_id)
            .bind(filter.order_id)
            .bind(filter.event_type.as_deref())
            .bind(severity)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    let total = crate::on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>(count)
            .bind(tenant_id)
            .bind(filter.order_id)
            .bind(filter.event_type.as_deref())
            .bind(severity)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    let events = rows
        .into_iter()
        .map(|row| LoggedEvent {
            id: row.id,
            tenant_id: row.tenant_id,
            order_id: row.order_id,
            print_job_id: row.print_job_id,
            event_type: row.event_type,
            severity: row.severity,
            message: row.message,
            details: serde_json::from_str(&row.details).unwrap_or(serde_json::Value::Null),
            created_at: row.created_at,
        })
        .collect();
    Ok((events, total))
}
