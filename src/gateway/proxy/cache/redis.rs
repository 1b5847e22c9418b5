//! The Redis store: one key per entry under the configured key prefix, expiring with the entry
//! (`SET … PX`), so every gateway replica shares one cache and Redis drops what went stale; each
//! entry is at most `proxy.cache_max_entry_bytes`.
//!
//! The whole is held to `proxy.cache_max_bytes` here, not left to Redis's `maxmemory`: the cache
//! shares its Redis with sessions and rate limits, and a cache that grows (many distinct queries,
//! long TTLs) must evict its own entries, never theirs. Each `put` records the entry's size in an
//! index (`httpcache-index`: entry → stored at, `httpcache-sizes`: entry → bytes, and the total in
//! `httpcache-bytes`) in the same script as the entry, and evicts the oldest entries while the
//! total is over the budget. An entry Redis expired keeps its size counted until it is evicted in
//! turn, so the total never reads low.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Bytes;
use axum::http::{HeaderName, HeaderValue};
use redis::Script;

use super::store::{CacheStore, CachedResponse, StoreError, UnixMillis};
use crate::infra::redis::RedisHandle;

/// A Redis that hangs must not stall requests: past this a lookup is a miss and a store is skipped.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);

/// The first bytes of every value, naming this layout; anything else reads as absent.
const MAGIC: &[u8; 4] = b"FRC1";

/// What an entry costs Redis beyond its value: its key and its index records.
const ENTRY_OVERHEAD: usize = 128;

/// Stores entry KEYS[1] = ARGV[1] for ARGV[2] ms, counting ARGV[3] bytes against the budget ARGV[4]
/// in the index KEYS[2] (by ARGV[5], the time stored), KEYS[3] (sizes) and KEYS[4] (total); then
/// evicts the oldest entries while the total is over the budget.
static PUT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local key, size, budget = KEYS[1], tonumber(ARGV[3]), tonumber(ARGV[4])
local old = redis.call('HGET', KEYS[3], key)
if old then redis.call('DECRBY', KEYS[4], old) end
redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[5], key)
redis.call('HSET', KEYS[3], key, size)
local total = redis.call('INCRBY', KEYS[4], size)
while total > budget do
  local oldest = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not oldest then break end
  local bytes = tonumber(redis.call('HGET', KEYS[3], oldest)) or 0
  redis.call('ZREM', KEYS[2], oldest)
  redis.call('HDEL', KEYS[3], oldest)
  redis.call('DEL', oldest)
  total = redis.call('DECRBY', KEYS[4], bytes)
end
return total
",
    )
});

pub struct RedisStore {
    handle: RedisHandle,
    max_bytes: usize,
}

impl RedisStore {
    /// A store of at most `max_bytes` (values and their bookkeeping) under the handle's prefix.
    pub fn new(handle: RedisHandle, max_bytes: usize) -> Self {
        Self { handle, max_bytes }
    }

    fn key(&self, key: &str) -> String {
        self.handle.key(&format!("httpcache:{key}"))
    }
}

async fn bounded<T>(call: impl Future<Output = Result<T, StoreError>>) -> Result<T, StoreError> {
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .unwrap_or(Err(StoreError::Timeout(CALL_TIMEOUT)))
}

#[async_trait]
impl CacheStore for RedisStore {
    async fn get(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        let key = self.key(key);
        let value: Option<Vec<u8>> = bounded(async {
            let mut conn = self.handle.connection().await?;
            Ok(::redis::cmd("GET").arg(&key).query_async(&mut conn).await?)
        })
        .await?;
        // Redis expires the key; the check covers replicas whose clocks run ahead of the writer's.
        Ok(value
            .and_then(|bytes| decode(&bytes))
            .filter(|entry| entry.is_fresh(now))
            .map(Arc::new))
    }

    async fn put(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        now: UnixMillis,
    ) -> Result<(), StoreError> {
        let ttl_ms = entry.expires_at.saturating_sub(now);
        if ttl_ms == 0 {
            return Ok(());
        }
        let Some(value) = encode(&entry) else {
            return Ok(());
        };
        let size = value.len() + key.len() + ENTRY_OVERHEAD;
        if size > self.max_bytes {
            return Ok(());
        }
        let key = self.key(key);
        bounded(async {
            let mut conn = self.handle.connection().await?;
            let _total: i64 = PUT
                .key(&key)
                .key(self.handle.key("httpcache-index"))
                .key(self.handle.key("httpcache-sizes"))
                .key(self.handle.key("httpcache-bytes"))
                .arg(value)
                .arg(ttl_ms)
                .arg(size)
                .arg(self.max_bytes)
                .arg(now)
                .invoke_async(&mut conn)
                .await?;
            Ok(())
        })
        .await
    }
}

/// `MAGIC`, `stored_at` and `expires_at` (u64), the header count (u16), each header as name length
/// (u16), name, value length (u32), value; then the body to the end. Integers big-endian. `None`
/// when a length does not fit its field (no real response comes near): such an entry is not stored.
pub(super) fn encode(entry: &CachedResponse) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(entry.weight() + 64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&entry.stored_at.to_be_bytes());
    out.extend_from_slice(&entry.expires_at.to_be_bytes());
    out.extend_from_slice(&u16::try_from(entry.headers.len()).ok()?.to_be_bytes());
    for (name, value) in &entry.headers {
        let name = name.as_str().as_bytes();
        out.extend_from_slice(&u16::try_from(name.len()).ok()?.to_be_bytes());
        out.extend_from_slice(name);
        let value = value.as_bytes();
        out.extend_from_slice(&u32::try_from(value.len()).ok()?.to_be_bytes());
        out.extend_from_slice(value);
    }
    out.extend_from_slice(&entry.body);
    Some(out)
}

/// The entry `bytes` hold, or `None` for anything that is not exactly what [`encode`] writes
/// (another version's layout, a truncated value): a miss, never a panic.
pub(super) fn decode(bytes: &[u8]) -> Option<CachedResponse> {
    let mut reader = Reader(bytes);
    if reader.take(MAGIC.len())? != MAGIC {
        return None;
    }
    let stored_at = u64::from_be_bytes(reader.take(8)?.try_into().ok()?);
    let expires_at = u64::from_be_bytes(reader.take(8)?.try_into().ok()?);
    let count = u16::from_be_bytes(reader.take(2)?.try_into().ok()?);
    let mut headers = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let len = u16::from_be_bytes(reader.take(2)?.try_into().ok()?);
        let name = HeaderName::from_bytes(reader.take(usize::from(len))?).ok()?;
        let len = u32::from_be_bytes(reader.take(4)?.try_into().ok()?);
        let value = HeaderValue::from_bytes(reader.take(usize::try_from(len).ok()?)?).ok()?;
        headers.push((name, value));
    }
    Some(CachedResponse {
        stored_at,
        expires_at,
        headers,
        body: Bytes::copy_from_slice(reader.0),
    })
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}
