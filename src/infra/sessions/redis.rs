//! Sessions in Redis, shared by every gateway replica; Redis expires them by itself.

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

use super::{backend_error, decode, encode};
use crate::infra::redis::RedisHandle;

#[derive(Clone)]
pub struct RedisSessionStore {
    redis: RedisHandle,
}

impl std::fmt::Debug for RedisSessionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisSessionStore")
    }
}

impl RedisSessionStore {
    pub fn new(redis: RedisHandle) -> Self {
        Self { redis }
    }

    fn key(&self, id: &Id) -> String {
        self.redis.key(&format!("session:{id}"))
    }

    /// `SET key value EXAT expiry NX|XX` (`condition`); returns whether it was written.
    async fn set(&self, record: &Record, condition: Written) -> session_store::Result<bool> {
        let mut conn = self.redis.connection().await.map_err(backend_error)?;
        let reply: Option<String> = redis::cmd("SET")
            .arg(self.key(&record.id))
            .arg(encode(record)?)
            .arg("EXAT")
            .arg(record.expiry_date.unix_timestamp())
            .arg(match condition {
                Written::IfNew => "NX",
                Written::IfPresent => "XX",
            })
            .query_async(&mut conn)
            .await
            .map_err(backend_error)?;
        Ok(reply.is_some())
    }
}

/// When `SET` writes a session.
#[derive(Clone, Copy)]
enum Written {
    IfNew,
    /// A save never brings back a session deleted meanwhile (signed out during the request).
    IfPresent,
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        while !self.set(record, Written::IfNew).await? {
            record.id = Id::default();
        }
        Ok(())
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        self.set(record, Written::IfPresent).await.map(|_| ())
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        let mut conn = self.redis.connection().await.map_err(backend_error)?;
        let text: Option<String> = redis::cmd("GET")
            .arg(self.key(id))
            .query_async(&mut conn)
            .await
            .map_err(backend_error)?;
        text.as_deref().map(decode).transpose()
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        let mut conn = self.redis.connection().await.map_err(backend_error)?;
        redis::cmd("DEL")
            .arg(self.key(id))
            .query_async::<i64>(&mut conn)
            .await
            .map(|_| ())
            .map_err(backend_error)
    }
}
