//! Rate limiting (SPEC §5.3): per client IP and per signed-in user, by route class, shared by every
//! gateway replica through Redis when Redis is configured.
//!
//! The algorithm is GCRA (see `gcra.rs` for why). With Redis, each check is one atomic script, so N
//! replicas share one budget instead of granting N×. A client busy enough on one replica is
//! counted in batches that replica draws ahead (`lease.rs`): still against the shared budget on
//! every request, with one round trip per batch. When Redis does not answer, a check is decided
//! by the in-process limiter instead: the request is served (never a 500), the limiter reports itself
//! degraded for `/health`, and `gateway_rate_limit_fallback_total` counts it. Limits are then per
//! replica until Redis answers again, which is the price of staying up.

mod client_ip;
mod gcra;
mod lease;
mod local;
mod middleware;
mod redis;
mod sharded;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use arrayvec::ArrayVec;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use ipnet::IpNet;

use crate::config::RateLimitConfig;
use crate::http::ApiError;
use crate::http::paths::is_under;
use crate::infra::redis::RedisHandle;

pub use client_ip::{X_FORWARDED_FOR, bucket as client_bucket, client_ip, ip_text};
pub use middleware::{Admitted, Charge, Charges, MAX_CHARGES, limit_by_ip};

// Names made once: a `&str` name is parsed and checked on every insert, and every response the
// gateway admits carries these three.
const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    /// Requests still allowed right now, after this one.
    pub remaining: u32,
    /// Allowed: time until the whole budget is back. Denied: time until a request fits again.
    pub reset: Duration,
}

impl Decision {
    /// The IETF `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` headers.
    pub fn apply_headers(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT, number_value(self.limit.into()));
        headers.insert(RATELIMIT_REMAINING, number_value(self.remaining.into()));
        headers.insert(RATELIMIT_RESET, number_value(ceil_secs(self.reset)));
    }

    /// The 429 in the §4 shape, with `Retry-After` and the `RateLimit-*` headers.
    pub fn rejection(&self) -> ApiError {
        // Retry-After 0 would invite an immediate retry that can still land a hair too early.
        let retry = ceil_secs(self.reset).max(1);
        let unit = if retry == 1 { "second" } else { "seconds" };
        let mut headers = HeaderMap::new();
        self.apply_headers(&mut headers);
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many requests, retry in {retry} {unit}"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry));
        for (name, value) in headers.iter() {
            error = error.with_header(name.clone(), value.clone());
        }
        error
    }
}

/// The numbers below this are header values made once, by [`number_value`].
const SMALL_NUMBERS: usize = 1024;

/// `n` as a header value. Seconds to a reset, and the counts of limits as people configure them,
/// are small numbers: those are taken from a table made once, which costs a response none of the
/// allocations a value formatted for it does (`HeaderValue::from` a number makes two).
fn number_value(n: u64) -> HeaderValue {
    // Static values, whose clones share their digits without counting references: the digits
    // live as long as the process, as the table does.
    static SMALL: std::sync::LazyLock<Vec<HeaderValue>> = std::sync::LazyLock::new(|| {
        (0..SMALL_NUMBERS)
            .map(|n| HeaderValue::from_static(Box::leak(n.to_string().into_boxed_str())))
            .collect()
    });
    let small = usize::try_from(n).ok().and_then(|index| SMALL.get(index));
    match small {
        Some(value) => value.clone(),
        // Digits only, so the value always builds.
        None => HeaderValue::from_str(itoa::Buffer::new().format(n))
            .unwrap_or_else(|_| HeaderValue::from(n)),
    }
}

fn ceil_secs(duration: Duration) -> u64 {
    duration.as_secs() + u64::from(duration.subsec_nanos() > 0)
}

/// Which per-IP limit a path falls under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteClass {
    /// `/api/v1/auth/**`: sign-in endpoints, the target of credential stuffing, get a tight limit.
    Auth,
    /// `/api/v1/webhooks/**`: Shopify and friends deliver in bursts from few addresses.
    Webhooks,
    Api,
}

impl RouteClass {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::Auth => "auth",
            RouteClass::Webhooks => "webhooks",
            RouteClass::Api => "api",
        }
    }
}

