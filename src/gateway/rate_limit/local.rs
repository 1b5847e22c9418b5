//! The in-process limiter: used when no Redis is configured, and for any call Redis cannot answer.

use std::time::Duration;

use tokio::time::Instant;

use super::Decision;
use super::gcra::{Gcra, micros};
use super::sharded::Sharded;

/// Clients are forgotten at least this often once their budget is full again, so a burst of
/// one-off clients does not stay in memory for long.
const PRUNE_EVERY: Duration = Duration::from_secs(60);

pub(super) struct LocalLimiter {
    /// Times are microseconds since this instant.
    epoch: Instant,
    /// Key → theoretical arrival time. An entry whose TAT has passed means a full budget, the
    /// same as no entry, which is why pruning can drop it.
    tats: Sharded<u64>,
}

impl LocalLimiter {
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            tats: Sharded::new(PRUNE_EVERY),
        }
    }

    pub fn check(&self, key: &str, gcra: Gcra) -> Decision {
        self.check_at(key, gcra, self.now_us())
    }

    /// `check` at `now` µs since the limiter was made; tests drive the clock through it.
    pub(super) fn check_at(&self, key: &str, gcra: Gcra, now: u64) -> Decision {
        let live = |tat: &u64| *tat > now;
        self.tats.with(key, now, live, |tats| {
            // One lookup for the usual case, a client seen before; a new one is inserted.
            let stored = tats.get_mut(key);
            let step = gcra.step(stored.as_deref().copied(), now);
            if step.allowed() {
                let tat = now.saturating_add(step.ahead_us);
                match stored {
                    Some(stored) => *stored = tat,
                    None => {
                        tats.insert(key.to_owned(), tat);
                    }
                }
            }
            gcra.decision(step)
        })
    }

    fn now_us(&self) -> u64 {
        micros(self.epoch.elapsed())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.tats.len()
    }
}
