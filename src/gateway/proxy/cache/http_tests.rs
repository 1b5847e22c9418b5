//! The response cache through the real gateway, over HTTP, in front of an upstream that counts
//! what reaches it: a hit is an answer the upstream never saw.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{Query, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::config::{Config, Role, UrlList};
use crate::gateway::hosts::tests::user_in_tenant;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::testing::{TestApp, use_redis};

const PASSWORD: &str = "a-long-password";
/// Cacheable in these tests; `/orders` stays as it is by default (not cacheable).
const CACHED: &str = "/api/v1/analytics";

/// How to answer, from the query: `cc` (its `Cache-Control`), `status`, `cookie`, `size` (pad the
/// body to about this many bytes). Every answer says how many requests the upstream has seen
/// and for whom it was made.
#[derive(serde::Deserialize)]
struct Answer {
    cc: Option<String>,
    status: Option<u16>,
    cookie: Option<bool>,
    size: Option<usize>,
    /// Send the head and the first bytes of the body, then nothing more.
    stall: Option<bool>,
}

struct Upstream {
    url: String,
    seen: Arc<AtomicU64>,
}

impl Upstream {
    fn seen(&self) -> u64 {
        self.seen.load(Ordering::SeqCst)
    }
}

async fn counting_upstream() -> Upstream {
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    let app = Router::new().fallback(move |Query(answer): Query<Answer>, request: Request| {
        // The gateway's health checks (`/health/ready`) are not requests of the test's.
        let api = request.uri().path().starts_with("/api/");
        let n = counter.fetch_add(u64::from(api), Ordering::SeqCst) + 1;
        async move { answer_with(answer, n, request.headers()) }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream {
        url: format!("http://{addr}"),
        seen,
    }
}

fn answer_with(answer: Answer, n: u64, headers: &HeaderMap) -> Response {
    let email = headers
        .get("x-user-email")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if answer.stall == Some(true) {
        use futures::StreamExt;
        let first = futures::stream::iter([Ok::<_, std::io::Error>("{\"n\": ")]);
        let body = axum::body::Body::from_stream(first.chain(futures::stream::pending()));
        return (StatusCode::OK, body).into_response();
    }
    let padding = "x".repeat(answer.size.unwrap_or(0));
    let mut response =
        axum::Json(json!({"n": n, "for": email, "padding": padding})).into_response();
    *response.status_mut() = StatusCode::from_u16(answer.status.unwrap_or(200)).unwrap();
    if let Some(cc) = answer.cc {
        response
            .headers_mut()
            .insert("cache-control", HeaderValue::from_str(&cc).unwrap());
    }
    if answer.cookie == Some(true) {
        response
            .headers_mut()
            .insert("set-cookie", HeaderValue::from_static("pref=1"));
    }
    response
}

fn cache_analytics(config: &mut Config, upstream: &str) {
    config.services.order_url = UrlList(vec![upstream.to_owned()]);
    for route in &mut config.proxy.routes {
        if route.prefix == "/analytics" {
            route.cache_ttl_secs = Some(60);
        }
    }
}

async fn gateway(upstream: &Upstream, configure: impl FnOnce(&mut Config)) -> TestApp {
    let url = upstream.url.clone();
    TestApp::spawn_with(Role::Gateway, Backend::Sqlite, move |config| {
        cache_analytics(config, &url);
        configure(config);
    })
    .await
}

/// One GET: its `X-Cache`, and the upstream's count and addressee as the body tells them.
async fn get(client: &reqwest::Client, url: String) -> (Option<String>, u64, String) {
    get_with(client.get(url)).await
}

async fn get_with(request: reqwest::RequestBuilder) -> (Option<String>, u64, String) {
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let x_cache = response
        .headers()
        .get("x-cache")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    (
        x_cache,
        body["n"].as_u64().unwrap(),
        body["for"].as_str().unwrap().to_owned(),
    )
}

fn hit(n: u64) -> (Option<String>, u64) {
    (Some("HIT".to_owned()), n)
}

fn miss(n: u64) -> (Option<String>, u64) {
    (Some("MISS".to_owned()), n)
}

fn drop_for((x_cache, n, _): (Option<String>, u64, String)) -> (Option<String>, u64) {
    (x_cache, n)
}

/// An upstream that stops sending a cacheable answer after its head: the gateway, reading it whole
/// to store it, gives up after the route's timeout with a 504 instead of holding the client.
#[tokio::test]
async fn a_cacheable_answer_that_stalls_is_a_504_not_a_wait_for_ever() {
    let upstream = counting_upstream().await;
    let app = gateway(&upstream, |c| c.services.timeout_ms = 500).await;
    let admin = app.admin().await;
    let url = app.url(&format!("{CACHED}/overview?stall=true"));
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), admin.get(url).send())
        .await
        .expect("answered in time")
        .unwrap();
    assert_eq!(answered.status(), 504);
}

