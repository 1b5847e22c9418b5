//! White-label hosts through the real gateway over HTTP: the host's tenant works, every other
//! tenant finds nothing there, other hosts are unchanged.

use axum::Router;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{RETRY_MISSING, TenantHosts, host_of};
use crate::config::{Config, Role, UrlList};
use crate::identity::roles::UserRole;
use crate::identity::{password, tenants, users};
use crate::infra::db::Backend;
use crate::testing::{ADMIN_PASSWORD, TestApp, client};

const HOST: &str = "prints.acme.example";
const PASSWORD: &str = "a-long-password";

/// Creates a user of tenant `slug` (created too if need be): tests of tenant isolation.
pub(crate) async fn user_in_tenant(app: &TestApp, slug: &str, email: &str, role: UserRole) {
    let db = &app.ctx.db;
    let tenant = tenants::ensure(db, slug, slug).await.unwrap();
    let new = users::NewUser {
        tenant_id: tenant.id,
        email: email.to_owned(),
        name: email.to_owned(),
        password_hash: password::hash(PASSWORD).await.unwrap(),
        roles: vec![role],
        is_super_admin: false,
    };
    users::create(db, &new)
        .await
        .unwrap()
        .expect("a new address");
}

/// An upstream that answers 200 to everything.
async fn ok_upstream() -> String {
    let app = Router::new().fallback(|| async { axum::Json(json!({"ok": true})) });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

async fn gateway() -> TestApp {
    let upstream = ok_upstream().await;
    let app = TestApp::spawn_with(Role::Gateway, Backend::Sqlite, move |config| {
        config.services.order_url = UrlList(vec![upstream]);
        config.proxy.tenant_hosts = [(HOST.to_owned(), "acme".to_owned())].into();
    })
    .await;
    user_in_tenant(&app, "acme", "ops@acme.example", UserRole::Operator).await;
    app
}

/// A bearer token of `email`.
async fn token(app: &TestApp, email: &str, password: &str) -> String {
    let response = client()
        .post(app.url("/api/v1/auth/token"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["accessToken"].as_str().unwrap().to_owned()
}

async fn status(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn another_tenants_user_finds_nothing_on_a_mapped_host_while_its_own_users_work() {
    let app = gateway().await;
    let (outsider, _) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    let (insider, _) = app.login("ops@acme.example", PASSWORD).await;

    for path in ["/api/v1/orders", "/api/v1/auth/me", "/api/v1/nothing-here"] {
        let (code, body) = status(outsider.get(app.url(path)).header("host", HOST)).await;
        assert_eq!(code, 404, "{path}");
        assert_eq!(
            body,
            json!({"statusCode": 404, "message": format!("Cannot GET {path}"), "error": "Not Found"}),
            "the same 404 as for a path that does not exist"
        );
    }
    let bearer = token(&app, "admin@localhost", ADMIN_PASSWORD).await;
    let (code, _) = status(
        client()
            .get(app.url("/api/v1/orders"))
            .header("host", HOST)
            .bearer_auth(&bearer),
    )
    .await;
    assert_eq!(code, 404, "a bearer token of another tenant too");

    let (code, body) = status(insider.get(app.url("/api/v1/auth/me")).header("host", HOST)).await;
    assert_eq!(
        (code, body["user"]["email"].as_str()),
        (200, Some("ops@acme.example"))
    );
    let (code, _) = status(insider.get(app.url("/api/v1/orders")).header("host", HOST)).await;
    assert_eq!(code, 200);

    // Public paths stay public there; everything else still needs a sign-in first.
    let (code, _) = status(client().get(app.url("/health/live")).header("host", HOST)).await;
    assert_eq!(code, 200);
    let (code, _) = status(client().get(app.url("/api/v1/orders")).header("host", HOST)).await;
    assert_eq!(code, 401);
}

#[tokio::test]
async fn hosts_not_in_the_map_are_unchanged_and_a_mapped_one_matches_with_any_port_and_case() {
    let app = gateway().await;
    let (outsider, _) = app.login("admin@localhost", ADMIN_PASSWORD).await;
    let (insider, _) = app.login("ops@acme.example", PASSWORD).await;
    for client in [&outsider, &insider] {
        let (code, _) = status(client.get(app.url("/api/v1/orders"))).await;
        assert_eq!(code, 200, "the gateway's own address");
        let (code, _) = status(
            client
                .get(app.url("/api/v1/orders"))
                .header("host", "shop.other.example"),
        )
        .await;
        assert_eq!(code, 200, "a host nobody mapped");
    }
    let (code, _) = status(
        outsider
            .get(app.url("/api/v1/orders"))
            .header("host", "Prints.ACME.example:8443"),
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn a_slug_without_a_tenant_admits_nobody_until_the_tenant_exists() {
    let app = TestApp::spawn(Role::Gateway, Backend::Sqlite).await;
    let db = &app.ctx.db;
    let hosts = TenantHosts::new(&[(HOST.to_owned(), "later".to_owned())].into()).unwrap();
    let start = Instant::now();
    assert_eq!(hosts.tenant_id(db, "later", start).await.unwrap(), None);
    let tenant = tenants::ensure(db, "later", "Later").await.unwrap();
    assert_eq!(
        hosts.tenant_id(db, "later", start).await.unwrap(),
        None,
        "remembered as missing for a while"
    );
    let after = start + RETRY_MISSING;
    assert_eq!(
        hosts.tenant_id(db, "later", after).await.unwrap(),
        Some(tenant.id)
    );
}

#[test]
fn the_host_is_compared_without_port_trailing_dot_or_case() {
    let request = |host: &str| {
        axum::http::Request::builder()
            .uri("/api/v1/orders")
            .header("host", host)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    for (given, seen) in [
        ("prints.acme.example", "prints.acme.example"),
        ("PRINTS.acme.example:443", "prints.acme.example"),
        ("prints.acme.example.", "prints.acme.example"),
        ("[::1]:3000", "[::1]"),
    ] {
        assert_eq!(host_of(&request(given)).as_deref(), Some(seen), "{given}");
    }
}

fn load(toml_text: &str) -> Result<Config, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forma.toml");
    std::fs::write(&file, toml_text).unwrap();
    Config::load_for(Some(&file), Role::All).map_err(|e| e.to_string())
}

#[test]
fn tenant_hosts_take_a_table_or_a_string_and_bad_entries_stop_start_up() {
    let table = load("[proxy]\ntenant_hosts = { \"prints.acme.example\" = \"acme\" }").unwrap();
    let text = load("[proxy]\ntenant_hosts = \"prints.acme.example=acme\"").unwrap();
    assert_eq!(table.proxy.tenant_hosts, text.proxy.tenant_hosts);
    assert_eq!(table.proxy.tenant_hosts[HOST], "acme");

    let error =
        load("[proxy]\ntenant_hosts = { \"prints.acme.example:443\" = \"acme\" }").unwrap_err();
    assert!(
        error.contains("proxy.tenant_hosts") && error.contains("without a port"),
        "{error}"
    );
    let bad_slug =
        load("[proxy]\ntenant_hosts = { \"prints.acme.example\" = \"Acme Inc\" }").unwrap();
    let error = TenantHosts::new(&bad_slug.proxy.tenant_hosts)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(error.contains("not a tenant slug"), "{error}");
    let error = load("[proxy]\ntenant_hosts = \"prints.acme.example\"").unwrap_err();
    assert!(error.contains("host=tenant-slug"), "{error}");
}
