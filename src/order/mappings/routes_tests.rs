//! Product mappings over loopback HTTP, on both databases.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Role;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::testing::{TestApp, use_redis};

async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

each_database! {
    async fn mappings_are_created_listed_changed_and_deleted_and_audited(backend: Backend) {
        let app = TestApp::spawn_with(Role::All, backend, use_redis).await;
        let admin = app.admin().await;
        let url = app.url("/api/v1/product-mappings");
        let (status, created) = send(admin.post(&url).json(&json!({
            "sku": " CUBE-RED ", "productName": "Red cube", "shopifyVariantId": "4711",
            "printFiles": [{"fileId": "f1", "fileName": "cube.gcode", "unitsPerPrint": 4, "printProfile": "PLA 0.2"}]
        }))).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(created["sku"], "CUBE-RED");
        assert_eq!(created["isActive"], true);
        assert_eq!(created["printFiles"], json!([{"fileId": "f1", "fileName": "cube.gcode", "quantity": 1, "unitsPerPrint": 4, "printProfile": "PLA 0.2"}]));
        let id = created["id"].as_str().unwrap().to_owned();

        let (status, duplicate) = send(admin.post(&url).json(&json!({
            "sku": "CUBE-RED", "productName": "Again", "printFiles": [{"fileId": "f2", "fileName": "x"}]
        }))).await;
        assert_eq!(status, 409, "{duplicate}");
        assert_eq!(duplicate["error"], "Conflict");

        let (status, other) = send(admin.post(&url).json(&json!({
            "sku": "PLATE", "productName": "Plate", "printFiles": [{"fileId": "p", "fileName": "p.gcode"}]
        }))).await;
        assert_eq!(status, 201, "{other}");

        let (_, page) = send(admin.get(format!("{url}?search=red"))).await;
        assert_eq!(page["total"], 1, "{page}");
        // What is searched for is taken literally: `_` and `%` are characters, not wildcards.
        for sku in ["PEG_10", "PEGA10", "PEG%10"] {
            let (status, _) = send(admin.post(&url).json(&json!({
                "sku": sku, "productName": "Peg", "printFiles": [{"fileId": "g", "fileName": "g.gcode"}]
            }))).await;
            assert_eq!(status, 201);
        }
        for (search, found) in [("peg_1", "PEG_10"), ("g%25", "PEG%10")] {
            let (_, page) = send(admin.get(format!("{url}?search={search}"))).await;
            let skus: Vec<&str> = page["items"].as_array().unwrap().iter().filter_map(|m| m["sku"].as_str()).collect();
            assert_eq!(skus, [found], "{search}");
        }
        let item = format!("{url}/{id}");
        let (status, patched) = send(admin.patch(&item).json(&json!({"isActive": false, "productName": "Red cube v2"}))).await;
        assert_eq!(status, 200, "{patched}");
        assert_eq!((patched["isActive"].as_bool(), patched["productName"].as_str()), (Some(false), Some("Red cube v2")));
        assert_eq!(patched["printFiles"], created["printFiles"], "unchanged fields stay");
        let (_, inactive) = send(admin.get(format!("{url}?isActive=false"))).await;
        assert_eq!(inactive["total"], 1);
        let (status, _) = send(admin.patch(&item).json(&json!({"sku": "PLATE"}))).await;
        assert_eq!(status, 409, "the SKU of another mapping");

        assert_eq!(admin.delete(&item).send().await.unwrap().status(), 204);
        assert_eq!(admin.get(&item).send().await.unwrap().status(), 404);
        assert_eq!(admin.delete(&item).send().await.unwrap().status(), 404);

        let (_, audit) = send(admin.get(app.url("/api/v1/audit-logs?targetType=product-mapping&pageSize=100"))).await;
        let actions: Vec<&str> = audit["items"].as_array().unwrap().iter().filter_map(|e| e["action"].as_str()).collect();
        assert_eq!(actions.iter().filter(|a| **a == "mapping.created").count(), 5, "{audit}");
        assert!(actions.contains(&"mapping.updated") && actions.contains(&"mapping.deleted"), "{actions:?}");
        assert!(audit["items"][0]["actorEmail"] == "admin@localhost" && audit["items"][0]["ip"] == "127.0.0.1", "{audit}");
    }
}

#[tokio::test]
async fn bad_mappings_are_400_with_every_problem_listed() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let admin = app.admin().await;
    let url = app.url("/api/v1/product-mappings");
    let (status, body) = send(admin.post(&url).json(&json!({
        "sku": "", "printFiles": [{"fileId": "", "fileName": "a", "quantity": 0, "unitsPerPrint": 0}]
    })))
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["message"],
        json!([
            "sku should not be empty",
            "productName must be a string",
            "printFiles.0.fileId should not be empty",
            "printFiles.0.quantity must be an integer from 1 to 10000",
            "printFiles.0.unitsPerPrint must be an integer from 1 to 10000",
        ])
    );
    let (status, body) = send(
        admin
            .post(&url)
            .json(&json!({"sku": "A", "productName": "A", "printFiles": []})),
    )
    .await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!(["printFiles must contain at least 1 element"]))
    );
    let (status, _) = send(admin.post(&url).json(&json!({"sku": 5}))).await;
    assert_eq!(status, 400);
    let (status, _) = send(
        admin
            .post(&url)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = send(admin.get(format!("{url}/not-a-uuid"))).await;
    assert_eq!(status, 400);
    let (status, _) = send(
        admin
            .patch(format!("{url}/{}", Uuid::new_v4()))
            .json(&json!({})),
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn operators_write_mappings_and_viewers_only_read_them() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    app.create_user("ops@example.com", "a-long-password", UserRole::Operator)
        .await;
    app.create_user("viewer@example.com", "a-long-password", UserRole::Viewer)
        .await;
    let (ops, _) = app.login("ops@example.com", "a-long-password").await;
    let (viewer, _) = app.login("viewer@example.com", "a-long-password").await;
    let url = app.url("/api/v1/product-mappings");
    let mapping =
        json!({"sku": "A", "productName": "A", "printFiles": [{"fileId": "a", "fileName": "a"}]});
    assert_eq!(send(ops.post(&url).json(&mapping)).await.0, 201);
    assert_eq!(send(viewer.get(&url)).await.0, 200);
    let (status, body) = send(viewer.post(&url).json(&mapping)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("Missing permission mappings.write"))
    );
}

each_database! {
    /// A NUL character is no text PostgreSQL stores: in a filter it is refused on either
    /// database, and in a body PostgreSQL's refusal is the request's 400, not a 500.
    async fn a_nul_character_is_a_400_never_a_500(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        for path in ["/api/v1/product-mappings?search=a%00b", "/api/v1/events?eventType=a%00b", "/api/v1/audit-logs?action=a%00b"] {
            let (status, body) = send(admin.get(app.url(path))).await;
            assert_eq!(status, 400, "{path}: {body}");
        }
        let (status, body) = send(admin.post(app.url("/api/v1/product-mappings")).json(&json!({
            "sku": "NUL", "productName": "a\u{0}b", "printFiles": [{"fileId": "f", "fileName": "f.gcode"}]
        }))).await;
        match backend {
            Backend::Sqlite => assert_eq!(status, 201, "{body}"),
            Backend::Postgres => {
                assert_eq!(status, 400, "{body}");
                assert_eq!(body["message"], json!(["Text must not contain NUL (\\u0000) characters"]));
            }
        }
    }
}
