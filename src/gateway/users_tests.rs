//! User and role management over loopback HTTP.

use serde_json::{Value, json};

use crate::config::Role;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::identity::users::{self, NewUser};
use crate::identity::{password, tenants};
use crate::infra::db::Backend;
use crate::testing::{TestApp, client};

const PASSWORD: &str = "a-long-password";

each_database! {
    async fn an_admin_creates_lists_updates_and_deletes_users(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let created = admin
            .post(app.url("/api/v1/users"))
            .json(&json!({"email": "New.Op@Example.com", "name": "Op", "password": PASSWORD, "roles": ["operator"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(created.status(), 201);
        let user: Value = created.json().await.unwrap();
        assert_eq!(user["email"], "new.op@example.com");
        assert_eq!(user["roles"], json!(["operator"]));
        let id = user["id"].as_str().unwrap().to_owned();
        app.login("new.op@example.com", PASSWORD).await;

        let page: Value = admin.get(app.url("/api/v1/users?pageSize=1&page=2")).send().await.unwrap().json().await.unwrap();
        assert_eq!((page["total"].as_i64(), page["page"].as_i64(), page["pageSize"].as_i64()), (Some(2), Some(2), Some(1)));
        assert_eq!(page["items"][0]["id"], id.as_str());

        let patched = admin
            .patch(app.url(&format!("/api/v1/users/{id}")))
            .json(&json!({"roles": ["viewer"], "name": "Viewer now"}))
            .send()
            .await
            .unwrap();
        assert_eq!(patched.status(), 200);
        let patched: Value = patched.json().await.unwrap();
        assert_eq!(patched["roles"], json!(["viewer"]));
        assert_eq!(patched["name"], "Viewer now");
        assert!(!patched["permissions"].as_array().unwrap().contains(&json!("orders.write")));

        let audit: Value = admin.get(app.url("/api/v1/audit-logs?action=user.roles.changed")).send().await.unwrap().json().await.unwrap();
        assert_eq!(audit["items"][0]["targetId"], id.as_str(), "{audit}");

        assert_eq!(admin.delete(app.url(&format!("/api/v1/users/{id}"))).send().await.unwrap().status(), 204);
        assert_eq!(admin.get(app.url(&format!("/api/v1/users/{id}"))).send().await.unwrap().status(), 404);
    }
}

#[tokio::test]
async fn bad_input_duplicates_and_self_harm_are_refused() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let admin = app.admin().await;
    let create = |body: Value| admin.post(app.url("/api/v1/users")).json(&body).send();
    let invalid = create(json!({"email": "nope", "password": "short", "roles": []}))
        .await
        .unwrap();
    assert_eq!(invalid.status(), 400);
    let body: Value = invalid.json().await.unwrap();
    assert_eq!(body["message"].as_array().unwrap().len(), 3, "{body}");
    let duplicate =
        create(json!({"email": "admin@localhost", "password": PASSWORD, "roles": ["admin"]}))
            .await
            .unwrap();
    assert_eq!(duplicate.status(), 409);
    let unknown_role =
        create(json!({"email": "x@example.com", "password": PASSWORD, "roles": ["emperor"]}))
            .await
            .unwrap();
    assert_eq!(unknown_role.status(), 400);

    let me: Value = admin
        .get(app.url("/api/v1/auth/me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let my_id = me["user"]["id"].as_str().unwrap();
    let deactivate_self = admin
        .patch(app.url(&format!("/api/v1/users/{my_id}")))
        .json(&json!({"isActive": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(deactivate_self.status(), 400);
    assert_eq!(
        admin
            .delete(app.url(&format!("/api/v1/users/{my_id}")))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        admin
            .get(app.url("/api/v1/users/not-a-uuid"))
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
}

#[tokio::test]
async fn only_users_managers_manage_and_only_super_admins_make_super_admins() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    app.create_user("operator@example.com", PASSWORD, UserRole::Operator)
        .await;
    app.create_user("tenant-admin@example.com", PASSWORD, UserRole::Admin)
        .await;
    let (operator, _) = app.login("operator@example.com", PASSWORD).await;
    for path in ["/api/v1/users", "/api/v1/roles"] {
        assert_eq!(
            operator.get(app.url(path)).send().await.unwrap().status(),
            403,
            "{path}"
        );
        assert_eq!(
            client().get(app.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
    let (tenant_admin, _) = app.login("tenant-admin@example.com", PASSWORD).await;
    let attempt = tenant_admin
        .post(app.url("/api/v1/users"))
        .json(&json!({"email": "root2@example.com", "password": PASSWORD, "roles": ["admin"], "isSuperAdmin": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(attempt.status(), 403);
    let roles: Value = tenant_admin
        .get(app.url("/api/v1/roles"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["admin", "operator", "viewer"]);
    assert_eq!(roles[1]["permissions"].as_array().unwrap().len(), 10);
}

#[tokio::test]
async fn another_tenants_users_are_invisible_to_a_tenant_admin() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let db = &app.ctx.db;
    let acme = tenants::ensure(db, "acme", "Acme").await.unwrap();
    let mut tx = db.begin().await.unwrap();
    let stranger = users::insert(
        &mut tx,
        &NewUser {
            tenant_id: acme.id,
            email: "stranger@acme.test".into(),
            name: String::new(),
            password_hash: password::hash(PASSWORD).await.unwrap(),
            roles: vec![UserRole::Viewer],
            is_super_admin: false,
        },
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    app.create_user("tenant-admin@example.com", PASSWORD, UserRole::Admin)
        .await;
    let (tenant_admin, _) = app.login("tenant-admin@example.com", PASSWORD).await;
    let url = app.url(&format!("/api/v1/users/{}", stranger.id));
    assert_eq!(tenant_admin.get(&url).send().await.unwrap().status(), 404);
    assert_eq!(
        tenant_admin.delete(&url).send().await.unwrap().status(),
        404
    );
    let other = tenant_admin
        .get(app.url(&format!("/api/v1/users?tenantId={}", acme.id)))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    // The super admin acts in every tenant.
    let root = app.admin().await;
    assert_eq!(root.get(&url).send().await.unwrap().status(), 200);
    let page: Value = root
        .get(app.url(&format!("/api/v1/users?tenantId={}", acme.id)))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["total"], 1);
}

#[tokio::test]
async fn deactivating_a_user_ends_their_sessions() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let user = app
        .create_user("ops@example.com", PASSWORD, UserRole::Operator)
        .await;
    let (ops, _) = app.login("ops@example.com", PASSWORD).await;
    let admin = app.admin().await;
    let response = admin
        .patch(app.url(&format!("/api/v1/users/{}", user.id)))
        .json(&json!({"isActive": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        ops.get(app.url("/api/v1/auth/me"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
}

each_database! {
    async fn a_tenant_admin_cannot_take_over_a_super_admin(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        app.create_user("tenant-admin@example.com", PASSWORD, UserRole::Admin).await;
        let (tenant_admin, _) = app.login("tenant-admin@example.com", PASSWORD).await;
        let root = users::find_by_email(&app.ctx.db, "admin@localhost").await.unwrap().unwrap();
        let url = app.url(&format!("/api/v1/users/{}", root.id));
        for change in [
            json!({"password": "taken-over-password"}),
            json!({"roles": ["viewer"]}),
            json!({"isActive": false}),
            json!({"name": "Renamed"}),
        ] {
            let response = tenant_admin.patch(&url).json(&change).send().await.unwrap();
            assert_eq!(response.status(), 403, "{change}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"], "Forbidden", "{body}");
        }
        assert_eq!(tenant_admin.delete(&url).send().await.unwrap().status(), 403);
        // Nothing changed: the super admin still signs in with the old password, and only that one.
        app.login("admin@localhost", crate::testing::ADMIN_PASSWORD).await;
        let stolen = client()
            .post(app.url("/api/v1/auth/login"))
            .json(&json!({"email": "admin@localhost", "password": "taken-over-password"}))
            .send()
            .await
            .unwrap();
        assert_eq!(stolen.status(), 401);
        let after = users::find_by_id(&app.ctx.db, root.id).await.unwrap().unwrap();
        assert_eq!((after.is_active, after.name.as_str()), (true, root.name.as_str()));
        // The super admin still manages the tenant admin.
        let tenant_admin_user = users::find_by_email(&app.ctx.db, "tenant-admin@example.com").await.unwrap().unwrap();
        let root_client = app.admin().await;
        let demoted = root_client
            .patch(app.url(&format!("/api/v1/users/{}", tenant_admin_user.id)))
            .json(&json!({"roles": ["viewer"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(demoted.status(), 200);
    }
}

#[tokio::test]
async fn repeated_roles_are_stored_once_not_a_500() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let admin = app.admin().await;
    let created = admin
        .post(app.url("/api/v1/users"))
        .json(&json!({"email": "twice@example.com", "password": PASSWORD, "roles": ["operator", "viewer", "operator"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let user: Value = created.json().await.unwrap();
    assert_eq!(user["roles"], json!(["operator", "viewer"]));
    let patched = admin
        .patch(app.url(&format!("/api/v1/users/{}", user["id"].as_str().unwrap())))
        .json(&json!({"roles": ["viewer", "viewer", "operator", "viewer"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    assert_eq!(
        patched.json::<Value>().await.unwrap()["roles"],
        json!(["operator", "viewer"])
    );
}

#[tokio::test]
async fn a_taken_address_in_another_tenant_answers_like_any_conflict() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let db = &app.ctx.db;
    let acme = tenants::ensure(db, "acme", "Acme").await.unwrap();
    users::create(
        db,
        &NewUser {
            tenant_id: acme.id,
            email: "elsewhere@acme.test".into(),
            name: String::new(),
            password_hash: password::hash(PASSWORD).await.unwrap(),
            roles: vec![UserRole::Viewer],
            is_super_admin: false,
        },
    )
    .await
    .unwrap()
    .unwrap();
    app.create_user("mine@example.com", PASSWORD, UserRole::Viewer)
        .await;
    let admin = app.admin().await;
    let mut bodies = Vec::new();
    for email in ["elsewhere@acme.test", "mine@example.com"] {
        let response = admin
            .post(app.url("/api/v1/users"))
            .json(&json!({"email": email, "password": PASSWORD, "roles": ["viewer"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 409);
        bodies.push(response.json::<Value>().await.unwrap());
    }
    assert_eq!(bodies[0], bodies[1], "nothing tells the two tenants apart");
    assert!(!bodies[0].to_string().contains("acme"), "{}", bodies[0]);
}
