//! Budget drawn from Redis ahead of need, for the few clients that send hundreds of requests a
//! second through one gateway replica.
//!
//! Invariants:
//! - Every request is still counted against the shared budget before it is served: a unit spent
//!   here was taken from Redis (the TAT moved) before this replica holds it. Leasing never lets
//!   more through than Redis granted.
//! - A lease exists only where a draw may be larger than one unit, that is where 1% of the limit
//!   is at least two requests ([`max_draw`]). Every other limit (the defaults per IP and the
//!   tight sign-in limits) is counted in Redis request by request, exactly as without leases.
//! - A draw is sized on the key's rate through this replica, measured over at least
//!   [`MEASURE_AT_LEAST`]: what it will spend in [`HORIZON`], at most [`max_draw`]. A key that
//!   is not busy draws one unit at a time.
//! - At most one draw larger than one unit is in flight per key: concurrent requests meanwhile
//!   ask Redis for their own single unit, so a burst never multiplies the draw. A draw ends when
//!   its answer is taken ([`Leases::drawn`]) or its [`Want`] is dropped (no answer, a refusal
//!   before it, or its request cancelled).
//! - Unspent units are dropped [`LEASE_TTL`] after their draw. What a replica can have drawn and
//!   not spent is at most `max_draw`: the most a client can be refused early (the units sit
//!   here), or let through beyond its burst (its budget refilled in Redis while units still sat
//!   here).
//!
//! Times are microseconds on the caller's clock, passed in (tests drive their own timeline).

use std::time::Duration;

use super::Decision;
use super::gcra::{Gcra, Step, micros};
use super::sharded::{Entries, Sharded};

/// A draw is meant to last this long at the key's current rate.
const HORIZON: Duration = Duration::from_millis(20);
/// A rate is measured over at least this long before a draw is sized on it.
const MEASURE_AT_LEAST: Duration = Duration::from_millis(5);
/// Units not spent this long after their draw are dropped; a key unused this long has paused.
const LEASE_TTL: Duration = Duration::from_millis(100);
/// No draw takes more than this share of a limit, nor more than [`MAX_DRAW`] units.
const DRAW_SHARE_OF_LIMIT: u32 = 100;
const MAX_DRAW: u32 = 1024;
/// A key unused this long is forgotten (its lease is long expired).
const FORGET_AFTER: Duration = Duration::from_secs(10);

/// The most a single draw of `gcra` takes.
pub(super) fn max_draw(gcra: Gcra) -> u32 {
    (gcra.limit / DRAW_SHARE_OF_LIMIT).min(MAX_DRAW)
}

/// Whether `gcra`'s keys are leased at all.
fn leased(gcra: Gcra) -> bool {
    max_draw(gcra) >= 2
}

pub(super) struct Leases(Sharded<Lease>);

#[derive(Debug, Default)]
struct Lease {
    /// Units drawn and not yet spent; valid for [`LEASE_TTL`] after `drawn_at`.
    left: u32,
    drawn_at: u64,
    /// `RateLimit-Remaining` and the time to a full budget, as Redis left them at the last draw.
    remaining: u32,
    ahead_us: u64,
    /// A draw of more than one unit is on its way to Redis.
    drawing: bool,
    /// Requests admitted on this key since `measured_from` (from the lease or from Redis).
    spent: u64,
    measured_from: u64,
    /// The size of the next draw, from the last measurement.
    size: u32,
    last_used: u64,
}

impl Lease {
    fn live(&self, now: u64) -> bool {
        self.left > 0 && now < self.drawn_at.saturating_add(micros(LEASE_TTL))
    }

    /// The decision of a request admitted now, `decision` with the leased units counted in.
    fn with_left(&self, decision: Decision, limit: u32) -> Decision {
        Decision {
            remaining: decision.remaining.saturating_add(self.left).min(limit),
            ..decision
        }
    }
}

/// What a request asks Redis for on one key. One holding more than one unit is the key's draw in
/// flight: dropping it unanswered lets the next request draw.
pub(super) struct Want<'a> {
    leases: &'a Leases,
    key: &'a str,
    units: u32,
}

impl Want<'_> {
    pub fn units(&self) -> u32 {
        self.units
    }
}

impl Drop for Want<'_> {
    fn drop(&mut self) {
        if self.units > 1 {
            self.leases.end_draw(self.key);
        }
    }
}

impl Leases {
    pub fn new() -> Self {
        Self(Sharded::new(FORGET_AFTER))
    }

    /// Admits one request on `key` from its lease, if it holds an unexpired unit.
    pub fn spend(&self, key: &str, gcra: Gcra, now: u64) -> Option<Decision> {
        if !leased(gcra) {
            return None;
        }
        self.with(key, now, |leases| {
            let lease = leases.get_mut(key)?;
            if !lease.live(now) {
                return None;
            }
            lease.left -= 1;
            lease.spent += 1;
            lease.last_used = now;
            let since_draw = now.saturating_sub(lease.drawn_at);
            let decision = Decision {
                allowed: true,
                limit: gcra.limit,
                remaining: lease.remaining,
                reset: Duration::from_micros(lease.ahead_us.saturating_sub(since_draw)),
            };
            Some(lease.with_left(decision, gcra.limit))
        })
    }

