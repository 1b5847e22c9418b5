//! The limiter itself: the algorithm, Redis shared by replicas, the fallback when Redis fails.
//! Over HTTP: `tests/http.rs`; client addresses: `tests/client_ip.rs`.

mod client_ip;
mod fake_redis;
mod http;

use std::time::{Duration, Instant};

use axum::http::HeaderMap;

use super::gcra::Gcra;
use super::local::LocalLimiter;
use super::*;
use crate::config::{Config, SecretUrl};
use crate::infra::redis::RedisHandle;

const MINUTE: Duration = Duration::from_secs(60);
const SECOND_US: u64 = 1_000_000;

/// A Redis handle on the test Redis with a key prefix no other test uses.
fn test_redis() -> RedisHandle {
    let [redis] = test_redis_handles();
    redis
}

/// `N` handles on the test Redis under one fresh key prefix, as `N` processes would have them:
/// nothing is shared but Redis.
fn test_redis_handles<const N: usize>() -> [RedisHandle; N] {
    let mut config = Config::default();
    crate::testing::use_redis(&mut config);
    let url = config.redis.url.expect("use_redis sets a URL");
    std::array::from_fn(|_| {
        RedisHandle::open(&url, &config.redis.key_prefix).expect("a valid Redis URL")
    })
}

fn limits(per_ip: u32) -> RateLimitConfig {
    RateLimitConfig {
        per_ip,
        ..RateLimitConfig::default()
    }
}

/// A process-wide counter, as `/metrics` renders it (each test runs in a process of its own).
fn counter(name: &str) -> u64 {
    crate::observability::metrics::install()
        .render()
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .map_or(0, |value| value as u64)
}

fn fallback_total() -> u64 {
    counter("gateway_rate_limit_fallback_total")
}

/// Two limiters on the test Redis, as two gateway processes would have them.
fn two_replicas(per_ip: u32) -> (RateLimiter, RateLimiter) {
    let [a, b] = test_redis_handles();
    (
        RateLimiter::new(&limits(per_ip), Some(a)),
        RateLimiter::new(&limits(per_ip), Some(b)),
    )
}

#[test]
fn a_local_limit_of_three_allows_three_then_denies_until_time_passes() {
    let limiter = LocalLimiter::new();
    let gcra = Gcra::new(3, MINUTE).expect("a limit");
    let at = |seconds: u64| seconds * SECOND_US;

    let decisions: Vec<Decision> = (0..3).map(|_| limiter.check_at("k", gcra, at(0))).collect();
    assert!(decisions.iter().all(|d| d.allowed && d.limit == 3));
    let remaining: Vec<u32> = decisions.iter().map(|d| d.remaining).collect();
    assert_eq!(remaining, [2, 1, 0]);
    assert_eq!(
        decisions[2].reset, MINUTE,
        "the whole budget is back after one window"
    );

    let denied = limiter.check_at("k", gcra, at(0));
    assert_eq!(
        (denied.allowed, denied.remaining, denied.reset),
        (false, 0, Duration::from_secs(20)),
        "one request in three fits again after a third of the window"
    );
    let denied = limiter.check_at("k", gcra, at(15));
    assert_eq!(
        (denied.allowed, denied.reset),
        (false, Duration::from_secs(5))
    );
    assert!(
        limiter.check_at("other", gcra, at(15)).allowed,
        "keys are independent"
    );

    let one_more = limiter.check_at("k", gcra, at(20));
    assert_eq!((one_more.allowed, one_more.remaining), (true, 0));
    assert!(!limiter.check_at("k", gcra, at(20)).allowed);

    // A full window later the whole budget is back.
    let next_window: Vec<bool> = (0..4)
        .map(|_| limiter.check_at("k", gcra, at(80)).allowed)
        .collect();
    assert_eq!(next_window, [true, true, true, false]);
}

#[test]
fn a_denied_request_does_not_spend_budget() {
    let limiter = LocalLimiter::new();
    let gcra = Gcra::new(1, MINUTE).expect("a limit");
    assert!(limiter.check_at("k", gcra, 0).allowed);
    for second in 1..60 {
        assert!(!limiter.check_at("k", gcra, second * SECOND_US).allowed);
    }
    assert!(limiter.check_at("k", gcra, 60 * SECOND_US).allowed);
}

