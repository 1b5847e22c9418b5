//! The session store port (SPEC §2): sessions in the SQL database on the embedded default, in Redis
//! when Redis is configured (mandatory for split production: never in process memory), so a session
//! made on one gateway replica is valid on every other.

mod redis;
mod sql;

use std::time::Duration;

use async_trait::async_trait;
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, SessionStore};

pub use self::redis::RedisSessionStore;
pub use self::sql::SqlSessionStore;
use crate::infra::db::Db;
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;

/// The configured store, chosen once at start-up.
#[derive(Debug, Clone)]
pub enum Sessions {
    Sql(SqlSessionStore),
    Redis(RedisSessionStore),
}

impl Sessions {
    /// Redis when configured, else the SQL database. The SQL store's expired rows are deleted by a
    /// background worker; Redis expires keys by itself.
    pub fn new(db: &Db, redis: Option<&RedisHandle>, workers: &Workers) -> Self {
        match redis {
            Some(redis) => Sessions::Redis(RedisSessionStore::new(redis.clone())),
            None => {
                let store = SqlSessionStore::new(db.clone());
                store.spawn_cleanup(workers, Duration::from_secs(600));
                Sessions::Sql(store)
            }
        }
    }
}

#[async_trait]
impl SessionStore for Sessions {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        match self {
            Sessions::Sql(store) => store.create(record).await,
            Sessions::Redis(store) => store.create(record).await,
        }
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        match self {
            Sessions::Sql(store) => store.save(record).await,
            Sessions::Redis(store) => store.save(record).await,
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        match self {
            Sessions::Sql(store) => store.load(id).await,
            Sessions::Redis(store) => store.load(id).await,
        }
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        match self {
            Sessions::Sql(store) => store.delete(id).await,
            Sessions::Redis(store) => store.delete(id).await,
        }
    }
}

fn backend_error(error: impl std::fmt::Display) -> session_store::Error {
    session_store::Error::Backend(error.to_string())
}

fn encode(record: &Record) -> session_store::Result<String> {
    serde_json::to_string(record).map_err(|e| session_store::Error::Encode(e.to_string()))
}

fn decode(text: &str) -> session_store::Result<Record> {
    serde_json::from_str(text).map_err(|e| session_store::Error::Decode(e.to_string()))
}

/// The record's expiry as a chrono time, for SQL columns.
fn expiry(record: &Record) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(record.expiry_date.unix_timestamp(), 0).unwrap_or_default()
}

#[cfg(test)]
mod tests;
