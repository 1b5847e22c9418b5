//! Per-client state of this process, keyed by limiter key: split under independent locks so
//! concurrent requests from different clients rarely wait on each other, and pruned as it goes so
//! a stream of one-off clients does not stay in memory.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::gcra::micros;

/// The keys' hash, seeded per process: a key is hashed twice per check (its shard, its entry), and
/// SipHash cost more than the check itself. foldhash's quality variant keeps what the seed is for:
/// keys a client chooses (addresses of a large IPv6 block) cannot be aimed at one bucket.
type KeyHasher = foldhash::quality::RandomState;

/// The entries of one shard.
pub(super) type Entries<V> = HashMap<String, V, KeyHasher>;

const SHARDS: usize = 16;
/// A shard is pruned when it grows past this many keys (or twice its size after the last prune),
/// and in any case once per the map's prune period.
const PRUNE_MIN_KEYS: usize = 1024;

pub(super) struct Sharded<V> {
    hasher: KeyHasher,
    shards: Vec<Mutex<Shard<V>>>,
    prune_every_us: u64,
}

struct Shard<V> {
    entries: Entries<V>,
    prune_at_len: usize,
    pruned_at_us: u64,
}

impl<V> Sharded<V> {
    pub fn new(prune_every: Duration) -> Self {
        Self {
            hasher: KeyHasher::default(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        entries: Entries::default(),
                        prune_at_len: PRUNE_MIN_KEYS,
                        pruned_at_us: 0,
                    })
                })
                .collect(),
            prune_every_us: micros(prune_every),
        }
    }

    /// Runs `f` on the entries of `key`'s shard at `now` (µs, the caller's clock), pruning the
    /// shard first when due: `live` says which entries are worth keeping.
    pub fn with<T>(
        &self,
        key: &str,
        now: u64,
        live: impl FnMut(&V) -> bool,
        f: impl FnOnce(&mut Entries<V>) -> T,
    ) -> T {
        let mut shard = self.lock(key);
        shard.prune_if_due(now, self.prune_every_us, live);
        f(&mut shard.entries)
    }

    /// Runs `f` on the entries of `key`'s shard, for a caller without a clock (no pruning).
    pub fn with_unpruned<T>(&self, key: &str, f: impl FnOnce(&mut Entries<V>) -> T) -> T {
        f(&mut self.lock(key).entries)
    }

    fn lock(&self, key: &str) -> MutexGuard<'_, Shard<V>> {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        // Entries are plain numbers: a panic elsewhere cannot leave one half-updated.
        self.shards[index.min(SHARDS - 1)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entries
                    .len()
            })
            .sum()
    }
}

impl<V> Shard<V> {
    fn prune_if_due(&mut self, now: u64, every: u64, mut live: impl FnMut(&V) -> bool) {
        if self.entries.len() < self.prune_at_len && now.saturating_sub(self.pruned_at_us) < every {
            return;
        }
        self.entries.retain(|_, value| live(value));
        // Doubling the threshold keeps pruning amortised O(1) per request when most keys are live.
        self.prune_at_len = PRUNE_MIN_KEYS.max(self.entries.len().saturating_mul(2));
        self.pruned_at_us = now;
    }
}