#[test]
fn the_local_limiter_forgets_clients_whose_budget_is_full_again() {
    let limiter = LocalLimiter::new();
    let gcra = Gcra::new(5, MINUTE).expect("a limit");
    for i in 0..5_000 {
        limiter.check_at(&format!("ip:{i}"), gcra, 0);
    }
    assert_eq!(limiter.len(), 5_000);
    // Past the window (and the pruning interval) every old entry is a full budget: dropped.
    for i in 0..5_000 {
        limiter.check_at(&format!("new:{i}"), gcra, 61 * SECOND_US);
    }
    assert_eq!(limiter.len(), 5_000, "only the new clients are kept");

    // Many clients within one window: pruned by size, never more than twice the live keys.
    let limiter = LocalLimiter::new();
    let short = Gcra::new(1, Duration::from_millis(10)).expect("a limit");
    for i in 0..200_000u64 {
        limiter.check_at(&format!("ip:{i}"), short, i * 100);
    }
    assert!(limiter.len() < 40_000, "{} keys kept", limiter.len());
}

#[tokio::test]
async fn a_limit_of_zero_is_off() {
    let limiter = RateLimiter::new(&limits(0), None);
    for _ in 0..10 {
        assert!(limiter.check("k", 0, MINUTE).await.allowed);
    }
    assert!(limiter.check("k", 5, Duration::ZERO).await.allowed);
}

#[tokio::test]
async fn redis_counts_remaining_and_reset_like_the_local_limiter() {
    let limiter = RateLimiter::new(&limits(3), Some(test_redis()));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let decision = limiter.check("ip:api:192.0.2.1", 3, MINUTE).await;
        assert!(decision.allowed);
        remaining.push(decision.remaining);
    }
    assert_eq!(remaining, [2, 1, 0]);
    let denied = limiter.check("ip:api:192.0.2.1", 3, MINUTE).await;
    assert!(!denied.allowed);
    assert!(
        denied.reset > Duration::from_secs(19) && denied.reset <= Duration::from_secs(20),
        "{:?}",
        denied.reset
    );
    assert!(!limiter.is_degraded());
}

/// `GET /api/v1/orders` from `ip` signed in as `user`, admitted on its client's and user's charges.
async fn admit(
    limiter: &RateLimiter,
    ip: &str,
    user: &str,
) -> Result<Admitted, axum::response::Response> {
    let request = axum::extract::Request::get("/api/v1/orders")
        .body(axum::body::Body::empty())
        .expect("a request");
    let charges = limiter.charges(&request, ip.parse().expect("an address"), Some(user));
    limiter.admit(&charges).await
}

#[tokio::test]
async fn charges_are_counted_in_order_up_to_the_first_refusal_locally_and_in_redis() {
    let config = RateLimitConfig {
        per_ip: 1,
        per_user: 2,
        ..RateLimitConfig::default()
    };
    for limiter in [
        RateLimiter::new(&config, None),
        RateLimiter::new(&config, Some(test_redis())),
    ] {
        let shared = limiter.is_shared();
        assert!(admit(&limiter, "192.0.2.50", "erin").await.is_ok());
        let refused = admit(&limiter, "192.0.2.50", "erin").await;
        let refused = refused.expect_err("the client's budget is spent");
        assert_eq!(refused.headers()["ratelimit-limit"], "1", "shared {shared}");
        // Refused by the client's limit, so the user's was not spent: one request is left.
        assert!(admit(&limiter, "192.0.2.51", "erin").await.is_ok());
        let refused = admit(&limiter, "192.0.2.52", "erin").await;
        let refused = refused.expect_err("erin's budget is spent");
        assert_eq!(refused.headers()["ratelimit-limit"], "2", "shared {shared}");
        // Refused by the user's limit, the client's was spent first, as if checked in turn.
        assert!(admit(&limiter, "192.0.2.52", "frank").await.is_err());
        assert!(!limiter.is_degraded());
    }
}

#[tokio::test]
async fn redis_keys_are_prefixed_and_expire() {
    let redis = test_redis();
    let limiter = RateLimiter::new(&limits(3), Some(redis.clone()));
    limiter.check("user:42", 3, MINUTE).await;
    let mut conn = redis.connection().await.expect("Redis answers");
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(redis.key("ratelimit:user:42"))
        .query_async(&mut conn)
        .await
        .expect("PTTL");
    assert!(
        ttl > 0 && ttl <= 20_001,
        "a key expiring once its budget is full again: {ttl}"
    );
}