/// The class of `path`, matched by whole segment (`/api/v1/authx` is an ordinary API call).
pub fn classify(path: &str) -> RouteClass {
    if CREDENTIAL_PATHS.iter().any(|p| is_under(path, p)) {
        RouteClass::Auth
    } else if is_under(path, "/api/v1/webhooks") {
        RouteClass::Webhooks
    } else {
        RouteClass::Api
    }
}

/// Where a password or refresh token is checked: the surface worth guessing against, which gets the
/// strict `rate_limit.auth` budget. `/auth/me` and `/auth/logout` are ordinary API calls (a web app
/// asks `me` on every page) and count against `per_ip`.
const CREDENTIAL_PATHS: [&str; 4] = [
    "/api/v1/auth/login",
    "/api/v1/auth/token",
    "/api/v1/auth/refresh",
    "/api/v1/auth/change-password",
];

/// What one request is counted against: a key and its limit for each charge, in order.
type Limits<'a> = ArrayVec<(&'a str, gcra::Gcra), MAX_CHARGES>;

/// The decisions on a request's limits, in order, up to and including the first refusal.
type Decisions = ArrayVec<Decision, MAX_CHARGES>;

/// The gateway's limiter. Cheap to clone; every clone shares the same budgets.
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    per_ip: u32,
    per_user: u32,
    webhooks: u32,
    auth: u32,
    window: Duration,
    trusted_proxies: Vec<IpNet>,
    local: local::LocalLimiter,
    redis: Option<redis::RedisLimiter>,
}

impl RateLimiter {
    /// Counts in Redis when given a handle (shared by every replica), else in this process.
    pub fn new(config: &RateLimitConfig, redis: Option<RedisHandle>) -> Self {
        Self {
            inner: Arc::new(Inner {
                per_ip: config.per_ip,
                per_user: config.per_user,
                webhooks: config.webhooks,
                auth: config.auth,
                window: Duration::from_secs(config.window_secs),
                trusted_proxies: config.trusted_proxies.clone(),
                local: local::LocalLimiter::new(),
                redis: redis.map(redis::RedisLimiter::new),
            }),
        }
    }

    /// Counts one request against `key` (consumed only when allowed). A limit of 0, or an empty
    /// window, turns the limit off: always allowed. Requests are counted through
    /// [`admit`](Self::admit); the tests count single keys with this.
    #[cfg(test)]
    async fn check(&self, key: &str, limit: u32, window: Duration) -> Decision {
        let off = Decision {
            allowed: true,
            limit,
            remaining: limit,
            reset: Duration::ZERO,
        };
        let Some(gcra) = gcra::Gcra::new(limit, window) else {
            return off;
        };
        let mut limits = ArrayVec::new();
        limits.push((key, gcra));
        self.count(&limits).await.first().copied().unwrap_or(off)
    }

    /// One request counted against each of `limits` in order, up to and including the first that
    /// refuses it: its decision is the last one returned, and it and the limits after it are not
    /// spent. In Redis all of them are counted in one atomic script (one round trip), or spent
    /// from this replica's leases (`lease.rs`); what Redis could not answer is decided locally.
    async fn count(&self, limits: &Limits<'_>) -> Decisions {
        let mut decisions = Decisions::new();
        if let Some(redis) = &self.inner.redis {
            redis.check(limits, &mut decisions).await;
        }
        while decisions.last().is_none_or(|d| d.allowed) {
            let Some((key, gcra)) = limits.get(decisions.len()) else {
                break;
            };
            decisions.push(self.inner.local.check(key, *gcra));
        }
        decisions
    }

    /// Redis is configured and its last attempt failed: limits are per replica for now.
    pub fn is_degraded(&self) -> bool {
        self.inner.redis.as_ref().is_some_and(|r| r.is_degraded())
    }

    /// Whether counting is shared through Redis (when it answers).
    pub fn is_shared(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// The per-IP limit of a route class.
    pub fn ip_limit(&self, class: RouteClass) -> u32 {
        match class {
            RouteClass::Auth => self.inner.auth,
            RouteClass::Webhooks => self.inner.webhooks,
            RouteClass::Api => self.inner.per_ip,
        }
    }

    pub fn user_limit(&self) -> u32 {
        self.inner.per_user
    }

    pub fn window(&self) -> Duration {
        self.inner.window
    }

    pub fn trusted_proxies(&self) -> &[IpNet] {
        &self.inner.trusted_proxies
    }
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("shared", &self.is_shared())
            .field("degraded", &self.is_degraded())
            .finish_non_exhaustive()
    }
}
