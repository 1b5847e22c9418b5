//! Where cached responses live: in this process ([`MemoryStore`]) or in Redis ([`RedisStore`],
//! shared by every gateway replica). Both answer the same contract, checked by one test suite.

use std::sync::Arc;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue};

pub use super::memory::MemoryStore;
pub use super::redis::RedisStore;

/// Milliseconds since the Unix epoch: wall-clock time, because with Redis the replica that reads
/// an entry is not the one that wrote it.
pub type UnixMillis = u64;

/// A stored 200 answer: its headers (minus hop-by-hop ones and the request id) and its whole body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedResponse {
    pub stored_at: UnixMillis,
    pub expires_at: UnixMillis,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

impl CachedResponse {
    /// Bytes the entry holds, for the memory bound.
    pub fn weight(&self) -> usize {
        self.body.len()
            + self
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len())
                .sum::<usize>()
    }

    pub fn is_fresh(&self, now: UnixMillis) -> bool {
        now < self.expires_at
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Redis(#[from] crate::infra::redis::RedisError),
    #[error("redis: {0}")]
    Command(#[from] ::redis::RedisError),
    #[error("redis: no answer within {0:?}")]
    Timeout(std::time::Duration),
}

/// The contract of a store: `get` answers only fresh entries (as of `now`); `put` keeps the entry
/// until its `expires_at` at most, and may forget it earlier (memory pressure).
#[async_trait]
pub trait CacheStore: Send + Sync {
    async fn get(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError>;

    async fn put(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        now: UnixMillis,
    ) -> Result<(), StoreError>;
}