#[tokio::test]
async fn two_gateway_replicas_on_one_redis_share_one_budget() {
    let (replica_a, replica_b) = two_replicas(10);
    let calls = (0..6).flat_map(|_| {
        [
            replica_a.check("ip:api:198.51.100.7", 10, MINUTE),
            replica_b.check("ip:api:198.51.100.7", 10, MINUTE),
        ]
    });
    let decisions = futures::future::join_all(calls).await;
    let allowed = decisions.iter().filter(|d| d.allowed).count();
    assert_eq!(allowed, 10, "10 of 12 calls across both replicas");
    assert!(!replica_a.is_degraded() && !replica_b.is_degraded());
}

/// Drives `requests` requests of one client through both replicas, eight at a time on each;
/// returns how many were allowed and how long it took.
async fn busy_client(
    replicas: &(RateLimiter, RateLimiter),
    limit: u32,
    requests: usize,
) -> (usize, Duration) {
    const LANES: usize = 8;
    let started = Instant::now();
    let lane = |replica: &RateLimiter| {
        let replica = replica.clone();
        async move {
            let mut allowed = 0;
            for _ in 0..requests / (2 * LANES) {
                allowed += usize::from(
                    replica
                        .check("ip:api:198.51.100.8", limit, MINUTE)
                        .await
                        .allowed,
                );
            }
            allowed
        }
    };
    let lanes = (0..LANES).flat_map(|_| [lane(&replicas.0), lane(&replicas.1)]);
    let allowed = futures::future::join_all(lanes).await.into_iter().sum();
    (allowed, started.elapsed())
}

#[tokio::test]
async fn a_busy_client_is_counted_in_redis_in_batches_and_its_budget_still_holds() {
    // A budget far above what the test sends: every request is allowed, and most are admitted
    // from what each replica drew ahead, not by a round trip of their own.
    let before = counter("gateway_rate_limit_redis_calls_total");
    let replicas = two_replicas(100_000_000);
    let (allowed, _) = busy_client(&replicas, 100_000_000, 16_000).await;
    assert_eq!(allowed, 16_000);
    let calls = counter("gateway_rate_limit_redis_calls_total") - before;
    assert!(
        calls < 16_000 / 4,
        "{calls} round trips for 16 000 requests"
    );

    // A budget the test exhausts: never more than the budget (plus what refilled meanwhile) is
    // let through. Less only by units drawn and left unspent: a draw per replica at the end, and
    // one per pause of 100 ms on a busy machine.
    let limit = 20_000;
    let replicas = two_replicas(limit);
    let (allowed, took) = busy_client(&replicas, limit, 32_000).await;
    let refilled = (took.as_secs_f64() * f64::from(limit) / 60.0).ceil() as usize;
    assert!(
        allowed <= limit as usize + refilled,
        "{allowed} allowed of {limit} in {took:?}"
    );
    assert!(
        allowed >= limit as usize * 9 / 10,
        "{allowed} allowed of {limit}"
    );
    assert!(!replicas.0.is_degraded() && !replicas.1.is_degraded());
}

#[tokio::test]
async fn an_unreachable_redis_falls_back_to_the_local_limiter_and_reports_degraded() {
    let before = fallback_total();
    let dead = RedisHandle::open(&SecretUrl::new("redis://127.0.0.1:9"), "forma_test:")
        .expect("a valid Redis URL");
    let limiter = RateLimiter::new(&limits(3), Some(dead));
    assert!(!limiter.is_degraded());

    // The first call finds Redis gone; the next ones do not try it again within the retry
    // period (when exactly a retry comes is `redis.rs`'s own tests, on their own timeline).
    let mut allowed = Vec::new();
    for _ in 0..4 {
        allowed.push(limiter.check("ip:api:203.0.113.9", 3, MINUTE).await.allowed);
    }
    assert_eq!(
        allowed,
        [true, true, true, false],
        "limits still hold, locally"
    );
    assert!(limiter.is_degraded());
    assert!(fallback_total() >= before + 4);
}

/// On a paused clock: the call's timeout is measured on tokio's timeline, which the runtime moves
/// on by itself while the hanging Redis keeps every task waiting, so the test neither waits out
/// the timeout nor depends on how busy the machine is.
#[tokio::test(start_paused = true)]
async fn a_hanging_redis_is_given_up_on_within_a_quarter_second() {
    let fake = fake_redis::FakeRedis::start(fake_redis::Mode::Hang).await;
    let limiter = RateLimiter::new(&limits(3), Some(fake.handle()));
    let started = tokio::time::Instant::now();
    let decision = tokio::time::timeout(
        Duration::from_secs(5),
        limiter.check("ip:api:203.0.113.10", 3, MINUTE),
    )
    .await
    .expect("the check does not wait on a hanging Redis");
    let took = started.elapsed();
    assert!(decision.allowed);
    assert!(limiter.is_degraded());
    assert!(
        took <= Duration::from_millis(260),
        "a request waited {took:?} of tokio's time on Redis"
    );
}

