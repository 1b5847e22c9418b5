//! The `product_mappings` table.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{MappingFields, PrintFile, ProductMapping};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Conn, Db, DbError, contains_pattern};
use crate::{on_conn, on_pool, on_tx};

const COLUMNS: &str = "id, tenant_id, sku, product_name, shopify_product_id, shopify_variant_id, \
                       print_files, is_active, created_at, updated_at";

#[derive(sqlx::FromRow)]
struct Row {
    id: Uuid,
    tenant_id: Uuid,
    sku: String,
    product_name: String,
    shopify_product_id: Option<String>,
    shopify_variant_id: Option<String>,
    print_files: String,
    is_active: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_mapping(self) -> ProductMapping {
        // Written by this module from validated files; unreadable JSON would be a bug, and a
        // mapping without files then simply plans nothing (and shows so).
        let print_files: Vec<PrintFile> =
            serde_json::from_str(&self.print_files).unwrap_or_else(|e| {
                tracing::error!(mapping = %self.id, error = %e, "unreadable print files");
                Vec::new()
            });
        ProductMapping {
            id: self.id,
            tenant_id: self.tenant_id,
            sku: self.sku,
            product_name: self.product_name,
            shopify_product_id: self.shopify_product_id,
            shopify_variant_id: self.shopify_variant_id,
            print_files,
            is_active: self.is_active,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

fn files_json(files: &[PrintFile]) -> Result<String, DbError> {
    serde_json::to_string(files).map_err(|e| DbError::Sqlx(sqlx::Error::Encode(Box::new(e))))
}

/// Stores a new mapping; `None` when the tenant has one with that SKU already.
pub async fn insert(
    db: &Db,
    tenant_id: Uuid,
    fields: &MappingFields,
) -> Result<Option<ProductMapping>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO product_mappings ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9) \
         ON CONFLICT (tenant_id, sku) DO NOTHING RETURNING {COLUMNS}"
    ));
    let files = files_json(&fields.print_files)?;
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(sql)
            .bind(Uuid::now_v7())
            .bind(tenant_id)
            .bind(&fields.sku)
            .bind(&fields.product_name)
            .bind(fields.shopify_product_id.as_deref())
            .bind(fields.shopify_variant_id.as_deref())
            .bind(&files)
            .bind(fields.is_active)
            .bind(Utc::now())
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(Row::into_mapping))
}

pub async fn find(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<Option<ProductMapping>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM product_mappings WHERE tenant_id = $1 AND id = $2"
    ));
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(sql).bind(tenant_id).bind(id).fetch_optional(pool).await
    })?;
    Ok(row.map(Row::into_mapping))
}

/// Which mappings to list.
#[derive(Debug, Clone, Default)]
pub struct MappingFilter {
    /// A part of the SKU or the product name, any case.
    pub search: Option<String>,
    pub is_active: Option<bool>,
}

/// One page of a tenant's mappings, by SKU, and how many match.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    filter: &MappingFilter,
    page: PageRequest,
) -> Result<(Vec<ProductMapping>, i64), DbError> {
    let pattern = filter.search.as_deref().map(contains_pattern);
    // Unused filters compare against NULL and drop out; one statement text for every filter.
    let condition = "tenant_id = $1 \
        AND ($2 IS NULL OR LOWER(sku) LIKE $2 ESCAPE '\\' \
             OR LOWER(product_name) LIKE $2 ESCAPE '\\') \
        AND ($3 IS NULL OR is_active = $3)";
    let (limit, offset) = page.limit_offset();
    let select = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM product_mappings WHERE {condition} ORDER BY sku LIMIT $4 OFFSET $5"
    ));
    let count = sqlx::AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM product_mappings WHERE {condition}"
    ));
    // One snapshot, so the page and the count agree while mappings are added.
    let mut tx = db.snapshot().await?;
    let rows = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, Row>(select)
            .bind(tenant_id)
            .bind(pattern.as_deref())
            .bind(filter.is_active)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    let total = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>(count)
            .bind(tenant_id)
            .bind(pattern.as_deref())
            .bind(filter.is_active)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((rows.into_iter().map(Row::into_mapping).collect(), total))
}

/// Replaces the mapping's fields. `Ok(None)`: no such mapping in the tenant. A SKU taken by another
/// mapping of the tenant is a unique violation ([`DbError::is_unique_violation`]).
pub async fn update(
    db: &Db,
    tenant_id: Uuid,
    id: Uuid,
    fields: &MappingFields,
) -> Result<Option<ProductMapping>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "UPDATE product_mappings SET sku = $3, product_name = $4, shopify_product_id = $5, \
         shopify_variant_id = $6, print_files = $7, is_active = $8, updated_at = $9 \
         WHERE tenant_id = $1 AND id = $2 RETURNING {COLUMNS}"
    ));
    let files = files_json(&fields.print_files)?;
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(sql)
            .bind(tenant_id)
            .bind(id)
            .bind(&fields.sku)
            .bind(&fields.product_name)
            .bind(fields.shopify_product_id.as_deref())
            .bind(fields.shopify_variant_id.as_deref())
            .bind(&files)
            .bind(fields.is_active)
            .bind(Utc::now())
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(Row::into_mapping))
}

/// Deletes the mapping; whether there was one. Line items keep the id of the mapping they were
/// planned with.
pub async fn delete(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<bool, DbError> {
    let deleted = on_pool!(db, pool => {
        sqlx::query("DELETE FROM product_mappings WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(deleted > 0)
}

/// The tenant's active mappings of `skus`, by SKU, read on `conn` (in a transaction when the caller
/// plans with what it reads there, on the pool when it reads before its transaction).
pub async fn active_for_skus(
    conn: &mut Conn<'_>,
    tenant_id: Uuid,
    skus: &[&str],
) -> Result<HashMap<String, ProductMapping>, DbError> {
    let mut found = HashMap::new();
    if skus.is_empty() {
        return Ok(found);
    }
    let placeholders = (0..skus.len())
        .map(|i| format!("${}", i + 2))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {COLUMNS} FROM product_mappings WHERE tenant_id = $1 AND is_active = TRUE \
         AND sku IN ({placeholders})"
    );
    let rows = on_conn!(conn, c => {
        let mut query = sqlx::query_as::<_, Row>(sqlx::AssertSqlSafe(sql)).bind(tenant_id);
        for sku in skus {
            query = query.bind(*sku);
        }
        query.fetch_all(c).await
    })?;
    for row in rows {
        let mapping = row.into_mapping();
        found.insert(mapping.sku.clone(), mapping);
    }
    Ok(found)
}