    /// What a request that goes to Redis for `key` asks for: more than one unit only for a busy
    /// key with no draw in flight, which the returned [`Want`] then is.
    pub fn want<'a>(&'a self, key: &'a str, gcra: Gcra, now: u64) -> Want<'a> {
        let want = |units| Want {
            leases: self,
            key,
            units,
        };
        if !leased(gcra) {
            return want(1);
        }
        let units = self.with(key, now, |leases| {
            let lease = leases.entry(key.to_owned()).or_insert_with(|| Lease {
                measured_from: now,
                size: 1,
                ..Lease::default()
            });
            if now.saturating_sub(lease.last_used) >= micros(LEASE_TTL) {
                // Back from a pause: its old rate says nothing about the next requests.
                lease.size = 1;
                lease.spent = 0;
                lease.measured_from = now;
            }
            lease.last_used = now;
            if lease.drawing {
                return 1;
            }
            let measured = now.saturating_sub(lease.measured_from);
            if measured >= micros(MEASURE_AT_LEAST) {
                // What the last measurement's rate spends in a horizon, rounded up.
                let per_horizon = (lease.spent * micros(HORIZON)).div_ceil(measured);
                lease.size = u32::try_from(per_horizon)
                    .unwrap_or(u32::MAX)
                    .clamp(1, max_draw(gcra));
                lease.spent = 0;
                lease.measured_from = now;
            }
            lease.drawing = lease.size > 1;
            lease.size
        });
        want(units)
    }

    /// Redis answered `step` to `want`: one unit (if any) is the request's, the rest is leased.
    /// The request's decision.
    pub fn drawn(&self, gcra: Gcra, mut want: Want<'_>, step: Step, now: u64) -> Decision {
        let decision = gcra.decision(step);
        if !leased(gcra) {
            return decision;
        }
        let key = want.key;
        let was_draw = want.units > 1;
        // The draw ends here, under the lock below, not again when `want` is dropped.
        want.units = 1;
        self.with(key, now, |leases| {
            let Some(lease) = leases.get_mut(key) else {
                return decision;
            };
            if was_draw {
                lease.drawing = false;
            }
            if !step.allowed() {
                return decision;
            }
            lease.spent += 1;
            lease.last_used = now;
            let extra = step.granted - 1;
            if extra > 0 || !lease.live(now) {
                // The units beyond this request's are leased, and the lease takes Redis's view.
                // A draw always meets an empty lease (it was asked for because the lease was
                // empty, and it is the key's only one in flight): what a replica holds stays
                // within one draw.
                lease.left = extra;
                lease.drawn_at = now;
                lease.remaining = decision.remaining;
                lease.ahead_us = step.ahead_us;
            }
            lease.with_left(decision, gcra.limit)
        })
    }

    /// A draw of `key` ended without its answer.
    fn end_draw(&self, key: &str) {
        self.0.with_unpruned(key, |leases| {
            if let Some(lease) = leases.get_mut(key) {
                lease.drawing = false;
            }
        });
    }

