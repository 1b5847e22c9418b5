//! `GET /api/v1/audit-logs` and `POST /internal/audit-logs` over loopback HTTP.

use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{AuditEntry, actions, record};
use crate::config::Role;
use crate::each_database;
use crate::identity::context::{Binding, UserContext, empty_body_sha256};
use crate::identity::roles::UserRole;
use crate::identity::{tenants, users};
use crate::infra::db::Backend;
use crate::testing::{INTERNAL_KEY, TestApp, signed_context};

async fn json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

/// The bootstrap admin's context in tenant `default`, as `role` and `is_super_admin` say.
async fn context(app: &TestApp, role: UserRole, is_super_admin: bool) -> UserContext {
    let admin = users::find_by_email(&app.ctx.db, "admin@localhost")
        .await
        .unwrap()
        .unwrap();
    let tenant = tenants::find_by_slug(&app.ctx.db, "default")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.tenant_id, tenant.id);
    UserContext {
        user_id: admin.id,
        tenant_id: tenant.id,
        email: admin.email,
        roles: vec![role],
        permissions: role.permissions(),
        is_super_admin,
    }
}

async fn get_as(app: &TestApp, context: &UserContext, path: &str) -> (u16, Value) {
    let request = app
        .client
        .get(app.url(path))
        .headers(signed_context(context, "GET", path, b""));
    json(request.send().await.unwrap()).await
}

fn assert_error(body: &Value, status: u16) {
    assert_eq!(body["statusCode"], status, "{body}");
    assert!(body["error"].is_string(), "{body}");
    assert!(
        body["message"].is_string() || body["message"].is_array(),
        "{body}"
    );
}

each_database! {
    async fn an_admin_reads_the_tenants_audit_log_page_by_page(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let admin = context(&app, UserRole::Admin, false).await;
        for action in [actions::LOGIN_FAILED, actions::LOGIN_SUCCEEDED, actions::LOGOUT] {
            let mut entry = AuditEntry::new(admin.tenant_id, action);
            entry.actor_id = Some(admin.user_id);
            record(&app.ctx.db, &entry).await.unwrap();
        }
        record(&app.ctx.db, &AuditEntry::new(Uuid::new_v4(), actions::LOGOUT)).await.unwrap();

        let (status, body) = get_as(&app, &admin, "/api/v1/audit-logs").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["total"].as_i64(), body["page"].as_u64(), body["pageSize"].as_u64()), (Some(3), Some(1), Some(20)));
        let items = body["items"].as_array().unwrap();
        assert_eq!(items[0]["action"], actions::LOGOUT);
        assert_eq!(items[2]["action"], actions::LOGIN_FAILED);
        assert_eq!(items[0]["tenantId"], admin.tenant_id.to_string());
        assert_eq!(items[0]["actorId"], admin.user_id.to_string());
        assert!(items[0]["id"].is_string() && items[0]["createdAt"].is_string());
        assert_eq!(items[0]["details"], json!({}));

        let path = format!("/api/v1/audit-logs?action={}&actorId={}&page=2&pageSize=1&from=2000-01-01", actions::LOGOUT, admin.user_id);
        let (status, body) = get_as(&app, &admin, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!((body["total"].as_i64(), body["items"].as_array().map(Vec::len)), (Some(1), Some(0)));
    }
}

each_database! {
    async fn only_a_super_admin_reads_another_tenants_log(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let other = Uuid::new_v4();
        record(&app.ctx.db, &AuditEntry::new(other, actions::USER_CREATED)).await.unwrap();
        let path = format!("/api/v1/audit-logs?tenantId={other}");

        let admin = context(&app, UserRole::Admin, false).await;
        let (status, body) = get_as(&app, &admin, &path).await;
        assert_eq!(status, 404, "{body}");
        assert_error(&body, 404);
        let own = format!("/api/v1/audit-logs?tenantId={}", admin.tenant_id);
        assert_eq!(get_as(&app, &admin, &own).await.0, 200);

        let super_admin = context(&app, UserRole::Admin, true).await;
        let (status, body) = get_as(&app, &super_admin, &path).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["items"][0]["action"], actions::USER_CREATED);
        assert_eq!(body["items"][0]["tenantId"], other.to_string());
    }
}

