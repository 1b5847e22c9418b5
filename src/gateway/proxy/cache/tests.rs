//! The stores' one contract, run against the embedded store and Redis alike; what the embedded one
//! promises about memory; the Redis layout; and the `Cache-Control` rules.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::control::{CacheControl, RequestPolicy, storable_for};
use super::redis::{decode, encode};
use super::store::{CacheStore, CachedResponse, MemoryStore, RedisStore};
use crate::config::Config;
use crate::infra::redis::RedisHandle;

const NOW: u64 = 1_800_000_000_000;

fn entry(body: &str, stored_at: u64, ttl_ms: u64) -> Arc<CachedResponse> {
    Arc::new(CachedResponse {
        stored_at,
        expires_at: stored_at + ttl_ms,
        headers: vec![
            (
                HeaderName::from_static("content-type"),
                HeaderValue::from_static("application/json"),
            ),
            (
                HeaderName::from_static("x-upstream"),
                HeaderValue::from_static("a"),
            ),
        ],
        body: Bytes::from(body.to_owned()),
    })
}

/// A Redis store on the test Redis under a key prefix no other test uses, and its handle.
fn redis_store() -> (RedisStore, RedisHandle) {
    let mut config = Config::default();
    crate::testing::use_redis(&mut config);
    let url = config.redis.url.expect("use_redis sets a URL");
    let handle = RedisHandle::open(&url, &config.redis.key_prefix).expect("a valid Redis URL");
    (RedisStore::new(handle.clone(), 64 * 1024 * 1024), handle)
}

/// What every store promises.
async fn the_store_contract(store: &dyn CacheStore) {
    assert_eq!(store.get("t:absent", NOW).await.unwrap(), None);

    let first = entry("{\"n\":1}", NOW, 60_000);
    store.put("t:a", first.clone(), NOW).await.unwrap();
    assert_eq!(
        store.get("t:a", NOW + 1).await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(
        store.get("t:a", NOW + 59_999).await.unwrap(),
        Some(first),
        "fresh until it expires"
    );
    assert_eq!(
        store.get("t:a", NOW + 60_000).await.unwrap(),
        None,
        "never served once expired"
    );

    let old = entry("old", NOW, 60_000);
    let new = entry("new", NOW + 10, 60_000);
    store.put("t:b", old, NOW).await.unwrap();
    store.put("t:b", new.clone(), NOW + 10).await.unwrap();
    assert_eq!(
        store.get("t:b", NOW + 20).await.unwrap(),
        Some(new),
        "the newer answer wins"
    );
    assert_eq!(
        store.get("t:c", NOW + 20).await.unwrap(),
        None,
        "keys are independent"
    );

    let stale = entry("stale", NOW - 120_000, 60_000);
    store.put("t:d", stale, NOW).await.unwrap();
    assert_eq!(
        store.get("t:d", NOW).await.unwrap(),
        None,
        "an expired entry is not kept"
    );
}

#[tokio::test]
async fn the_memory_store_keeps_the_contract() {
    the_store_contract(&MemoryStore::new(1024 * 1024)).await;
}

#[tokio::test]
async fn the_redis_store_keeps_the_contract() {
    the_store_contract(&redis_store().0).await;
}

#[tokio::test]
async fn the_memory_store_stays_within_its_bytes_and_drops_the_least_recently_used() {
    let one = entry(&"x".repeat(1000), NOW, 60_000);
    // Room for two entries of this size, not three.
    let store = MemoryStore::new(2 * (one.weight() + 200));
    for key in ["a", "b"] {
        store.put(key, one.clone(), NOW).await.unwrap();
    }
    assert!(
        store.get("a", NOW).await.unwrap().is_some(),
        "a is now the most recent"
    );
    store.put("c", one.clone(), NOW).await.unwrap();
    assert!(
        store.get("b", NOW).await.unwrap().is_none(),
        "b was the least recently used"
    );
    assert!(store.get("a", NOW).await.unwrap().is_some());
    assert!(store.get("c", NOW).await.unwrap().is_some());
    assert!(store.used_bytes() <= 2 * (one.weight() + 200));

    let huge = entry(&"x".repeat(10_000), NOW, 60_000);
    store.put("a", huge, NOW).await.unwrap();
    assert!(
        store.get("a", NOW).await.unwrap().is_none(),
        "too big to keep, and the older answer under its key goes too"
    );
    assert!(
        store.get("c", NOW).await.unwrap().is_some(),
        "others are untouched"
    );
}

#[tokio::test]
async fn the_redis_store_writes_under_the_key_prefix_with_the_entrys_expiry() {
    let (store, handle) = redis_store();
    store
        .put("tenant:k", entry("{}", NOW, 60_000), NOW)
        .await
        .unwrap();
    let mut conn = handle.connection().await.unwrap();
    let ttl: i64 = ::redis::cmd("PTTL")
        .arg(handle.key("httpcache:tenant:k"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60_000).contains(&ttl), "PTTL {ttl}");

    let () = ::redis::cmd("SET")
        .arg(handle.key("httpcache:tenant:junk"))
        .arg("not an entry")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        store.get("tenant:junk", NOW).await.unwrap(),
        None,
        "unreadable is absent"
    );
}

