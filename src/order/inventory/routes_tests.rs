//! `/api/v1/inventory`: validation, 404, audit of a manual correction, permissions.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Role;
use crate::each_database;
use crate::order::flow_tests::{get_json, map};
use crate::testing::TestApp;

each_database! {
    async fn stock_settings_are_checked_and_permissions_held(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
        let mapping = map(&admin, &app, "CUBE", cube).await;
        let id = mapping["id"].as_str().unwrap();
        let url = app.url(&format!("/api/v1/inventory/{id}"));

        let response = admin
            .put(&url)
            .json(&json!({"stockTarget": -1, "batchSize": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["statusCode"], 400, "{body}");
        let text = body.to_string();
        assert!(text.contains("stockTarget") && text.contains("batchSize"), "{text}");
        let response = admin.put(&url).json(&json!({})).send().await.unwrap();
        assert_eq!(response.status(), 400);
        // Two files: a batch of 600 takes 1200 prints, more than a batch may.
        let two_files = json!([{"fileId": "f-a", "fileName": "a.gcode"}, {"fileId": "f-b", "fileName": "b.gcode"}]);
        let pair = map(&admin, &app, "PAIR", two_files).await;
        let pair_url = app.url(&format!("/api/v1/inventory/{}", pair["id"].as_str().unwrap()));
        let response = admin.put(&pair_url).json(&json!({"batchSize": 600})).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].to_string().contains("1200 prints"), "{body}");
        let response = admin.put(&pair_url).json(&json!({"batchSize": 500})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        // A file printed 1500 times per unit: even the default batch of one is too big, and a
        // target that would have it printed is refused; a count of the stock on hand is not.
        let heavy = json!([{"fileId": "f-h", "fileName": "h.gcode", "quantity": 1500}]);
        let heavy = map(&admin, &app, "HEAVY", heavy).await;
        let heavy_url = app.url(&format!("/api/v1/inventory/{}", heavy["id"].as_str().unwrap()));
        let response = admin.put(&heavy_url).json(&json!({"stockTarget": 10})).send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].to_string().contains("print files"), "{body}");
        let response = admin.put(&heavy_url).json(&json!({"stockOnHand": 3})).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let missing = app.url(&format!("/api/v1/inventory/{}", Uuid::new_v4()));
        let response = admin
            .put(&missing)
            .json(&json!({"stockTarget": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 404);

        // A manual correction is audited with its actor.
        let response = admin
            .put(&url)
            .json(&json!({"stockOnHand": 12}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let audit = get_json(&admin, &app.url("/api/v1/audit-logs?pageSize=100")).await;
        let entry = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["action"] == "inventory.updated")
            .cloned()
            .expect("an audit entry");
        assert_eq!(entry["actorEmail"], "admin@localhost", "{entry}");
        assert_eq!(entry["details"]["manualStockCorrection"], true, "{entry}");
        assert_eq!(entry["details"]["after"]["stockOnHand"], 12, "{entry}");

        let page = get_json(&admin, &app.url("/api/v1/inventory")).await;
        assert_eq!(page["total"], 3);
        let cube = page["items"].as_array().unwrap().iter().find(|e| e["sku"] == "CUBE").unwrap();
        assert_eq!(cube["stockOnHand"], 12);

        // A viewer reads (mappings.read) but does not change (mappings.write).
        let viewer_email = "viewer@example.com";
        app.create_user(viewer_email, "viewer-password-1", crate::identity::roles::UserRole::Viewer)
            .await;
        let (viewer, _) = app.login(viewer_email, "viewer-password-1").await;
        let response = viewer.get(app.url("/api/v1/inventory")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let response = viewer
            .put(&url)
            .json(&json!({"stockOnHand": 0}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 403);
        app.stop().await.unwrap();
    }
}