each_database! {
    async fn a_viewer_is_forbidden_even_with_invalid_parameters(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let viewer = context(&app, UserRole::Viewer, false).await;
        for path in ["/api/v1/audit-logs", "/api/v1/audit-logs?pageSize=101&actorId=nope"] {
            let (status, body) = get_as(&app, &viewer, path).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body["message"], "Missing permission audit.read");
        }
    }
}

#[tokio::test]
async fn the_audit_log_needs_a_verified_user_context() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let (status, body) = json(app.get("/api/v1/audit-logs").await).await;
    assert_eq!(status, 401, "{body}");
    assert_error(&body, 401);

    let admin = context(&app, UserRole::Admin, true).await;
    let mut forged = HeaderMap::new();
    let binding = Binding {
        method: "GET",
        target: "/api/v1/audit-logs",
        body_sha256: empty_body_sha256(),
    };
    admin.write_headers(&mut forged, b"not-the-internal-key", &binding);
    let response = app
        .client
        .get(app.url("/api/v1/audit-logs"))
        .headers(forged)
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["message"], "Invalid user context signature");
}

#[tokio::test]
async fn invalid_list_parameters_are_400_in_the_list_shape() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let admin = context(&app, UserRole::Admin, false).await;
    let (status, body) = get_as(&app, &admin, "/api/v1/audit-logs?pageSize=101").await;
    assert_eq!(status, 400);
    assert_eq!(
        body,
        json!({"statusCode": 400, "message": ["pageSize must not be greater than 100"], "error": "Bad Request"})
    );
    for path in [
        "?page=0",
        "?pageSize=-1",
        "?page=abc",
        "?actorId=42",
        "?from=yesterday",
        "?to=2026-13-01",
    ] {
        let (status, body) = get_as(&app, &admin, &format!("/api/v1/audit-logs{path}")).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body["message"].is_array(), "{path}: {body}");
    }
}

#[tokio::test]
async fn the_audit_log_cannot_be_written_or_erased_through_the_public_api() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let admin = context(&app, UserRole::Admin, true).await;
    for method in [
        reqwest::Method::POST,
        reqwest::Method::PUT,
        reqwest::Method::PATCH,
        reqwest::Method::DELETE,
    ] {
        let body = json!({"tenantId": admin.tenant_id, "action": "user.deleted"}).to_string();
        let response = app
            .client
            .request(method.clone(), app.url("/api/v1/audit-logs"))
            .headers(signed_context(
                &admin,
                method.as_str(),
                "/api/v1/audit-logs",
                body.as_bytes(),
            ))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, 405, "{method}: {body}");
        assert_error(&body, 405);
    }
}

async fn post_internal(app: &TestApp, key: Option<&str>, body: Value) -> (u16, Value) {
    let mut request = app.client.post(app.url("/internal/audit-logs")).json(&body);
    if let Some(key) = key {
        request = request.header("x-internal-key", key);
    }
    json(request.send().await.unwrap()).await
}

each_database! {
    async fn the_internal_endpoint_records_an_entry_for_a_caller_with_the_key(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let admin = context(&app, UserRole::Admin, false).await;
        let entry = json!({
            "tenantId": admin.tenant_id,
            "actorEmail": "nobody@example.com",
            "action": actions::LOGIN_FAILED,
            "ip": "198.51.100.4",
            "userAgent": "curl/8.5",
            "details": {"reason": "unknown e-mail"}
        });
        let (status, created) = post_internal(&app, Some(INTERNAL_KEY), entry).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["action"], actions::LOGIN_FAILED);
        assert_eq!(created["details"]["reason"], "unknown e-mail");
        assert_eq!(created["actorId"], Value::Null);

        let (status, body) = get_as(&app, &admin, "/api/v1/audit-logs").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["items"], json!([created]));
    }
}

