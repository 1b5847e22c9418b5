//! The distributed database: PostgreSQL, shared by every replica.

use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::DbError;
use crate::config::SecretUrl;

pub(super) async fn connect(url: &str, max_connections: u32) -> Result<PgPool, DbError> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        .connect(url)
        .await
        .map_err(|e| DbError::Connect {
            url: SecretUrl::new(url).masked(),
            reason: e.to_string(),
        })
}
