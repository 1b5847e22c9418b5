//! The generic cell rate algorithm (GCRA), shared by the in-process limiter and, transcribed to Lua,
//! by the Redis one.
//!
//! Why GCRA rather than a fixed window, a sliding-window counter or a sliding log:
//! - A fixed window lets 2·N through in an instant across a window boundary.
//! - A sliding-window counter is an estimate that assumes the previous window's requests were spread
//!   evenly; its answers (and so `RateLimit-Remaining`) are approximate, and it needs two counters.
//! - A sliding log is exact but keeps N timestamps per client: 600 per user, per replica set.
//! - GCRA keeps one number per client (the "theoretical arrival time", TAT), decides exactly, has no
//!   boundary effect, and yields exact `Remaining`, `Reset` and `Retry-After` values. "N per window"
//!   means: a burst of up to N, and a sustained rate of N per window after it.
//!
//! Times are whole microseconds. Redis scripts see numbers as doubles, exact up to 2^53 µs (285
//! years since the epoch), so the Lua transcription computes exactly what this one does.

use std::time::Duration;

use super::Decision;

/// The longest window honoured; keeps every sum below 2^53 µs even in the Lua transcription.
const MAX_WINDOW: Duration = Duration::from_secs(366 * 24 * 3600);

/// The GCRA parameters of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Gcra {
    pub limit: u32,
    /// One request "costs" this much time: window / limit.
    pub interval_us: u64,
    /// How far ahead of now the TAT may run: limit × interval, so a burst of exactly `limit` fits.
    /// Rounding the interval down makes this at most `limit` µs shorter than the window.
    pub capacity_us: u64,
}

/// What one step decided: how many requests it let through (0: refused), and `ahead_us`, the
/// stored TAT minus now after the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Step {
    pub granted: u32,
    pub ahead_us: u64,
}

impl Step {
    pub fn allowed(&self) -> bool {
        self.granted > 0
    }
}

/// A duration in whole microseconds, the unit of every time in the limiters (saturating).
pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl Gcra {
    /// `None` when the limit is off (a limit of 0 or an empty window).
    pub fn new(limit: u32, window: Duration) -> Option<Self> {
        if limit == 0 || window.is_zero() {
            return None;
        }
        let window_us = micros(window.min(MAX_WINDOW));
        let interval_us = (window_us / u64::from(limit)).max(1);
        Some(Self {
            limit,
            interval_us,
            capacity_us: interval_us.saturating_mul(u64::from(limit)),
        })
    }

    /// One request at `now` against the stored `tat` (absent or in the past: a full budget).
    /// When allowed, the caller stores `now + ahead_us` as the new TAT.
    pub fn step(&self, tat: Option<u64>, now: u64) -> Step {
        self.take(tat, now, 1)
    }

    /// Up to `want` requests at once (at least one): as many as fit, or none. One request is
    /// allowed exactly when it fits whole: the TAT after it is at most `capacity` ahead of now.
    pub fn take(&self, tat: Option<u64>, now: u64, want: u32) -> Step {
        let ahead = tat.unwrap_or(now).max(now) - now;
        let fits = self.capacity_us.saturating_sub(ahead) / self.interval_us;
        let granted = u32::try_from(fits.min(u64::from(want.max(1)))).unwrap_or(1);
        Step {
            granted,
            ahead_us: ahead.saturating_add(u64::from(granted) * self.interval_us),
        }
    }

    /// The client-facing view of a step.
    pub fn decision(&self, step: Step) -> Decision {
        if step.allowed() {
            let left = self.capacity_us.saturating_sub(step.ahead_us) / self.interval_us;
            Decision {
                allowed: true,
                limit: self.limit,
                remaining: u32::try_from(left).unwrap_or(self.limit).min(self.limit),
                // Time until the whole budget is back.
                reset: Duration::from_micros(step.ahead_us),
            }
        } else {
            // The next request fits once the TAT has come back to within capacity − interval.
            let wait = (step.ahead_us + self.interval_us).saturating_sub(self.capacity_us);
            Decision {
                allowed: false,
                limit: self.limit,
                remaining: 0,
                reset: Duration::from_micros(wait),
            }
        }
    }
}
