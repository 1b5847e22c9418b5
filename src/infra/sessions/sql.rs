//! Sessions in the SQL database (SQLite or PostgreSQL, the same SQL).

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::{backend_error, decode, encode, expiry};
use crate::infra::db::Db;
use crate::infra::workers::Workers;
use crate::on_pool;

#[derive(Debug, Clone)]
pub struct SqlSessionStore {
    db: Db,
}

impl SqlSessionStore {
    pub fn new(db: Db) -> Self {
        Self { db }
    }

    pub async fn delete_expired(&self) -> session_store::Result<u64> {
        let now = Utc::now();
        on_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(backend_error)
    }

    pub fn spawn_cleanup(&self, workers: &Workers, every: Duration) {
        let store = self.clone();
        workers.spawn("session-cleanup", move |stop| async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(e) = store.delete_expired().await {
                            tracing::warn!(error = %e, "deleting expired sessions failed");
                        }
                    }
                }
            }
        });
    }
}

#[async_trait]
impl SessionStore for SqlSessionStore {
    /// Inserts under a fresh id, drawing another on the (astronomically unlikely) collision.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        loop {
            let text = encode(record)?;
            let inserted = on_pool!(&self.db, pool => {
                sqlx::query(
                    "INSERT INTO sessions (id, record, expires_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (id) DO NOTHING",
                )
                .bind(record.id.to_string())
                .bind(text)
                .bind(expiry(record))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
            })
            .map_err(backend_error)?;
            if inserted == 1 {
                return Ok(());
            }
            record.id = Id::default();
        }
    }

    /// Updates a session the request loaded; one deleted meanwhile (signed out while the request
    /// ran) stays deleted.
    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let text = encode(record)?;
        on_pool!(&self.db, pool => {
            sqlx::query("UPDATE sessions SET record = $2, expires_at = $3 WHERE id = $1")
            .bind(record.id.to_string())
            .bind(text)
            .bind(expiry(record))
            .execute(pool)
            .await
            .map(|_| ())
        })
        .map_err(backend_error)
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let now = Utc::now();
        let text = on_pool!(&self.db, pool => {
            sqlx::query_scalar::<_, String>(
                "SELECT record FROM sessions WHERE id = $1 AND expires_at > $2",
            )
            .bind(id.to_string())
            .bind(now)
            .fetch_optional(pool)
            .await
        })
        .map_err(backend_error)?;
        text.as_deref().map(decode).transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        on_pool!(&self.db, pool => {
            sqlx::query("DELETE FROM sessions WHERE id = $1")
                .bind(id.to_string())
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(backend_error)
    }
}
