//! The in-process limiter: used when no Redis is configured, and for any call Redis cannot answer.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::Decision;
use super::gcra::Gcra;

/// Independent locks, so concurrent requests from different clients rarely wait on each other.
const SHARDS: usize = 16;
/// A shard is pruned when it grows past this many keys (or twice its size after the last prune)…
const PRUNE_MIN_KEYS: usize = 1024;
/// …and in any case this often, so a burst of one-off clients does not stay in memory for long.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(super) struct LocalLimiter {
    /// Times are microseconds since this instant.
    epoch: Instant,
    hasher: RandomState,
    shards: Vec<Mutex<Shard>>,
}

#[derive(Default)]
struct Shard {
    /// Key → theoretical arrival time. An entry whose TAT has passed means a full budget, the
    /// same as no entry, which is why pruning can drop it.
    tats: HashMap<String, u64>,
    prune_at_len: usize,
    pruned_at_us: u64,
}

impl LocalLimiter {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            hasher: RandomState::new(),
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        prune_at_len: PRUNE_MIN_KEYS,
                        ..Shard::default()
                    })
                })
                .collect(),
        }
    }

    pub fn check(&self, key: &str, gcra: Gcra) -> Decision {
        self.check_at(key, gcra, self.now_us())
    }

    /// `check` at `now` µs since the limiter was made; tests drive the clock through it.
    pub(super) fn check_at(&self, key: &str, gcra: Gcra, now: u64) -> Decision {
        let index = usize::try_from(self.hasher.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(index) else {
            return gcra.decision(gcra.step(None, now));
        };
        // The map only holds timestamps: a panic elsewhere cannot leave it half-updated.
        let mut shard = shard.lock().unwrap_or_else(PoisonError::into_inner);
        shard.prune_if_due(now);
        // One lookup for the usual case, a client seen before; a new one is inserted.
        let stored = shard.tats.get_mut(key);
        let step = gcra.step(stored.as_deref().copied(), now);
        if step.allowed {
            let tat = now.saturating_add(step.ahead_us);
            match stored {
                Some(stored) => *stored = tat,
                None => {
                    shard.tats.insert(key.to_owned(), tat);
                }
            }
        }
        gcra.decision(step)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).tats.len())
            .sum()
    }
}

impl Shard {
    fn prune_if_due(&mut self, now: u64) {
        let every = u64::try_from(PRUNE_EVERY.as_micros()).unwrap_or(u64::MAX);
        if self.tats.len() < self.prune_at_len && now.saturating_sub(self.pruned_at_us) < every {
            return;
        }
        self.tats.retain(|_, tat| *tat > now);
        // Doubling the threshold keeps pruning amortised O(1) per request when most keys are live.
        self.prune_at_len = PRUNE_MIN_KEYS.max(self.tats.len().saturating_mul(2));
        self.pruned_at_us = now;
    }
}
