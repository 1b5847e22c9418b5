//! The Redis limiter: one budget per client shared by every gateway replica, and the bookkeeping of
//! falling back to the in-process limiter while Redis does not answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use arrayvec::ArrayVec;

use super::gcra::{Gcra, Step, micros};
use super::lease::{Leases, Want};
use super::{Decisions, Limits, MAX_CHARGES};
use crate::infra::redis::{RedisError, RedisHandle};

/// A Redis that hangs must not stall requests: past this, the call is answered locally.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// While degraded, Redis is tried again at most this often; local answers in between.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A dead Redis would otherwise log on every request.
const WARN_EVERY: Duration = Duration::from_secs(10);
const NEVER: u64 = u64::MAX;

/// `gcra::Gcra::take` for each key in turn, atomically in Redis, stopping at the first that
/// refuses (ARGV holds each key's interval, capacity and the units wanted); returns each step's
/// granted units (0: refused) and TAT ahead of now, flattened. Redis's own clock (`TIME`) is used
/// so replicas whose clocks disagree still share one timeline. The TAT is written with `%.0f`
/// because Lua's default number formatting keeps 14 digits, and it expires once it has passed: an
/// absent key is a full budget, so keys of clients that went away cost nothing.
const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local steps = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[3 * i - 2])
  local capacity = tonumber(ARGV[3 * i - 1])
  local want = tonumber(ARGV[3 * i])
  local tat = tonumber(redis.call('GET', key) or '') or now
  if tat < now then tat = now end
  local fits = math.floor((capacity - (tat - now)) / interval)
  if fits < 1 then
    steps[#steps + 1] = 0
    steps[#steps + 1] = tat - now
    return steps
  end
  local granted = math.min(want, fits)
  local new_tat = tat + granted * interval
  local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
  redis.call('SET', key, string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
  steps[#steps + 1] = granted
  steps[#steps + 1] = new_tat - now
end
return steps
";

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Connect(#[from] RedisError),
    #[error("rate-limit script: {0}")]
    Script(#[from] ::redis::RedisError),
    #[error("rate-limit script answered {0} numbers, not a step per key")]
    Answer(usize),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

pub(super) struct RedisLimiter {
    handle: RedisHandle,
    script: ::redis::Script,
    epoch: Instant,
    fallback: Fallback,
    leases: Leases,
}

impl RedisLimiter {
    pub fn new(handle: RedisHandle) -> Self {
        Self {
            handle,
            script: ::redis::Script::new(SCRIPT),
            epoch: Instant::now(),
            fallback: Fallback::new(RETRY_EVERY),
            leases: Leases::new(),
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.fallback.is_degraded()
    }

    /// Decides `limits` in order into `decisions` (see `RateLimiter::count`): from this replica's
    /// leases while they hold, then in Redis. Stops early, leaving the rest for the caller to
    /// decide locally, when Redis does not answer (already counted and logged here).
    pub async fn check(&self, limits: &Limits<'_>, decisions: &mut Decisions) {
        let now = self.now_us();
        for (key, gcra) in limits {
            match self.leases.spend(key, *gcra, now) {
                Some(decision) => decisions.push(decision),
                None => break,
            }
        }
        let Some(pending) = limits
            .get(decisions.len()..)
            .filter(|rest| !rest.is_empty())
        else {
            return;
        };
        if !self.fallback.may_call(now) {
            count_fallback();
            return;
        }
        let wants: ArrayVec<Want<'_>, MAX_CHARGES> = pending
            .iter()
            .map(|(key, gcra)| self.leases.want(key, *gcra, now))
            .collect();
        // A want not answered (no answer, or past the refusal) ends its draw when dropped.
        // Boxed: most requests are counted from their leases above, and the round trip's future
        // would otherwise size every request's.
        let call = Box::pin(tokio::time::timeout(
            CALL_TIMEOUT,
            self.call(pending, &wants),
        ))
        .await;
        match call.unwrap_or(Err(CallError::Timeout(CALL_TIMEOUT))) {
            Ok(steps) => {
                if self.fallback.succeeded() {
                    metrics::gauge!("gateway_rate_limit_degraded").set(0.0);
                    tracing::info!("rate limiting is shared through Redis again");
                }
                let now = self.now_us();
                for (((_, gcra), want), step) in pending.iter().zip(wants).zip(steps) {
                    decisions.push(self.leases.drawn(*gcra, want, step, now));
                }
            }
            Err(error) => {
                let failed = self.fallback.failed(self.now_us());
                if failed.newly_degraded {
                    metrics::gauge!("gateway_rate_limit_degraded").set(1.0);
                }
                if failed.warn {
                    tracing::warn!(
                        %error,
                        "rate limiting falls back to per-replica limits: Redis does not answer"
                    );
                }
                count_fallback();
            }
        }
    }

    async fn call(
        &self,
        limits: &[(&str, Gcra)],
        wants: &[Want<'_>],
    ) -> Result<ArrayVec<Step, MAX_CHARGES>, CallError> {
        let mut invocation = self.script.prepare_invoke();
        for ((key, gcra), want) in limits.iter().zip(wants) {
            invocation
                .key(self.handle.key(&format!("ratelimit:{key}")))
                .arg(gcra.interval_us)
                .arg(gcra.capacity_us)
                .arg(want.units());
        }
        let mut conn = self.handle.connection().await?;
        let flat: Vec<i64> = invocation.invoke_async(&mut conn).await?;
        metrics::counter!("gateway_rate_limit_redis_calls_total").increment(1);
        let steps: ArrayVec<Step, MAX_CHARGES> = flat
            .chunks_exact(2)
            .take(limits.len())
            .zip(wants)
            .map(|(pair, want)| Step {
                // Never more than was asked for, whatever the answer says.
                granted: u32::try_from(pair[0]).unwrap_or(0).min(want.units()),
                ahead_us: u64::try_from(pair[1]).unwrap_or(0),
            })
            .collect();
        // The script answers for each key up to the first refusal: never nothing, never a refusal
        // followed by more.
        let complete = steps.len() == limits.len() || steps.last().is_some_and(|s| !s.allowed());
        if steps.is_empty() || !complete {
            return Err(CallError::Answer(flat.len()));
        }
        Ok(steps)
    }

    fn now_us(&self) -> u64 {
        micros(self.epoch.elapsed())
    }
}

/// What a failed call changed.
#[derive(Debug, PartialEq, Eq)]
struct Failed {
    newly_degraded: bool,
    /// Due for a warning in the log (at most one per [`WARN_EVERY`]).
    warn: bool,
}

/// When a limiter whose Redis failed tries it again, and when it says so in the log. Times are
/// microseconds on the limiter's clock, passed in (tests run on their own timeline).
struct Fallback {
    degraded: AtomicBool,
    retry_every_us: u64,
    /// Before this, a degraded limiter does not try Redis again.
    retry_at_us: AtomicU64,
    warned_at_us: AtomicU64,
}

impl Fallback {
    fn new(retry_every: Duration) -> Self {
        Self {
            degraded: AtomicBool::new(false),
            retry_every_us: micros(retry_every),
            retry_at_us: AtomicU64::new(0),
            warned_at_us: AtomicU64::new(NEVER),
        }
    }

    fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Whether this caller may call Redis at `now`: always while it answers; once degraded,
    /// exactly one caller per retry period probes it, and the others do not wait on it.
    fn may_call(&self, now: u64) -> bool {
        if !self.is_degraded() {
            return true;
        }
        let retry_at = self.retry_at_us.load(Ordering::Acquire);
        now >= retry_at
            && self
                .retry_at_us
                .compare_exchange(
                    retry_at,
                    now.saturating_add(self.retry_every_us),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// A call succeeded; whether the limiter was degraded until now.
    fn succeeded(&self) -> bool {
        self.degraded.swap(false, Ordering::AcqRel)
    }

    fn failed(&self, now: u64) -> Failed {
        self.retry_at_us
            .store(now.saturating_add(self.retry_every_us), Ordering::Release);
        let newly_degraded = !self.degraded.swap(true, Ordering::AcqRel);
        let warned_at = self.warned_at_us.load(Ordering::Acquire);
        let due = warned_at == NEVER || now.saturating_sub(warned_at) >= micros(WARN_EVERY);
        let warn = due
            && self
                .warned_at_us
                .compare_exchange(warned_at, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok();
        Failed {
            newly_degraded,
            warn,
        }
    }
}

fn count_fallback() {
    metrics::counter!("gateway_rate_limit_fallback_total").increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: u64 = 1_000_000;

    #[test]
    fn an_answering_redis_is_always_called() {
        let fallback = Fallback::new(RETRY_EVERY);
        assert!((0..5).all(|t| fallback.may_call(t)));
        assert!(!fallback.succeeded(), "it was never degraded");
    }

    #[test]
    fn after_a_failure_redis_is_left_alone_until_the_retry_period_has_passed() {
        let fallback = Fallback::new(RETRY_EVERY);
        let failed = fallback.failed(10 * SECOND);
        assert_eq!(
            failed,
            Failed {
                newly_degraded: true,
                warn: true
            }
        );
        assert!(fallback.is_degraded());
        for now in [10 * SECOND, 10 * SECOND + 1, 11 * SECOND - 1] {
            assert!(!fallback.may_call(now), "called at {now}");
        }
        assert!(fallback.may_call(11 * SECOND), "the probe, a second later");
        assert!(
            !fallback.may_call(11 * SECOND),
            "one probe per period: the others answer locally"
        );
        assert!(!fallback.may_call(12 * SECOND - 1));
        assert!(
            fallback.may_call(12 * SECOND),
            "a probe that hangs is retried"
        );
    }

    #[test]
    fn a_successful_probe_ends_the_fallback() {
        let fallback = Fallback::new(RETRY_EVERY);
        fallback.failed(0);
        assert!(fallback.may_call(SECOND));
        assert!(fallback.succeeded(), "it was degraded");
        assert!(!fallback.is_degraded());
        assert!(fallback.may_call(SECOND) && fallback.may_call(SECOND));
    }

    #[test]
    fn a_failed_probe_waits_a_whole_period_again_and_warnings_are_ten_seconds_apart() {
        let fallback = Fallback::new(RETRY_EVERY);
        fallback.failed(0);
        for second in 1..10 {
            let now = second * SECOND;
            assert!(fallback.may_call(now));
            let failed = fallback.failed(now);
            assert!(!failed.newly_degraded && !failed.warn, "at {second} s");
            assert!(!fallback.may_call(now + SECOND - 1));
        }
        assert!(fallback.may_call(10 * SECOND));
        assert!(
            fallback.failed(10 * SECOND).warn,
            "ten seconds after the first"
        );
    }
}
