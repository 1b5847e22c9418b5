//! The middlewares over loopback HTTP, served with connect info as the real server does.

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::Response;
use axum::routing::{get, post};
use serde_json::Value;

use super::{limits, test_redis};
use crate::config::RateLimitConfig;
use crate::gateway::rate_limit::{RateLimiter, limit_by_ip};

/// Stands in for the auth layer: the user named in `x-test-user`, if any, is signed in, and the
/// request is admitted on its client's and its user's charges as the gateway's auth layer does.
async fn sign_in_from_header(
    State(limiter): State<RateLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let user = request
        .headers()
        .get("x-test-user")
        .and_then(|v| v.to_str().ok());
    let charges = limiter.charges(&request, peer.ip(), user);
    match limiter.admit(&charges).await {
        Err(rejected) => rejected,
        Ok(admitted) => {
            let mut response = next.run(request).await;
            admitted.apply(&mut response);
            response
        }
    }
}

struct Server {
    base: String,
    client: reqwest::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    /// "Authentication" admitting each request on its client's and user's limits, as the gateway
    /// does, and `/ui/` beside it, counted against its client alone.
    async fn start(limiter: RateLimiter) -> Self {
        let ok = || async { "ok" };
        let router = Router::new()
            .route("/api/v1/orders", get(ok))
            .route("/api/v1/auth/login", post(ok))
            .route("/api/v1/webhooks/shopify", post(ok))
            .route("/health", get(ok))
            .route("/health/ready", get(ok))
            .route("/metrics", get(ok))
            .route("/docs/index.html", get(ok))
            .route_layer(from_fn_with_state(limiter.clone(), sign_in_from_header))
            .route(
                "/ui/",
                get(ok).layer(from_fn_with_state(limiter, limit_by_ip)),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("an address");
        let task = tokio::spawn(async move {
            let service = router.into_make_service_with_connect_info::<SocketAddr>();
            let _ = axum::serve(listener, service).await;
        });
        Self {
            base: format!("http://{addr}"),
            client: crate::testing::client(),
            task,
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("an answer")
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.send("GET", path, &[]).await
    }
}

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

#[tokio::test]
async fn the_fourth_request_of_three_allowed_gets_a_429_in_the_error_shape() {
    let limiter = RateLimiter::new(&limits(3), Some(test_redis()));
    let server = Server::start(limiter.clone()).await;

    for expected in ["2", "1", "0"] {
        let response = server.get("/api/v1/orders").await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(expected)
        );
        assert!(header(&response, "ratelimit-reset").is_some());
    }

    let response = server.get("/api/v1/orders").await;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = header(&response, "retry-after")
        .and_then(|v| v.parse().ok())
        .expect("a numeric Retry-After");
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    assert_eq!(
        header(&response, "ratelimit-remaining").as_deref(),
        Some("0")
    );
    assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["statusCode"], 429);
    assert_eq!(body["error"], "Too Many Requests");
    let message = body["message"].as_str().expect("a message");
    assert!(
        message.starts_with("Too many requests, retry in"),
        "{message}"
    );
    assert!(!limiter.is_degraded(), "counted in Redis");
}

#[tokio::test]
async fn probes_metrics_and_docs_are_never_limited() {
    let server = Server::start(RateLimiter::new(&limits(1), None)).await;
    for _ in 0..5 {
        for path in ["/health", "/health/ready", "/metrics", "/docs/index.html"] {
            let response = server.get(path).await;
            assert_eq!(response.status(), 200, "{path}");
            assert!(header(&response, "ratelimit-limit").is_none(), "{path}");
        }
    }
    assert_eq!(server.get("/api/v1/orders").await.status(), 200);
    assert_eq!(server.get("/api/v1/orders").await.status(), 429);
}