#[tokio::test]
async fn a_degraded_limiter_leaves_redis_alone_then_recovers_by_itself() {
    let fake = fake_redis::FakeRedis::start(fake_redis::Mode::Refuse).await;
    let limiter = RateLimiter::new(&limits(100), Some(fake.handle()));

    limiter.check("user:7", 100, MINUTE).await;
    assert!(limiter.is_degraded());
    let deadline = Instant::now() + Duration::from_secs(5);
    while fake.connections() == 0 {
        assert!(
            Instant::now() < deadline,
            "the first call never reached Redis"
        );
        tokio::task::yield_now().await;
    }
    let after_first = fake.connections();

    for _ in 0..50 {
        assert!(limiter.check("user:7", 100, MINUTE).await.allowed);
    }
    assert_eq!(
        fake.connections(),
        after_first,
        "no attempt on Redis while degraded"
    );

    // Redis answers again: some call after the retry period finds it, with no restart.
    fake.forward_to_redis();
    let deadline = Instant::now() + Duration::from_secs(10);
    while limiter.is_degraded() {
        assert!(Instant::now() < deadline, "never back on Redis");
        limiter.check("user:7", 100, MINUTE).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let redis = fake.handle();
    let mut conn = redis.connection().await.expect("Redis answers");
    let exists: bool = ::redis::cmd("EXISTS")
        .arg(redis.key("ratelimit:user:7"))
        .query_async(&mut conn)
        .await
        .expect("EXISTS");
    assert!(exists, "the decision was made in Redis");
}

#[test]
fn decisions_write_the_ietf_headers_and_a_429_in_the_error_shape() {
    let decision = Decision {
        allowed: false,
        limit: 100,
        remaining: 0,
        reset: Duration::from_millis(1_200),
    };
    let mut headers = HeaderMap::new();
    decision.apply_headers(&mut headers);
    assert_eq!(headers["ratelimit-limit"], "100");
    assert_eq!(headers["ratelimit-remaining"], "0");
    assert_eq!(headers["ratelimit-reset"], "2", "rounded up");

    let error = decision.rejection();
    assert_eq!(error.status().as_u16(), 429);
    let body = serde_json::to_value(error.body()).expect("JSON");
    assert_eq!(body["error"], "Too Many Requests");
    assert_eq!(body["message"], "Too many requests, retry in 2 seconds");

    let now = Decision {
        reset: Duration::ZERO,
        ..decision
    };
    let response = axum::response::IntoResponse::into_response(now.rejection());
    assert_eq!(response.headers()["retry-after"], "1", "never 0");
    assert_eq!(response.headers()["ratelimit-reset"], "0");
}

#[test]
fn paths_are_classified_by_whole_segment() {
    assert_eq!(classify("/api/v1/auth/login"), RouteClass::Auth);
    assert_eq!(classify("/api/v1/auth/token"), RouteClass::Auth);
    assert_eq!(classify("/api/v1/auth/refresh"), RouteClass::Auth);
    assert_eq!(classify("/api/v1/auth/change-password"), RouteClass::Auth);
    assert_eq!(classify("/api/v1/auth/me"), RouteClass::Api);
    assert_eq!(classify("/api/v1/auth/logout"), RouteClass::Api);
    assert_eq!(
        classify("/api/v1/webhooks/shopify/orders"),
        RouteClass::Webhooks
    );
    assert_eq!(classify("/api/v1/authors"), RouteClass::Api);
    assert_eq!(classify("/api/v1/orders"), RouteClass::Api);
    assert_eq!(classify("/"), RouteClass::Api);
}

#[test]
fn a_number_header_reads_as_its_number_from_the_table_and_beyond_it() {
    let small = SMALL_NUMBERS as u64;
    for n in [
        0,
        1,
        9,
        10,
        59,
        60,
        999,
        small - 1,
        small,
        small + 1,
        1_000_000_000,
        u64::MAX,
    ] {
        assert_eq!(number_value(n).to_str().unwrap(), n.to_string(), "{n}");
    }
}