#[tokio::test]
async fn the_internal_endpoint_refuses_callers_without_the_key() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let entry = json!({"tenantId": Uuid::new_v4(), "action": actions::LOGOUT});
    let (status, body) = post_internal(&app, None, entry.clone()).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (401, Some("Missing internal key")),
        "{body}"
    );
    for wrong in [
        "",
        "test-internal-key",
        "TEST-INTERNAL-KEY-0123456789ABCDEF",
    ] {
        let (status, body) = post_internal(&app, Some(wrong), entry.clone()).await;
        assert_eq!(status, 401, "{wrong}: {body}");
        assert_error(&body, 401);
    }
    // The key is checked before the body is even read.
    let (status, _) = post_internal(&app, Some("wrong"), json!("garbage")).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn the_internal_endpoint_validates_the_entry() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let (status, body) = post_internal(
        &app,
        Some(INTERNAL_KEY),
        json!({"tenantId": Uuid::new_v4(), "action": ""}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["message"], json!(["action must not be empty"]));
    let (status, body) =
        post_internal(&app, Some(INTERNAL_KEY), json!({"action": "auth.logout"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["message"].is_array(), "{body}");
    let response = app
        .client
        .post(app.url("/internal/audit-logs"))
        .header("x-internal-key", INTERNAL_KEY)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn role_all_does_not_serve_the_internal_api() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let tenant = Uuid::new_v4();
    let entry = json!({"tenantId": tenant, "action": actions::LOGOUT});
    // Not there for anyone: the same 404 without a session.
    let (status, body) = post_internal(&app, Some(INTERNAL_KEY), entry.clone()).await;
    assert_eq!(status, 404, "{body}");

    // Signed in, the path is simply not there.
    let browser = crate::infra::tls::http_client()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = browser
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": crate::testing::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let response = browser
        .post(app.url("/internal/audit-logs"))
        .header("x-internal-key", INTERNAL_KEY)
        .json(&entry)
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 404, "{body}");
    assert_error(&body, 404);

    let filter = super::AuditFilter::default();
    let (_, total) = super::list(&app.ctx.db, tenant, &filter, Default::default())
        .await
        .unwrap();
    assert_eq!(total, 0, "nothing was recorded");
}

#[test]
fn the_openapi_document_lists_the_audit_log_and_no_internal_route() {
    let doc = serde_json::to_value(crate::openapi::document()).unwrap();
    let list = &doc["paths"]["/api/v1/audit-logs"];
    assert!(list["get"].is_object(), "{list}");
    assert_eq!(
        list.as_object().map(|ops| ops.len()),
        Some(1),
        "only GET: {list}"
    );
    assert_eq!(list["get"]["tags"], json!(["audit"]));
    let params: Vec<&str> = list["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for name in [
        "page",
        "pageSize",
        "tenantId",
        "action",
        "actorId",
        "targetType",
        "targetId",
        "from",
        "to",
    ] {
        assert!(params.contains(&name), "{name} is documented: {params:?}");
    }
    let paths = doc["paths"].as_object().unwrap();
    assert!(
        paths.keys().all(|path| !path.starts_with("/internal")),
        "{:?}",
        paths.keys()
    );
}

#[tokio::test]
async fn a_signed_context_is_refused_on_any_other_request() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let admin = context(&app, UserRole::Admin, true).await;
    // Taken from a GET of the admin's own log, as someone on the network might.
    let captured = signed_context(&admin, "GET", "/api/v1/audit-logs", b"");
    let other_tenant = format!("/api/v1/audit-logs?tenantId={}", Uuid::new_v4());
    for (method, path) in [
        (reqwest::Method::GET, other_tenant.as_str()),
        (
            reqwest::Method::GET,
            "/api/v1/audit-logs?action=auth.login.failed",
        ),
        (reqwest::Method::HEAD, "/api/v1/audit-logs"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .headers(captured.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{method} {path}");
    }
    // The same method and path with a body it was not signed for.
    let response = app
        .client
        .get(app.url("/api/v1/audit-logs"))
        .headers(captured.clone())
        .body("{\"smuggled\": true}")
        .send()
        .await
        .unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(
        body["message"],
        "The user context was signed for another body"
    );
    // The request it was made for still works.
    let response = app
        .client
        .get(app.url("/api/v1/audit-logs"))
        .headers(captured)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_context_dated_in_the_future_is_refused() {
    let app = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let admin = context(&app, UserRole::Admin, false).await;
    let mut headers = signed_context(&admin, "GET", "/api/v1/audit-logs", b"");
    // Re-signed a minute ahead: it would stay "fresh" for a minute longer than allowed.
    let ahead = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 60_000;
    headers.insert(
        "x-user-context-timestamp",
        ahead.to_string().parse().unwrap(),
    );
    let (status, body) = json(
        app.client
            .get(app.url("/api/v1/audit-logs"))
            .headers(headers)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
}