/// The cache shares its Redis with sessions and rate limits: however many distinct queries are
/// asked, it holds itself to its budget, its oldest entries out first, and leaves other keys be.
#[tokio::test]
async fn the_redis_store_stays_within_its_bytes_and_drops_the_oldest() {
    const BUDGET: usize = 64 * 1024;
    let (_, handle) = redis_store();
    let store = RedisStore::new(handle.clone(), BUDGET);
    let mut conn = handle.connection().await.unwrap();
    let () = ::redis::cmd("SET")
        .arg(handle.key("session:someone"))
        .arg("kept")
        .query_async(&mut conn)
        .await
        .unwrap();
    let body = "x".repeat(1024);
    for n in 0..1_000 {
        let at = NOW + n;
        store
            .put(
                &format!("t:/orders?junk={n}"),
                entry(&body, at, 3_600_000),
                at,
            )
            .await
            .unwrap();
    }
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(handle.key("httpcache:*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut stored = 0;
    for key in &keys {
        let len: usize = ::redis::cmd("STRLEN")
            .arg(key)
            .query_async(&mut conn)
            .await
            .unwrap();
        stored += len;
    }
    assert!(stored <= BUDGET, "{stored} bytes in {} entries", keys.len());
    assert!(
        keys.len() >= 40,
        "the budget is used: {} entries",
        keys.len()
    );
    let now = NOW + 1_000;
    assert!(
        store
            .get("t:/orders?junk=999", now)
            .await
            .unwrap()
            .is_some(),
        "the newest stays"
    );
    assert!(
        store.get("t:/orders?junk=0", now).await.unwrap().is_none(),
        "the oldest went first"
    );
    let session: Option<String> = ::redis::cmd("GET")
        .arg(handle.key("session:someone"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(session.as_deref(), Some("kept"));
}

#[test]
fn an_entry_survives_its_encoding_and_any_truncation_reads_as_absent() {
    let original = entry("{\"items\":[]}", NOW, 5_000);
    let bytes = encode(&original).unwrap();
    assert_eq!(decode(&bytes), Some((*original).clone()));
    let headers_end = bytes.len() - original.body.len();
    for cut in 0..headers_end {
        assert_eq!(decode(&bytes[..cut]), None, "cut at {cut}");
    }
}

fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
    pairs
        .iter()
        .map(|(k, v)| (HeaderName::from_static(k), HeaderValue::from_static(v)))
        .collect()
}

#[test]
fn cache_control_is_read_case_insensitively_across_headers() {
    let mut map = headers(&[("cache-control", "Public, MAX-AGE=\"30\"")]);
    map.append(
        "cache-control",
        HeaderValue::from_static("s-maxage=10, no-transform"),
    );
    assert_eq!(
        CacheControl::of(&map),
        CacheControl {
            max_age: Some(30),
            s_maxage: Some(10),
            ..Default::default()
        }
    );
    // Not a number: stale, never stored (RFC 9111 §4.2.1).
    for bad in ["max-age=soon", "max-age=-1", "max-age", "max-age=1.5"] {
        let cc = CacheControl::of(&headers(&[("cache-control", bad)]));
        assert_eq!(cc.max_age, Some(0), "{bad}");
    }
    // Given twice: the first counts, across header lines too (§4.2.1).
    let mut twice = headers(&[("cache-control", "max-age=0")]);
    twice.append("cache-control", HeaderValue::from_static("max-age=60"));
    assert_eq!(CacheControl::of(&twice).max_age, Some(0));
    // Too large to hold: 2^31 seconds (§1.2.2).
    let huge = CacheControl::of(&headers(&[(
        "cache-control",
        "s-maxage=99999999999999999999999",
    )]));
    assert_eq!(huge.s_maxage, Some(1 << 31));
}

#[test]
fn a_request_can_refuse_stored_answers_or_storing_its_own() {
    let plain = RequestPolicy::of(&HeaderMap::new());
    assert!(plain.may_serve && plain.may_store && plain.max_age.is_none());
    for refused in ["no-cache", "max-age=0", "no-store"] {
        let policy = RequestPolicy::of(&headers(&[("cache-control", refused)]));
        assert!(!policy.may_serve, "{refused}");
        assert_eq!(policy.may_store, refused != "no-store", "{refused}");
    }
    assert!(!RequestPolicy::of(&headers(&[("pragma", "no-cache")])).may_serve);
    let bounded = RequestPolicy::of(&headers(&[("cache-control", "max-age=5")]));
    assert_eq!(bounded.max_age, Some(Duration::from_secs(5)));
}

#[test]
fn only_a_plain_200_is_stored_for_at_most_the_routes_ttl() {
    let ttl = Duration::from_secs(60);
    let ok = StatusCode::OK;
    assert_eq!(storable_for(ok, &HeaderMap::new(), ttl), Some(ttl));
    assert_eq!(
        storable_for(ok, &headers(&[("cache-control", "max-age=10")]), ttl),
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        storable_for(
            ok,
            &headers(&[("cache-control", "max-age=10, s-maxage=20")]),
            ttl
        ),
        Some(Duration::from_secs(20)),
        "s-maxage speaks to shared caches"
    );
    assert_eq!(
        storable_for(ok, &headers(&[("cache-control", "max-age=600")]), ttl),
        Some(ttl),
        "the route's TTL caps"
    );
    for refused in [
        headers(&[("cache-control", "no-store")]),
        headers(&[("cache-control", "private")]),
        headers(&[("cache-control", "no-cache")]),
        headers(&[("cache-control", "max-age=0")]),
        headers(&[("set-cookie", "a=b")]),
        headers(&[("vary", "accept-language")]),
        headers(&[("content-type", "text/event-stream")]),
    ] {
        assert_eq!(storable_for(ok, &refused, ttl), None, "{refused:?}");
    }
    for status in [
        StatusCode::NOT_FOUND,
        StatusCode::NO_CONTENT,
        StatusCode::PARTIAL_CONTENT,
    ] {
        assert_eq!(
            storable_for(status, &HeaderMap::new(), ttl),
            None,
            "{status}"
        );
    }
}