    fn with<T>(&self, key: &str, now: u64, f: impl FnOnce(&mut Entries<Lease>) -> T) -> T {
        let forget = micros(FORGET_AFTER);
        let live = |lease: &Lease| now.saturating_sub(lease.last_used) < forget;
        self.0.with(key, now, live, f)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000;
    const MINUTE: Duration = Duration::from_secs(60);

    fn gcra(limit: u32) -> Gcra {
        Gcra::new(limit, MINUTE).expect("a limit")
    }

    /// Redis's side, in memory: one TAT, the same `Gcra::take` the script transcribes, and the
    /// units it granted.
    #[derive(Default)]
    struct Store {
        tat: Option<u64>,
        granted: u64,
    }

    impl Store {
        fn take(&mut self, gcra: Gcra, now: u64, want: &Want<'_>) -> Step {
            let step = gcra.take(self.tat, now, want.units());
            if step.allowed() {
                self.tat = Some(now + step.ahead_us);
                self.granted += u64::from(step.granted);
            }
            step
        }
    }

    /// One request at `now` through `leases` and `store`; whether Redis was asked, and the
    /// decision.
    fn request(leases: &Leases, store: &mut Store, gcra: Gcra, now: u64) -> (bool, Decision) {
        if let Some(decision) = leases.spend("k", gcra, now) {
            return (false, decision);
        }
        let want = leases.want("k", gcra, now);
        let step = store.take(gcra, now, &want);
        (true, leases.drawn(gcra, want, step, now))
    }

    #[test]
    fn ordinary_limits_are_counted_in_redis_one_request_at_a_time() {
        let leases = Leases::new();
        for limit in [30, 100, 199] {
            let mut store = Store::default();
            for i in 0..u64::from(limit) {
                let (asked, decision) = request(&leases, &mut store, gcra(limit), i);
                assert!(asked && decision.allowed, "limit {limit}, request {i}");
            }
            assert!(!request(&leases, &mut store, gcra(limit), 200).1.allowed);
        }
        assert_eq!(leases.len(), 0, "no lease is kept for them");
    }

    #[test]
    fn a_busy_key_draws_what_it_spends_in_a_horizon_and_spends_it_locally() {
        let leases = Leases::new();
        let mut store = Store::default();
        let limit = gcra(10_000_000);
        // 10 requests per millisecond: 200 per horizon.
        let mut asked = 0;
        for i in 0..2_000u64 {
            let (to_redis, decision) = request(&leases, &mut store, limit, i * 100);
            assert!(decision.allowed);
            asked += u32::from(to_redis);
        }
        assert!(
            (10..=100).contains(&asked),
            "2 000 requests in 200 ms asked Redis {asked} times"
        );
        // Redis granted what was admitted, and at most one draw more.
        let granted = store.granted;
        assert!(
            (2_000..=2_000 + 200).contains(&granted),
            "{granted} units taken for 2 000 requests"
        );
    }

    #[test]
    fn draws_never_exceed_a_hundredth_of_the_limit() {
        let leases = Leases::new();
        let mut store = Store::default();
        let limit = gcra(1_000);
        let mut allowed = 0;
        let mut last_ahead = 0;
        for i in 0..1_200u64 {
            let (_, decision) = request(&leases, &mut store, limit, i);
            allowed += u32::from(decision.allowed);
            if let Some(tat) = store.tat {
                let ahead = tat - i;
                assert!(
                    ahead - last_ahead.min(ahead) <= 10 * limit.interval_us + 1,
                    "one draw took more than 10 units"
                );
                last_ahead = ahead;
            }
        }
        // A burst from a full budget: never more than the limit; at most a draw's worth less.
        assert!((990..=1_000).contains(&allowed), "{allowed} allowed");
    }

    #[test]
    fn unspent_units_expire_and_a_key_gone_quiet_draws_one_at_a_time_again() {
        let leases = Leases::new();
        let mut store = Store::default();
        let limit = gcra(10_000_000);
        for i in 0..1_000u64 {
            request(&leases, &mut store, limit, i * 100);
        }
        let quiet = 1_000 * 100 + micros(LEASE_TTL);
        assert_eq!(leases.spend("k", limit, quiet), None, "the lease expired");
        let want = leases.want("k", limit, quiet);
        assert_eq!(want.units(), 1, "a pause resets the rate");
    }

    #[test]
    fn one_draw_at_a_time_per_key() {
        let leases = Leases::new();
        let mut store = Store::default();
        let limit = gcra(10_000_000);
        for i in 0..100u64 {
            request(&leases, &mut store, limit, i * 100);
        }
        let now = 100 * 100 + 10 * MS;
        let first = leases.want("k", limit, now);
        assert!(
            first.units() > 1,
            "a busy key draws ahead: {}",
            first.units()
        );
        assert_eq!(
            leases.want("k", limit, now).units(),
            1,
            "while it is on its way"
        );
        // No answer (Redis failed, or the request was cancelled): the draw ends with its want.
        drop(first);
        let again = leases.want("k", limit, now);
        assert!(again.units() > 1, "the next request draws");
        let step = store.take(limit, now, &again);
        leases.drawn(limit, again, step, now);
        assert!(
            leases.want("k", limit, now).units() > 1,
            "an answered draw ends too"
        );
    }

    #[test]
    fn remaining_counts_the_leased_units_and_a_refusal_leases_nothing() {
        let leases = Leases::new();
        let limit = gcra(1_000);
        // The client's budget is 20 units from full in Redis.
        let mut store = Store {
            tat: Some(980 * limit.interval_us),
            granted: 0,
        };
        for i in 0..6u64 {
            request(&leases, &mut store, limit, i * MS);
        }
        let (_, decision) = request(&leases, &mut store, limit, 6 * MS);
        assert!(decision.allowed);
        assert!(decision.remaining <= 20 - 7, "{decision:?}");
        let mut refused = None;
        for i in 7..40u64 {
            let (_, decision) = request(&leases, &mut store, limit, i * MS);
            if !decision.allowed {
                refused = Some(i);
                break;
            }
        }
        let at = refused.expect("the budget runs out");
        assert!((19..=21).contains(&at), "refused at request {at}");
    }

    #[test]
    fn quiet_keys_are_forgotten() {
        let leases = Leases::new();
        let limit = gcra(10_000_000);
        for i in 0..3_000u64 {
            let _ = leases.want(&format!("ip:{i}"), limit, 0);
        }
        let later = micros(FORGET_AFTER);
        for i in 0..3_000u64 {
            let _ = leases.want(&format!("new:{i}"), limit, later);
        }
        assert!(leases.len() < 6_000, "{} keys kept", leases.len());
    }
}
