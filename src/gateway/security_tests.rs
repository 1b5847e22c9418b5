//! The gateway attacked from outside (issue: security fixes): each test reproduces one attack over
//! real HTTP against the real router and fails without its fix.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Role;
use crate::config::UrlList;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::testing::{ADMIN_PASSWORD, TestApp, client, raw_http};

/// A stand-in order service: reads the whole body, as a webhook handler does, and answers 200 with
/// the path it was asked for.
async fn upstream() -> String {
    let app = axum::Router::new().fallback(|request: axum::extract::Request| async move {
        let (parts, body) = request.into_parts();
        let length = axum::body::to_bytes(body, usize::MAX)
            .await
            .map(|b| b.len())
            .ok();
        axum::Json(json!({"path": parts.uri.path(), "bodyLength": length}))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn gateway_before(order_url: String) -> TestApp {
    TestApp::spawn_with(Role::Gateway, Backend::Sqlite, move |c| {
        c.services.order_url = UrlList(vec![order_url]);
    })
    .await
}

/// A body of `size` bytes sent in 64 KiB chunks without a Content-Length (chunked).
fn chunked_body(size: usize) -> reqwest::Body {
    let chunks = (0..size.div_ceil(65_536)).map(|_| Ok::<_, std::io::Error>(vec![b'x'; 65_536]));
    reqwest::Body::wrap_stream(futures::stream::iter(chunks))
}

#[tokio::test]
async fn oversized_chunked_webhooks_are_413_and_never_open_the_breaker() {
    let gateway = gateway_before(upstream().await).await;
    for _ in 0..12 {
        let response = client()
            .post(gateway.url("/api/v1/webhooks/shopify"))
            .body(chunked_body(6 * 1024 * 1024))
            .send()
            .await;
        // The gateway may answer 413 before the client has finished sending; either way the
        // client's own oversized body is never blamed on the upstream.
        if let Ok(response) = response {
            assert_eq!(response.status(), 413);
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["statusCode"], 413, "{body}");
        }
    }
    let admin = gateway.admin().await;
    let orders = admin
        .get(gateway.url("/api/v1/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(orders.status(), 200, "the breaker stayed closed");
    let health: Value = gateway.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["order"]["circuit"], "closed", "{health}");
    assert_eq!(health["status"], "ok", "{health}");
}

#[tokio::test]
async fn health_does_not_say_ok_while_a_breaker_is_open() {
    // An order service whose instances answer their probes but fail every API call.
    let app = axum::Router::new()
        .route(
            "/health/ready",
            axum::routing::get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .fallback(|| async { axum::http::StatusCode::BAD_GATEWAY });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let gateway = gateway_before(format!("http://{addr}")).await;
    let admin = gateway.admin().await;
    let mut last = 0;
    for _ in 0..12 {
        last = admin
            .get(gateway.url("/api/v1/orders"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
    }
    assert_eq!(last, 503, "the breaker opened");
    let health: Value = gateway.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["order"]["circuit"], "open", "{health}");
    assert_ne!(health["status"], "ok", "{health}");
    assert_eq!(health["checks"]["order"]["status"], "down", "{health}");
}

#[tokio::test]
async fn a_clients_connection_header_cannot_strip_what_the_gateway_sets() {
    let echo = axum::Router::new().fallback(|headers: axum::http::HeaderMap| async move {
        let get = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        axum::Json(json!({
            "requestId": get("x-request-id"),
            "forwardedFor": get("x-forwarded-for"),
            "realIp": get("x-real-ip"),
            "forwarded": get("forwarded"),
            "signature": get("x-user-context-signature"),
        }))
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, echo).await });
    let gateway = gateway_before(format!("http://{addr}")).await;
    let admin = gateway.admin().await;
    let seen: Value = admin
        .get(gateway.url("/api/v1/orders"))
        .header(
            "connection",
            "x-request-id, x-forwarded-for, x-real-ip, x-user-context-signature",
        )
        .header("x-request-id", "req-attack-1")
        .header("x-real-ip", "10.6.6.6")
        .header("forwarded", "for=10.6.6.6")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["requestId"], "req-attack-1", "{seen}");
    assert_eq!(seen["forwardedFor"], "127.0.0.1", "{seen}");
    assert_eq!(seen["realIp"], "127.0.0.1", "{seen}");
    assert_eq!(seen["forwarded"], Value::Null, "{seen}");
    assert!(seen["signature"].is_string(), "{seen}");
}

#[tokio::test]
async fn dot_segments_cannot_reach_a_route_through_a_public_prefix() {
    let gateway = gateway_before(upstream().await).await;
    for path in [
        "/api/v1/webhooks/shopify/../../orders",
        "/api/v1/webhooks/shopify/%2e%2e/%2e%2e/orders",
        "/api/v1/webhooks/shopify%2f..%2f..%2forders",
    ] {
        let answer = raw_http(
            gateway.addr,
            &format!(
                "POST {path} HTTP/1.1\r\nHost: forma\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
            ),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert!(answer.contains("\"statusCode\":400"), "{path}: {answer}");
        assert!(
            !answer.contains("/api/v1/orders"),
            "never forwarded: {answer}"
        );
    }
}

#[tokio::test]
async fn public_health_names_the_failing_check_but_not_where_and_admins_see_why() {
    // An order service nobody listens for.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let gateway = gateway_before(dead.clone()).await;
    let response = gateway.get("/health").await;
    assert_eq!(response.status(), 503);
    let text = response.text().await.unwrap();
    let health: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(health["checks"]["order"]["status"], "down", "{health}");
    let port = dead.rsplit(':').next().unwrap();
    assert!(!text.contains(port), "no address in public health: {text}");
    assert!(!text.contains("refused"), "no error text: {text}");

    let admin = gateway.admin().await;
    let details: Value = admin
        .get(gateway.url("/api/v1/admin/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let detail = details["checks"]["order"]["detail"]
        .as_str()
        .unwrap_or_default();
    assert!(detail.contains(port), "{details}");
    assert_eq!(
        client()
            .get(gateway.url("/api/v1/admin/health"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Addresses and errors of the deployment are not a tenant's to read, not even its admin's.
    gateway
        .create_user(
            "tenant-admin@example.com",
            "a-long-password-1",
            UserRole::Admin,
        )
        .await;
    let (tenant_admin, _) = gateway
        .login("tenant-admin@example.com", "a-long-password-1")
        .await;
    let refused = tenant_admin
        .get(gateway.url("/api/v1/admin/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(!refused.text().await.unwrap().contains(port));
}

#[tokio::test]
async fn a_connection_that_dribbles_its_headers_is_closed() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.server.header_read_timeout_secs = 1;
    })
    .await;
    // Half a request head, then silence: the server hangs up instead of waiting for minutes.
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        raw_http(app.addr, "GET /health HTTP/1.1\r\nHost: forma\r\nX-Slow: "),
    )
    .await
    .expect("the server closed the connection");
    assert!(!answer.contains("200 OK"), "{answer}");
}

#[tokio::test]
async fn idle_connections_beyond_the_cap_wait_and_are_served_once_a_slot_frees() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.server.header_read_timeout_secs = 1;
        c.server.max_connections = 1;
    })
    .await;
    // Takes the only slot and sends nothing.
    let idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let served = tokio::time::timeout(Duration::from_secs(30), app.get("/health/live"))
        .await
        .expect("served once the idle connection timed out");
    assert_eq!(served.status(), 200);
    drop(idle);
}

#[tokio::test]
async fn a_websocket_holds_its_connection_slot_until_it_closes() {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;

    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.server.header_read_timeout_secs = 1;
        c.server.max_connections = 1;
    })
    .await;
    // The sign-in's connection closes with its client, and frees the only slot.
    let (_, cookie) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    let mut request = format!("ws://{}/socket.io/?EIO=4&transport=websocket", app.addr)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("cookie", format!("forma.sid={cookie}").parse().unwrap());
    let stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let (mut socket, _) = tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::client_async(request, stream),
    )
    .await
    .expect("upgraded once the sign-in's connection closed")
    .unwrap();
    let open = socket.next().await.unwrap().unwrap();
    assert!(open.to_text().unwrap().starts_with('0'), "{open:?}");

    // While the websocket is open, another connection waits in the backlog…
    let mut waiting = tokio::spawn(client().get(app.url("/health/live")).send());
    assert!(
        tokio::time::timeout(Duration::from_secs(3), &mut waiting)
            .await
            .is_err(),
        "served while the websocket held the only slot"
    );
    // …and is served once it closes.
    drop(socket);
    let served = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("served once the websocket closed")
        .unwrap()
        .unwrap();
    assert_eq!(served.status(), 200);
}

#[tokio::test]
async fn internal_paths_are_404_with_or_without_a_session() {
    for role in [Role::All, Role::Gateway] {
        let app = TestApp::spawn_with(role, Backend::Sqlite, |c| {
            c.services.order_url = UrlList(vec!["http://127.0.0.1:9".into()]);
        })
        .await;
        let admin = app.admin().await;
        for path in ["/internal/audit-logs", "/api/v1/internal/orders/1"] {
            let anonymous = client()
                .post(app.url(path))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let signed_in = admin
                .post(app.url(path))
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            assert_eq!(
                (anonymous.status().as_u16(), signed_in.status().as_u16()),
                (404, 404),
                "{role:?} {path}"
            );
        }
    }
}

#[tokio::test]
async fn production_cookies_are_secure_and_hsts_is_sent_unless_disabled() {
    let production = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.environment = crate::config::Environment::Production;
    })
    .await;
    let login = client()
        .post(production.url("/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": crate::testing::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap();
    assert!(cookie.contains("Secure"), "{cookie}");
    assert!(login.headers().contains_key("strict-transport-security"));

    let opted_out = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.environment = crate::config::Environment::Production;
        c.session.secure_cookie = Some(false);
    })
    .await;
    let health = opted_out.get("/health").await;
    assert!(!health.headers().contains_key("strict-transport-security"));
}
