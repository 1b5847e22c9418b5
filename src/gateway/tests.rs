//! The gateway role end to end over loopback HTTP, on both databases.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Role;
use crate::each_database;
use crate::testing::TestApp;

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

each_database! {
    async fn all_role_health_checks_the_in_process_order_service_and_the_database(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let (status, body) = json(app.get("/health").await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["status"], "ok");
        assert_eq!(body["version"], crate::VERSION);
        assert!(body["uptimeSeconds"].is_u64());
        assert_eq!(body["checks"]["order"]["status"], "ok");
        assert_eq!(body["checks"]["order"]["message"], "in-process");
        assert_eq!(body["checks"]["database"]["status"], "ok");
        assert_eq!(body["checks"]["redis"]["status"], "disabled");
        assert_eq!(body["checks"]["print"]["message"], "served by the order service");
        assert_eq!(body["checks"]["gridflock"]["status"], "disabled");
    }
}

each_database! {
    async fn split_gateway_sees_the_order_service_go_down_and_answers_503(backend: Backend) {
        let order = TestApp::spawn(Role::Order, backend).await;
        let order_url = order.url("");
        let gateway = TestApp::spawn_on(Role::Gateway, order.database.clone(), |config| {
            config.services.order_url = crate::config::UrlList(vec![order_url]);
        })
        .await;

        let (status, body) = json(gateway.get("/health").await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["order"]["status"], "ok");
        assert!(body["checks"]["order"]["latencyMs"].is_u64());

        order.stop().await.expect("the order service stops cleanly");

        // The report is cached for about two seconds; poll until it reflects the outage.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, body) = json(gateway.get("/health").await).await;
            if status == 503 {
                assert_eq!(body["status"], "down");
                assert_eq!(body["checks"]["order"]["status"], "down");
                assert!(body["checks"]["order"].get("detail").is_none(), "public: no detail: {body}");
                assert_eq!(body["checks"]["database"]["status"], "ok");
                break;
            }
            assert!(Instant::now() < deadline, "the gateway still reports the order service up: {body}");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

each_database! {
    async fn probes_answer_on_both_paths(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        for path in ["/health/live", "/live"] {
            let (status, body) = json(app.get(path).await).await;
            assert_eq!((status, body["status"].as_str()), (200, Some("ok")), "{path}");
        }
        for path in ["/health/ready", "/ready"] {
            let (status, body) = json(app.get(path).await).await;
            assert_eq!(status, 200, "{path}: {body}");
            assert_eq!(body["checks"]["database"]["status"], "ok");
        }
    }
}

each_database! {
    async fn order_role_reports_its_own_dependencies(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let (status, body) = json(app.get("/health").await).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["checks"]["database"]["status"], "ok");
        assert!(body["checks"].get("order").is_none());
        assert_eq!(app.get("/metrics").await.status(), 200);
    }
}

#[tokio::test]
async fn metrics_count_requests_by_route_template_and_status() {
    let app = TestApp::spawn(Role::All, crate::infra::db::Backend::Sqlite).await;
    app.get("/health").await;
    app.get("/no/such/thing/42").await;
    let response = app.get("/metrics").await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = response.text().await.unwrap();
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health",status="200"}"#),
        "{text}"
    );
    // Signed out, the unknown path is refused before routing: still one "unmatched" label.
    assert!(text.contains(r#"route="unmatched",status="401""#), "{text}");
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(
        !text.contains("/no/such/thing/42"),
        "raw paths must not become labels"
    );

    // Proxied requests are counted by their route-table entry.
    let admin = app.admin().await;
    admin
        .get(app.url("/api/v1/audit-logs?page=1"))
        .send()
        .await
        .unwrap();
    let text = app.get("/metrics").await.text().await.unwrap();
    assert!(
        text.contains(r#"route="/api/v1/audit-logs/*",status="200""#),
        "{text}"
    );
}

#[tokio::test]
async fn openapi_document_is_3_1_and_lists_the_health_endpoints() {
    let app = TestApp::spawn(Role::All, crate::infra::db::Backend::Sqlite).await;
    let (status, doc) = json(app.get("/openapi.json").await).await;
    assert_eq!(status, 200);
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/live",
        "/ready",
        "/metrics",
    ] {
        assert!(
            doc["paths"][path]["get"].is_object(),
            "{path} is documented"
        );
    }
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
}

#[tokio::test]
async fn docs_ui_is_served_entirely_by_forma() {
    let app = TestApp::spawn(Role::All, crate::infra::db::Backend::Sqlite).await;
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    // Every asset the page loads is relative, so it comes from forma, not from a CDN.
    for asset in [
        "./swagger-ui.css",
        "./swagger-ui-bundle.js",
        "./swagger-initializer.js",
    ] {
        assert!(html.contains(asset), "{asset} is referenced");
        let response = app
            .get(&format!("/docs/{}", asset.trim_start_matches("./")))
            .await;
        assert_eq!(response.status(), 200, "{asset}");
    }
    assert!(
        !html.contains("https://"),
        "the page loads nothing from the internet"
    );
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "{init}");
    assert!(
        init.contains(r#""validatorUrl": "none""#),
        "no online validator: {init}"
    );
}

#[tokio::test]
async fn health_checks_redis_when_it_is_configured() {
    let app = TestApp::spawn_with(
        Role::All,
        crate::infra::db::Backend::Sqlite,
        crate::testing::use_redis,
    )
    .await;
    let (status, body) = json(app.get("/health").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["checks"]["redis"]["status"], "ok");
    assert_eq!(body["status"], "ok");
}

#[tokio::test]
async fn unreachable_redis_degrades_health_without_failing_it() {
    let app = TestApp::spawn_with(Role::All, crate::infra::db::Backend::Sqlite, |config| {
        // Port 9 (discard) is closed on loopback: connections are refused at once.
        config.redis.url = Some(crate::config::SecretUrl::new("redis://127.0.0.1:9"));
    })
    .await;
    let (status, body) = json(app.get("/health").await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "degraded");
    assert_eq!(body["checks"]["redis"]["status"], "down");
    let (status, _) = json(app.get("/health/ready").await).await;
    assert_eq!(status, 200, "readiness is degraded, not down");
}

#[test]
fn every_reference_in_the_openapi_document_resolves() {
    let doc = serde_json::to_value(crate::openapi::document()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    fn refs(value: &Value, found: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    found.push(r.clone());
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&doc, &mut found);
    assert!(!found.is_empty());
    for reference in found {
        let name = reference
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{reference} is not a schema reference"));
        assert!(schemas.contains_key(name), "{reference} is not defined");
    }
}