#[tokio::test]
async fn a_cacheable_get_is_answered_from_the_cache_the_second_time() {
    let upstream = counting_upstream().await;
    let app = gateway(&upstream, |_| {}).await;
    let admin = app.admin().await;
    let url = app.url(&format!("{CACHED}/summary?days=7"));

    assert_eq!(drop_for(get(&admin, url.clone()).await), miss(1));
    let second = admin.get(&url).send().await.unwrap();
    assert_eq!(second.headers()["x-cache"], "HIT");
    assert!(second.headers().contains_key("age"));
    assert!(
        second.headers().contains_key("x-request-id"),
        "this request's own id"
    );
    let body: Value = second.json().await.unwrap();
    assert_eq!(body["n"], 1, "the upstream's first answer");
    assert_eq!(upstream.seen(), 1, "the upstream saw one request");

    let other_query = app.url(&format!("{CACHED}/summary?days=30"));
    assert_eq!(drop_for(get(&admin, other_query).await), miss(2));

    // A route not marked cacheable is proxied every time, with no trace of the cache.
    for n in [3, 4] {
        let (x_cache, seen, _) = get(&admin, app.url("/api/v1/orders")).await;
        assert_eq!((x_cache, seen), (None, n));
    }

    let metrics = app.get("/metrics").await.text().await.unwrap();
    let line = |result: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("gateway_cache_requests_total")
                    && l.contains(&format!("result=\"{result}\""))
            })
            .map(|l| l.rsplit(' ').next().unwrap().to_owned())
    };
    assert_eq!(line("hit").as_deref(), Some("1"), "{metrics}");
    assert_eq!(line("miss").as_deref(), Some("2"), "{metrics}");
}

/// The isolation of entries, on whichever store `configure` picks.
async fn entries_are_never_shared_across_tenants_or_rights(configure: fn(&mut Config)) {
    let upstream = counting_upstream().await;
    let app = gateway(&upstream, configure).await;
    app.create_user("viewer@example.com", PASSWORD, UserRole::Viewer)
        .await;
    user_in_tenant(&app, "acme", "admin@acme.example", UserRole::Admin).await;
    let admin = app.admin().await;
    let (viewer, _) = app.login("viewer@example.com", PASSWORD).await;
    let (acme, _) = app.login("admin@acme.example", PASSWORD).await;
    let url = app.url(&format!("{CACHED}/summary"));

    assert_eq!(drop_for(get(&admin, url.clone()).await), miss(1));
    assert_eq!(drop_for(get(&admin, url.clone()).await), hit(1));
    let (x_cache, n, whom) = get(&viewer, url.clone()).await;
    assert_eq!(
        (x_cache.as_deref(), n, whom.as_str()),
        (Some("MISS"), 2, "viewer@example.com")
    );
    let (x_cache, n, whom) = get(&acme, url.clone()).await;
    assert_eq!(
        (x_cache.as_deref(), n, whom.as_str()),
        (Some("MISS"), 3, "admin@acme.example")
    );
    assert_eq!(drop_for(get(&viewer, url.clone()).await), hit(2));
    assert_eq!(drop_for(get(&acme, url.clone()).await), hit(3));

    // Signed out, there is nothing to serve, from the cache or otherwise.
    let anonymous = crate::testing::client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(upstream.seen(), 3);
}

#[tokio::test]
async fn entries_are_never_shared_across_tenants_or_rights_in_process() {
    entries_are_never_shared_across_tenants_or_rights(|_| {}).await;
}

#[tokio::test]
async fn entries_are_never_shared_across_tenants_or_rights_in_redis() {
    entries_are_never_shared_across_tenants_or_rights(use_redis).await;
}

#[tokio::test]
async fn with_redis_every_gateway_replica_answers_from_one_cache() {
    let upstream = counting_upstream().await;
    let first = gateway(&upstream, use_redis).await;
    let prefix = first.ctx.config.redis.key_prefix.clone();
    let url = upstream.url.clone();
    let second = TestApp::spawn_on(Role::Gateway, first.database.clone(), move |config| {
        cache_analytics(config, &url);
        use_redis(config);
        config.redis.key_prefix = prefix;
    })
    .await;
    let path = format!("{CACHED}/summary");
    assert_eq!(
        drop_for(get(&first.admin().await, first.url(&path)).await),
        miss(1)
    );
    assert_eq!(
        drop_for(get(&second.admin().await, second.url(&path)).await),
        hit(1)
    );
}

