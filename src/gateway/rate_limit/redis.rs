//! The Redis limiter: one budget per client shared by every gateway replica, and the bookkeeping of
//! falling back to the in-process limiter while Redis does not answer.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::Decision;
use super::gcra::{Gcra, Step};
use crate::infra::redis::{RedisError, RedisHandle};

/// A Redis that hangs must not stall requests: past this, the call is answered locally.
const CALL_TIMEOUT: Duration = Duration::from_millis(250);
/// While degraded, Redis is tried again at most this often; local answers in between.
const RETRY_EVERY: Duration = Duration::from_secs(1);
/// A dead Redis would otherwise log on every request.
const WARN_EVERY: Duration = Duration::from_secs(10);
const NEVER: u64 = u64::MAX;

/// `gcra::Gcra::step`, atomically in Redis. Redis's own clock (`TIME`) is used so replicas whose
/// clocks disagree still share one timeline. The TAT is written with `%.0f` because Lua's default
/// number formatting keeps 14 digits, and it expires once it has passed: an absent key is a full
/// budget, so keys of clients that went away cost nothing.
const SCRIPT: &str = r"
if redis.replicate_commands then pcall(redis.replicate_commands) end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '') or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > capacity then
  return {0, tat - now}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', string.format('%.0f', ttl_ms))
return {1, new_tat - now}
";

#[derive(Debug, thiserror::Error)]
enum CallError {
    #[error(transparent)]
    Connect(#[from] RedisError),
    #[error("rate-limit script: {0}")]
    Script(#[from] ::redis::RedisError),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
}

pub(super) struct RedisLimiter {
    handle: RedisHandle,
    script: ::redis::Script,
    epoch: Instant,
    degraded: AtomicBool,
    /// Microseconds since `epoch` before which a degraded limiter does not try Redis again.
    retry_at_us: AtomicU64,
    warned_at_us: AtomicU64,
}

impl RedisLimiter {
    pub fn new(handle: RedisHandle) -> Self {
        Self {
            handle,
            script: ::redis::Script::new(SCRIPT),
            epoch: Instant::now(),
            degraded: AtomicBool::new(false),
            retry_at_us: AtomicU64::new(0),
            warned_at_us: AtomicU64::new(NEVER),
        }
    }

    pub fn is_degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// The decision Redis made, or `None` when the caller must decide locally (already counted
    /// and logged here).
    pub async fn check(&self, key: &str, gcra: Gcra) -> Option<Decision> {
        let now = self.now_us();
        if self.is_degraded() {
            // Exactly one caller per retry period probes Redis; the others do not wait on it.
            let retry_at = self.retry_at_us.load(Ordering::Acquire);
            let probe = now >= retry_at
                && self
                    .retry_at_us
                    .compare_exchange(
                        retry_at,
                        now.saturating_add(micros(RETRY_EVERY)),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
            if !probe {
                count_fallback();
                return None;
            }
        }
        let call = tokio::time::timeout(CALL_TIMEOUT, self.call(key, gcra)).await;
        match call.unwrap_or(Err(CallError::Timeout(CALL_TIMEOUT))) {
            Ok(step) => {
                if self.degraded.swap(false, Ordering::AcqRel) {
                    metrics::gauge!("gateway_rate_limit_degraded").set(0.0);
                    tracing::info!("rate limiting is shared through Redis again");
                }
                Some(gcra.decision(step))
            }
            Err(error) => {
                self.failed(&error, self.now_us());
                None
            }
        }
    }

    async fn call(&self, key: &str, gcra: Gcra) -> Result<Step, CallError> {
        let mut conn = self.handle.connection().await?;
        let (allowed, ahead_us): (i64, i64) = self
            .script
            .key(self.handle.key(&format!("ratelimit:{key}")))
            .arg(gcra.interval_us)
            .arg(gcra.capacity_us)
            .invoke_async(&mut conn)
            .await?;
        Ok(Step {
            allowed: allowed == 1,
            ahead_us: u64::try_from(ahead_us).unwrap_or(0),
        })
    }

    fn failed(&self, error: &CallError, now: u64) {
        self.retry_at_us
            .store(now.saturating_add(micros(RETRY_EVERY)), Ordering::Release);
        if !self.degraded.swap(true, Ordering::AcqRel) {
            metrics::gauge!("gateway_rate_limit_degraded").set(1.0);
        }
        count_fallback();
        let warned_at = self.warned_at_us.load(Ordering::Acquire);
        let due = warned_at == NEVER || now.saturating_sub(warned_at) >= micros(WARN_EVERY);
        if due
            && self
                .warned_at_us
                .compare_exchange(warned_at, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            tracing::warn!(
                %error,
                "rate limiting falls back to per-replica limits: Redis does not answer"
            );
        }
    }

    fn now_us(&self) -> u64 {
        micros(self.epoch.elapsed())
    }
}

fn count_fallback() {
    metrics::counter!("gateway_rate_limit_fallback_total").increment(1);
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}
