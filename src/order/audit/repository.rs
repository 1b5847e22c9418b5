//! The `audit_logs` table. Inserts and reads only: the log is append-only.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use uuid::Uuid;

use super::{AuditEntry, AuditFilter, AuditRecord, truncate_to_micros};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Db, DbError};
use crate::{on_pool, on_tx};

const COLUMNS: &str = "id, tenant_id, actor_id, actor_email, action, target_type, target_id, ip, \
                       user_agent, details, created_at";

/// A value bound to a placeholder of the WHERE clause.
enum Arg {
    Uuid(Uuid),
    Text(String),
    Time(DateTime<Utc>),
}

/// Binds every `Arg` in order; a macro because each backend's query is a different type.
macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut query = $query;
        for arg in $args {
            query = match arg {
                Arg::Uuid(value) => query.bind(*value),
                Arg::Text(value) => query.bind(value.as_str()),
                Arg::Time(value) => query.bind(*value),
            };
        }
        query
    }};
}

/// Appends `entry` and returns it as stored.
pub async fn record(db: &Db, entry: &AuditEntry) -> Result<AuditRecord, DbError> {
    record_at(db, entry, Utc::now()).await
}

/// `record` with a given time: tests need entries at chosen instants.
pub(super) async fn record_at(
    db: &Db,
    entry: &AuditEntry,
    at: DateTime<Utc>,
) -> Result<AuditRecord, DbError> {
    let entry = entry.truncated();
    let id = Uuid::now_v7();
    let created_at = truncate_to_micros(at);
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO audit_logs ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ));
    on_pool!(db, pool => {
        sqlx::query(sql)
            .bind(id)
            .bind(entry.tenant_id)
            .bind(entry.actor_id)
            .bind(entry.actor_email.as_deref())
            .bind(entry.action.as_str())
            .bind(entry.target_type.as_deref())
            .bind(entry.target_id.as_deref())
            .bind(entry.ip.as_deref())
            .bind(entry.user_agent.as_deref())
            .bind(Json(&entry.details))
            .bind(created_at)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(AuditRecord {
        id,
        entry,
        created_at,
    })
}

/// One page of `tenant_id`'s entries matching `filter`, newest first, and how many match in all.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &AuditFilter,
    page: PageRequest,
) -> Result<(Vec<AuditRecord>, i64), DbError> {
    let (conditions, args) = where_clause(tenant_id, filter);
    let (limit, offset) = page.limit_offset();
    let count_sql = sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM audit_logs WHERE {conditions}"
    ));
    // One snapshot: entries appended between the count and the page would make them disagree.
    let mut tx = db.snapshot().await?;
    let total = on_tx!(&mut tx, c => {
        bind_all!(sqlx::query_scalar::<_, i64>(count_sql), &args).fetch_one(&mut *c).await
    })?;
    // Entries of the same microsecond keep their insertion order: ids are UUIDv7.
    let list_sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM audit_logs WHERE {conditions} \
         ORDER BY created_at DESC, id DESC LIMIT ${} OFFSET ${}",
        args.len() + 1,
        args.len() + 2
    ));
    let rows = on_tx!(&mut tx, c => {
        bind_all!(sqlx::query_as::<_, Row>(list_sql), &args)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((rows.into_iter().map(AuditRecord::from).collect(), total))
}

/// The conditions, built only from the fixed fragments below, with every value a numbered
/// placeholder; the values to bind come back alongside, in placeholder order.
fn where_clause(tenant_id: Uuid, filter: &AuditFilter) -> (String, Vec<Arg>) {
    let mut conditions = Vec::new();
    let mut args = Vec::new();
    let mut add = |condition: &'static str, arg: Arg| {
        args.push(arg);
        conditions.push(format!("{condition} ${}", args.len()));
    };
    add("tenant_id =", Arg::Uuid(tenant_id));
    if let Some(action) = &filter.action {
        add("action =", Arg::Text(action.clone()));
    }
    if let Some(actor_id) = filter.actor_id {
        add("actor_id =", Arg::Uuid(actor_id));
    }
    if let Some(target_type) = &filter.target_type {
        add("target_type =", Arg::Text(target_type.clone()));
    }
    if let Some(target_id) = &filter.target_id {
        add("target_id =", Arg::Text(target_id.clone()));
    }
    // On SQLite these compare RFC 3339 text. That orders correctly because every stored value
    // and every bound is written by chrono in UTC (`+00:00`, fraction only when non-zero, and
    // `+` sorts before `.` and the digits).
    if let Some(from) = filter.from {
        add("created_at >=", Arg::Time(from));
    }
    if let Some(to) = filter.to {
        add("created_at <=", Arg::Time(to));
    }
    (conditions.join(" AND "), args)
}

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    actor_id: Option<Uuid>,
    actor_email: Option<String>,
    action: String,
    target_type: Option<String>,
    target_id: Option<String>,
    ip: Option<String>,
    user_agent: Option<String>,
    details: Json<serde_json::Value>,
    created_at: DateTime<Utc>,
}

impl From<Row> for AuditRecord {
    fn from(row: Row) -> Self {
        AuditRecord {
            id: row.id,
            entry: AuditEntry {
                tenant_id: row.tenant_id,
                actor_id: row.actor_id,
                actor_email: row.actor_email,
                action: row.action,
                target_type: row.target_type,
                target_id: row.target_id,
                ip: row.ip,
                user_agent: row.user_agent,
                details: row.details.0,
            },
            created_at: row.created_at,
        }
    }
}
