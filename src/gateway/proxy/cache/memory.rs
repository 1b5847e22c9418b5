//! The embedded store: least recently used entries go first once the entries' bytes would pass
//! `proxy.cache_max_bytes`.
//!
//! Invariants, true whenever the lock is free: `used` is the sum of [`weight`] over `entries`, and
//! `used <= max_bytes`. An entry heavier than the whole budget is never inserted. Expired entries
//! count until they are read (and dropped) or pushed out: the bound holds either way.

use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use hashlink::LinkedHashMap;

use super::store::{CacheStore, CachedResponse, StoreError, UnixMillis};

/// Per-entry bookkeeping beyond its bytes (the map's node, the key's and the header vector's
/// allocations), so that many tiny entries still count against the budget.
const ENTRY_OVERHEAD: usize = 128;

fn weight(key: &str, entry: &CachedResponse) -> usize {
    key.len() + entry.weight() + ENTRY_OVERHEAD
}

pub struct MemoryStore {
    max_bytes: usize,
    inner: Mutex<Lru>,
}

#[derive(Default)]
struct Lru {
    /// Least recently used first.
    entries: LinkedHashMap<String, Arc<CachedResponse>>,
    used: usize,
}

impl Lru {
    fn remove(&mut self, key: &str) {
        if let Some(old) = self.entries.remove(key) {
            self.used -= weight(key, &old);
        }
    }
}

impl MemoryStore {
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            inner: Mutex::new(Lru::default()),
        }
    }

    /// Bytes held now (for tests of the bound).
    pub fn used_bytes(&self) -> usize {
        self.lock().used
    }

    fn lock(&self) -> MutexGuard<'_, Lru> {
        // Every update keeps the invariants before it can panic, so a poisoned lock is still sound.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(
        &self,
        key: &str,
        now: UnixMillis,
    ) -> Result<Option<Arc<CachedResponse>>, StoreError> {
        let mut lru = self.lock();
        let entry = match lru.entries.to_back(key) {
            Some(entry) => entry.clone(),
            None => return Ok(None),
        };
        if entry.is_fresh(now) {
            Ok(Some(entry))
        } else {
            lru.remove(key);
            Ok(None)
        }
    }

    async fn put(
        &self,
        key: &str,
        entry: Arc<CachedResponse>,
        _now: UnixMillis,
    ) -> Result<(), StoreError> {
        let added = weight(key, &entry);
        let mut lru = self.lock();
        // Whatever was stored under the key is older than this answer: never keep it instead.
        lru.remove(key);
        if added > self.max_bytes {
            return Ok(());
        }
        while lru.used + added > self.max_bytes {
            match lru.entries.pop_front() {
                Some((old_key, old)) => lru.used -= weight(&old_key, &old),
                None => break,
            }
        }
        lru.entries.insert(key.to_owned(), entry);
        lru.used += added;
        Ok(())
    }
}
