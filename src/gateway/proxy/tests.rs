//! The gateway in front of a real HTTP upstream standing in for the order service: what arrives
//! there is exactly what the SPEC says should.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;

use axum::extract::Request;
use axum::http::HeaderMap;
use base64::Engine;
use futures::StreamExt;
use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;

use crate::config::Role;
use crate::config::UrlList;
use crate::identity::context::UserContext;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::testing::{INTERNAL_KEY, TestApp, client};

const SHOPIFY_SECRET: &str = "shopify-webhook-secret";

/// Signals the first body chunk it receives, then reads the rest.
type FirstChunk = Arc<Mutex<Option<oneshot::Sender<()>>>>;

/// An upstream that describes what it received: path, headers, body digest, Shopify HMAC verdict.
async fn echo_upstream(first_chunk: FirstChunk) -> String {
    let app = Router::new().fallback(move |request: Request| {
        let first_chunk = first_chunk.clone();
        async move {
            let (parts, body) = request.into_parts();
            let mut stream = body.into_data_stream();
            let mut bytes = Vec::new();
            let mut chunks = 0;
            while let Some(Ok(chunk)) = stream.next().await {
                if chunks == 0 {
                    if let Some(tx) = first_chunk.lock().unwrap().take() {
                        let _ = tx.send(());
                    }
                }
                chunks += 1;
                bytes.extend_from_slice(&chunk);
            }
            let headers: BTreeMap<String, String> = parts
                .headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("<binary>").to_owned()))
                .collect();
            let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SHOPIFY_SECRET.as_bytes()).unwrap();
            mac.update(&bytes);
            let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            let digest = crate::identity::context::body_sha256(&bytes);
            let binding = crate::identity::context::Binding {
                method: parts.method.as_str(),
                target: parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
                body_sha256: &digest,
            };
            let context = UserContext::from_headers(&parts.headers, INTERNAL_KEY.as_bytes(), Duration::from_secs(30), &binding);
            axum::Json(json!({
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "query": parts.uri.query(),
                "headers": headers,
                "bodyLength": bytes.len(),
                "bodySha256": hex::encode(Sha256::digest(&bytes)),
                "hmacValid": parts.headers.get("x-shopify-hmac-sha256").and_then(|v| v.to_str().ok()) == Some(expected.as_str()),
                "contextEmail": context.as_ref().ok().map(|c| c.email.clone()),
                "contextError": context.err().map(|e| e.to_string()),
            }))
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn gateway_before(upstream: &str) -> TestApp {
    let upstream = upstream.to_owned();
    TestApp::spawn_with(Role::Gateway, Backend::Sqlite, move |config| {
        config.services.order_url = UrlList(vec![upstream]);
    })
    .await
}

async fn echo(response: reqwest::Response) -> Value {
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

#[tokio::test]
async fn routes_go_to_their_service_by_whole_segment_and_internal_paths_never() {
    let upstream = echo_upstream(Default::default()).await;
    let gateway = gateway_before(&upstream).await;
    let admin = gateway.admin().await;
    let seen = echo(
        admin
            .get(gateway.url("/api/v1/orders/42?page=2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (seen["path"].as_str(), seen["query"].as_str()),
        (Some("/api/v1/orders/42"), Some("page=2"))
    );
    // Print jobs fall back to the order service while no print URL is configured.
    let seen = echo(
        admin
            .get(gateway.url("/api/v1/print-jobs"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["path"], "/api/v1/print-jobs");

    for path in [
        "/api/v1/orders-x",
        "/internal/orders/1",
        "/api/v1/internal/audit-logs",
    ] {
        let response = admin.get(gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
    let gridflock = admin
        .get(gateway.url("/api/v1/gridflock/plates"))
        .send()
        .await
        .unwrap();
    assert_eq!(gridflock.status(), 503);
    let body: Value = gridflock.json().await.unwrap();
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("services.gridflock_url"),
        "{body}"
    );
}

#[tokio::test]
async fn the_upstream_gets_a_signed_context_and_none_of_the_clients_identity_headers() {
    let upstream = echo_upstream(Default::default()).await;
    let gateway = gateway_before(&upstream).await;
    gateway
        .create_user("viewer@example.com", "a-long-password", UserRole::Viewer)
        .await;
    let (_, session) = gateway.login("viewer@example.com", "a-long-password").await;
    let seen = echo(
        client()
            .get(gateway.url("/api/v1/orders"))
            .header("x-user-permissions", "users.manage")
            .header("x-is-super-admin", "true")
            .header("x-internal-key", "guess")
            .header("cookie", format!("theme=dark; forma.sid={session}"))
            .header("x-request-id", "req-123")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["contextEmail"], "viewer@example.com", "{seen}");
    let headers = &seen["headers"];
    assert_eq!(headers["x-is-super-admin"], "false");
    assert!(
        !headers["x-user-permissions"]
            .as_str()
            .unwrap()
            .contains("users.manage")
    );
    assert!(headers.get("x-internal-key").is_none());
    assert_eq!(
        headers["cookie"], "theme=dark",
        "the session cookie stays at the gateway"
    );
    assert_eq!(headers["x-request-id"], "req-123");
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert!(headers["x-user-context-signature"].is_string());
}

/// With `server.connection_threads`, each connection is served on one of those threads and
/// forwarded on that thread's own upstream pool: signed-in requests from many connections at once
/// still reach the upstream with their context, and streamed bodies arrive whole.
#[tokio::test]
async fn connection_threads_serve_concurrent_signed_in_requests_and_streamed_bodies() {
    serve_concurrent_signed_in_requests_and_streamed_bodies(Some(2)).await;
}

/// The same on the shared runtime (`server.connection_threads = 0`).
#[tokio::test]
async fn the_shared_runtime_serves_concurrent_signed_in_requests_and_streamed_bodies() {
    serve_concurrent_signed_in_requests_and_streamed_bodies(Some(0)).await;
}

async fn serve_concurrent_signed_in_requests_and_streamed_bodies(threads: Option<usize>) {
    let upstream = echo_upstream(Default::default()).await;
    let gateway = TestApp::spawn_with(Role::Gateway, Backend::Sqlite, {
        let upstream = upstream.clone();
        move |config| {
            config.services.order_url = UrlList(vec![upstream]);
            config.server.connection_threads = threads;
        }
    })
    .await;
    gateway
        .create_user("viewer@example.com", "a-long-password", UserRole::Viewer)
        .await;
    let (_, session) = gateway.login("viewer@example.com", "a-long-password").await;
    let payload: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&payload));
    // A client (and so a connection) per task, each sending several requests on it.
    let clients = (0..8).map(|_| {
        let (gateway, session, payload) = (&gateway, &session, payload.clone());
        async move {
            let client = client();
            let mut seen = Vec::new();
            for _ in 0..5 {
                let signed_in = client
                    .get(gateway.url("/api/v1/orders"))
                    .header("cookie", format!("forma.sid={session}"))
                    .send();
                seen.push(echo(signed_in.await.unwrap()).await);
                let streamed = client
                    .post(gateway.url("/api/v1/webhooks/shopify"))
                    .body(payload.clone())
                    .send();
                seen.push(echo(streamed.await.unwrap()).await);
            }
            seen
        }
    });
    let seen: Vec<Value> = futures::future::join_all(clients)
        .await
        .into_iter()
        .flatten()
        .collect();
    assert_eq!(seen.len(), 80);
    for (signed_in, streamed) in seen.iter().step_by(2).zip(seen.iter().skip(1).step_by(2)) {
        assert_eq!(
            signed_in["contextEmail"], "viewer@example.com",
            "{signed_in}"
        );
        assert_eq!(streamed["bodySha256"], digest, "{streamed}");
    }
}

#[tokio::test]
async fn a_webhook_body_arrives_byte_for_byte_and_its_hmac_still_verifies() {
    let upstream = echo_upstream(Default::default()).await;
    let gateway = gateway_before(&upstream).await;
    // Unusual whitespace, escapes and non-ASCII text: any re-serialization would break the HMAC.
    let body = "{ \"id\" :  820982911946154508 ,\n\t\"note\":\"Größe: 7½ — ünïcödé ✓ 日本\",\r\n \"total\" : 1.50  , \"esc\":\"\\u00e9\\/\" }  \n";
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(SHOPIFY_SECRET.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let seen = echo(
        client()
            .post(gateway.url("/api/v1/webhooks/shopify"))
            .header("content-type", "application/json")
            .header("x-shopify-hmac-sha256", &signature)
            .header("x-shopify-topic", "orders/create")
            .header("x-shopify-shop-domain", "example.myshopify.com")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(seen["hmacValid"], true, "{seen}");
    assert_eq!(
        seen["bodySha256"],
        hex::encode(Sha256::digest(body.as_bytes()))
    );
    assert_eq!(seen["headers"]["x-shopify-topic"], "orders/create");
    assert!(seen["contextEmail"].is_null(), "webhooks carry no user");
}

#[tokio::test]
async fn a_two_megabyte_body_streams_through_without_being_buffered_whole() {
    let (first_tx, first_rx) = oneshot::channel();
    let upstream = echo_upstream(Arc::new(Mutex::new(Some(first_tx)))).await;
    let gateway = gateway_before(&upstream).await;
    let payload: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let digest = hex::encode(Sha256::digest(&payload));

    // The client holds back the second half until the upstream has seen the first chunk: a
    // gateway that buffered the whole body would never forward it, and this test would time out.
    let (head, tail) = payload.split_at(64 * 1024);
    let (head, tail) = (head.to_vec(), tail.to_vec());
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(head) }).chain(
        futures::stream::once(async move {
            let _ = first_rx.await;
            Ok(tail)
        }),
    );
    let request = client()
        .post(gateway.url("/api/v1/webhooks/shopify"))
        .body(reqwest::Body::wrap_stream(stream))
        .send();
    let response = tokio::time::timeout(Duration::from_secs(20), request)
        .await
        .expect("the body streamed through before the client finished sending")
        .unwrap();
    let seen = echo(response).await;
    assert_eq!(seen["bodyLength"], 2 * 1024 * 1024);
    assert_eq!(seen["bodySha256"], digest);
}

#[tokio::test]
async fn a_body_over_the_limit_is_refused_with_413_before_reaching_the_upstream() {
    let upstream = echo_upstream(Default::default()).await;
    let gateway = gateway_before(&upstream).await;
    let admin = gateway.admin().await;
    let too_big = vec![b'x'; 1024 * 1024 + 1];
    let response = admin
        .post(gateway.url("/api/v1/orders"))
        .body(too_big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 413);
    let webhook = client()
        .post(gateway.url("/api/v1/webhooks/shopify"))
        .body(vec![b'x'; 5 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(webhook.status(), 413);
}

#[tokio::test]
async fn a_dead_upstream_is_a_502_and_then_the_breaker_answers_503_fast() {
    // A port that was just free: nothing listens there.
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let gateway = gateway_before(&dead).await;
    let admin = gateway.admin().await;
    let first = admin
        .get(gateway.url("/api/v1/orders"))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 502);
    let mut statuses = vec![];
    for _ in 0..12 {
        statuses.push(
            admin
                .get(gateway.url("/api/v1/orders"))
                .send()
                .await
                .unwrap(),
        );
    }
    let last = statuses.pop().unwrap();
    assert_eq!(last.status(), 503, "the breaker is open");
    assert!(last.headers().contains_key("retry-after"));
    let health: Value = gateway.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["order"]["circuit"], "open", "{health}");
}

/// In role `all` the route's timeout holds as it does split: a request whose handler waits on
/// the database's write lock past it is a 504, not a request held until the client gives up.
#[tokio::test]
async fn an_in_process_request_past_its_timeout_is_a_504() {
    let app =
        TestApp::spawn_with(Role::All, Backend::Sqlite, |c| c.services.timeout_ms = 300).await;
    let admin = app.admin().await;
    // The test holds SQLite's one write lock: the mapping's insert waits for it.
    let mut holding = app.ctx.db.begin().await.unwrap();
    crate::on_tx!(&mut holding, conn => {
        sqlx::query("CREATE TABLE held_lock (x INTEGER)")
            .execute(&mut *conn)
            .await
            .map(drop)
    })
    .unwrap();
    let created = admin
        .post(app.url("/api/v1/product-mappings"))
        .json(&json!({"sku": "CUBE", "productName": "Cube",
            "printFiles": [{"fileId": "f", "fileName": "cube.gcode"}]}))
        .send();
    let response = tokio::time::timeout(Duration::from_secs(8), created)
        .await
        .expect("answered while the lock is held")
        .unwrap();
    holding.rollback().await.unwrap();
    assert_eq!(response.status(), 504);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["statusCode"], 504, "{body}");
}

#[tokio::test]
async fn security_headers_are_on_every_response() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    for path in ["/health", "/api/v1/orders", "/nothing"] {
        let response = app.get(path).await;
        let h: &HeaderMap = response.headers();
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["referrer-policy"], "no-referrer");
        assert!(
            !h.contains_key("strict-transport-security"),
            "no HSTS over plain HTTP"
        );
    }
    let secure = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.session.secure_cookie = Some(true)
    })
    .await;
    assert!(
        secure
            .get("/health")
            .await
            .headers()
            .contains_key("strict-transport-security")
    );
}

#[tokio::test]
async fn cors_allows_the_configured_origins_with_credentials_only() {
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        c.cors.origins = vec!["https://app.example.com".into()];
    })
    .await;
    let preflight = client()
        .request(reqwest::Method::OPTIONS, app.url("/api/v1/auth/login"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success());
    let h = preflight.headers();
    assert_eq!(h["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(h["access-control-allow-credentials"], "true");
    let other = client()
        .get(app.url("/health"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert!(!other.headers().contains_key("access-control-allow-origin"));
}
