//! Tenants: every piece of business data belongs to one.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::infra::db::{Db, DbError};
use crate::on_pool;

/// The tenant created on first run, and the one a configured single shop maps to.
pub const DEFAULT_SLUG: &str = "default";

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Tenant {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
}

pub async fn find_by_slug(db: &Db, slug: &str) -> Result<Option<Tenant>, DbError> {
    let tenant = on_pool!(db, pool => {
        sqlx::query_as::<_, Tenant>("SELECT id, slug, name, created_at FROM tenants WHERE slug = $1")
            .bind(slug)
            .fetch_optional(pool)
            .await
    })?;
    Ok(tenant)
}

/// Creates the tenant unless one with that slug exists; returns whichever is stored.
pub async fn ensure(db: &Db, slug: &str, name: &str) -> Result<Tenant, DbError> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query(
            "INSERT INTO tenants (id, slug, name, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (slug) DO NOTHING",
        )
        .bind(id)
        .bind(slug)
        .bind(name)
        .bind(now)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    find_by_slug(db, slug)
        .await?
        .ok_or(DbError::Sqlx(sqlx::Error::RowNotFound))
}

/// A slug is lower-case letters, digits and dashes, 1 to 63 characters.
pub fn is_valid_slug(slug: &str) -> bool {
    (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-')
}