#[tokio::test]
async fn webhooks_and_sign_in_are_counted_apart_from_api_calls() {
    let config = RateLimitConfig {
        per_ip: 2,
        webhooks: 3,
        auth: 1,
        ..RateLimitConfig::default()
    };
    let server = Server::start(RateLimiter::new(&config, None)).await;
    for _ in 0..2 {
        assert_eq!(server.get("/api/v1/orders").await.status(), 200);
    }
    assert_eq!(server.get("/api/v1/orders").await.status(), 429);

    for _ in 0..3 {
        let response = server.send("POST", "/api/v1/webhooks/shopify", &[]).await;
        assert_eq!(
            response.status(),
            200,
            "API calls did not spend the webhook budget"
        );
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
    }
    let response = server.send("POST", "/api/v1/webhooks/shopify", &[]).await;
    assert_eq!(response.status(), 429);

    assert_eq!(
        server
            .send("POST", "/api/v1/auth/login", &[])
            .await
            .status(),
        200
    );
    assert_eq!(
        server
            .send("POST", "/api/v1/auth/login", &[])
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn a_signed_in_user_has_a_budget_of_their_own() {
    let config = RateLimitConfig {
        per_ip: 100,
        per_user: 2,
        ..RateLimitConfig::default()
    };
    let server = Server::start(RateLimiter::new(&config, Some(test_redis()))).await;
    let alice = [("x-test-user", "alice")];
    for expected in ["1", "0"] {
        let response = server.send("GET", "/api/v1/orders", &alice).await;
        assert_eq!(response.status(), 200);
        // The user's budget is the tighter one, so its numbers are shown, not the IP's 98 or 97.
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("2"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(expected)
        );
    }
    let response = server.send("GET", "/api/v1/orders", &alice).await;
    assert_eq!(response.status(), 429);
    assert!(header(&response, "retry-after").is_some());
    let body: Value = response.json().await.expect("a JSON body");
    assert_eq!(body["statusCode"], 429);

    let bob = [("x-test-user", "bob")];
    assert_eq!(
        server.send("GET", "/api/v1/orders", &bob).await.status(),
        200
    );
    let anonymous = server.get("/api/v1/orders").await;
    assert_eq!(anonymous.status(), 200);
    assert_eq!(
        header(&anonymous, "ratelimit-limit").as_deref(),
        Some("100")
    );
}

#[tokio::test]
async fn the_tighter_per_ip_budget_is_not_hidden_by_the_user_budget() {
    let config = RateLimitConfig {
        per_ip: 3,
        per_user: 50,
        ..RateLimitConfig::default()
    };
    let server = Server::start(RateLimiter::new(&config, None)).await;
    let carol = [("x-test-user", "carol")];
    for expected in ["2", "1", "0"] {
        let response = server.send("GET", "/api/v1/orders", &carol).await;
        assert_eq!(response.status(), 200);
        assert_eq!(header(&response, "ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(expected)
        );
    }
    assert_eq!(
        server.send("GET", "/api/v1/orders", &carol).await.status(),
        429
    );
}

#[tokio::test]
async fn x_forwarded_for_counts_only_behind_a_trusted_proxy() {
    let untrusted = Server::start(RateLimiter::new(&limits(1), None)).await;
    let spoof = |ip| [("x-forwarded-for", ip)];
    let first = untrusted
        .send("GET", "/api/v1/orders", &spoof("198.51.100.1"))
        .await;
    assert_eq!(first.status(), 200);
    let dodge = untrusted
        .send("GET", "/api/v1/orders", &spoof("198.51.100.2"))
        .await;
    assert_eq!(
        dodge.status(),
        429,
        "a made-up X-Forwarded-For does not buy a new budget"
    );

    let config = RateLimitConfig {
        per_ip: 1,
        trusted_proxies: vec!["127.0.0.0/8".parse().expect("a network")],
        ..RateLimitConfig::default()
    };
    let proxied = Server::start(RateLimiter::new(&config, None)).await;
    let first = proxied
        .send("GET", "/api/v1/orders", &spoof("198.51.100.1"))
        .await;
    assert_eq!(first.status(), 200);
    let other = proxied
        .send("GET", "/api/v1/orders", &spoof("198.51.100.2"))
        .await;
    assert_eq!(other.status(), 200, "another client behind the proxy");
    let again = proxied
        .send("GET", "/api/v1/orders", &spoof("198.51.100.1"))
        .await;
    assert_eq!(again.status(), 429);
}

#[tokio::test]
async fn what_is_served_beside_authentication_is_counted_against_its_client() {
    let server = Server::start(RateLimiter::new(&limits(2), Some(test_redis()))).await;
    for expected in ["1", "0"] {
        let response = server.get("/ui/").await;
        assert_eq!(response.status(), 200);
        assert_eq!(
            header(&response, "ratelimit-remaining").as_deref(),
            Some(expected)
        );
    }
    assert_eq!(server.get("/ui/").await.status(), 429);
    assert_eq!(
        server.get("/api/v1/orders").await.status(),
        429,
        "one budget per client, whichever layer counts it"
    );
}

#[tokio::test]
async fn a_request_refused_for_its_user_still_counts_against_its_client() {
    let config = RateLimitConfig {
        per_ip: 3,
        per_user: 1,
        ..RateLimitConfig::default()
    };
    let server = Server::start(RateLimiter::new(&config, Some(test_redis()))).await;
    let dave = [("x-test-user", "dave")];
    assert_eq!(
        server.send("GET", "/api/v1/orders", &dave).await.status(),
        200
    );
    let refused = server.send("GET", "/api/v1/orders", &dave).await;
    assert_eq!(refused.status(), 429, "dave's own budget is spent");
    assert_eq!(header(&refused, "ratelimit-limit").as_deref(), Some("1"));
    // The refused request was counted against the client (checked first), as a request refused
    // further in would be; the third client request is the last one it has.
    let last = server.get("/api/v1/orders").await;
    assert_eq!(last.status(), 200);
    assert_eq!(header(&last, "ratelimit-remaining").as_deref(), Some("0"));
    assert_eq!(server.get("/api/v1/orders").await.status(), 429);
}