#[tokio::test]
async fn what_the_upstream_marks_private_or_personal_is_never_stored() {
    let upstream = counting_upstream().await;
    let app = gateway(&upstream, |_| {}).await;
    let admin = app.admin().await;
    let mut n = 0;
    for query in [
        "cc=no-store",
        "cc=private,%20max-age=60",
        "cc=no-cache",
        "cc=max-age=0",
        "cookie=true",
    ] {
        let url = app.url(&format!("{CACHED}/x?{query}"));
        for _ in 0..2 {
            n += 1;
            assert_eq!(drop_for(get(&admin, url.clone()).await), miss(n), "{query}");
        }
    }
    let not_found = app.url(&format!("{CACHED}/x?status=404"));
    for _ in 0..2 {
        let response = admin.get(&not_found).send().await.unwrap();
        assert_eq!(response.status(), 404);
        assert_eq!(response.headers()["x-cache"], "MISS");
    }
    n += 2;
    let shared = app.url(&format!("{CACHED}/x?cc=public,%20s-maxage=30"));
    assert_eq!(drop_for(get(&admin, shared.clone()).await), miss(n + 1));
    assert_eq!(drop_for(get(&admin, shared).await), hit(n + 1));
}

#[tokio::test]
async fn a_clients_no_cache_reaches_the_upstream_and_refreshes_the_entry_and_no_store_does_not() {
    let upstream = counting_upstream().await;
    let app = gateway(&upstream, |_| {}).await;
    let admin = app.admin().await;
    let url = app.url(&format!("{CACHED}/summary"));
    let with = |cc: &'static str| admin.get(&url).header("cache-control", cc);

    assert_eq!(drop_for(get(&admin, url.clone()).await), miss(1));
    assert_eq!(drop_for(get(&admin, url.clone()).await), hit(1));
    assert_eq!(drop_for(get_with(with("no-cache")).await), miss(2));
    assert_eq!(
        drop_for(get(&admin, url.clone()).await),
        hit(2),
        "refreshed"
    );
    assert_eq!(drop_for(get_with(with("no-store")).await), miss(3));
    assert_eq!(
        drop_for(get(&admin, url.clone()).await),
        hit(2),
        "not stored"
    );
    let pragma = admin.get(&url).header("pragma", "no-cache");
    assert_eq!(drop_for(get_with(pragma).await), miss(4));
}

#[tokio::test]
async fn the_memory_bound_evicts_the_least_recently_used_and_big_answers_pass_uncached() {
    let upstream = counting_upstream().await;
    // Room for two of the 1500-byte answers below, not three; nothing over 2 KiB is kept.
    let app = gateway(&upstream, |config| {
        config.proxy.cache_max_bytes = 4200;
        config.proxy.cache_max_entry_bytes = 2048;
    })
    .await;
    let admin = app.admin().await;
    let url = |name: &str| app.url(&format!("{CACHED}/{name}?size=1500"));

    assert_eq!(drop_for(get(&admin, url("a")).await), miss(1));
    assert_eq!(drop_for(get(&admin, url("b")).await), miss(2));
    assert_eq!(drop_for(get(&admin, url("a")).await), hit(1));
    assert_eq!(drop_for(get(&admin, url("c")).await), miss(3), "evicts b");
    assert_eq!(drop_for(get(&admin, url("a")).await), hit(1));
    assert_eq!(drop_for(get(&admin, url("b")).await), miss(4));

    let big = app.url(&format!("{CACHED}/big?size=3000"));
    for n in [5, 6] {
        let response = admin.get(&big).send().await.unwrap();
        assert_eq!(response.headers()["x-cache"], "MISS");
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (body["n"].as_u64(), body["padding"].as_str().map(str::len)),
            (Some(n), Some(3000))
        );
    }
}

#[tokio::test]
async fn cache_settings_that_cannot_work_stop_start_up() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forma.toml");
    let load = |text: &str| {
        std::fs::write(&file, text).unwrap();
        Config::load_for(Some(&file), Role::All).map_err(|e| e.to_string())
    };
    let ok = load(
        "[proxy]\nroutes = [{ prefix = \"/analytics\", service = \"order\", cache_ttl_secs = 30 }]",
    )
    .unwrap();
    assert_eq!(ok.proxy.routes[0].cache_ttl_secs, Some(30));
    let error = load(
        "[proxy]\nroutes = [{ prefix = \"/analytics\", service = \"order\", cache_ttl_secs = 0 }]",
    )
    .unwrap_err();
    assert!(
        error.contains("cache_ttl_secs of /analytics must be at least 1"),
        "{error}"
    );
    let error = load("[proxy]\ncache_max_bytes = 1000\ncache_max_entry_bytes = 2000").unwrap_err();
    assert!(error.contains("proxy.cache_max_entry_bytes"), "{error}");
}
