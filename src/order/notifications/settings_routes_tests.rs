//! `/api/v1/notifications/settings` over loopback HTTP, through the gateway, on both databases.

use serde_json::{Value, json};

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

const PATH: &str = "/api/v1/notifications/settings";

each_database! {
    async fn settings_start_as_defaults_are_replaced_by_a_put_and_audited(backend: Backend) {
        let app = TestApp::spawn_with(Role::All, backend, use_redis).await;
        let admin = app.admin().await;
        let url = app.url(PATH);
        let (status, defaults) = send(admin.get(&url)).await;
        assert_eq!(status, 200, "{defaults}");
        assert_eq!(defaults, json!({
            "recipients": [], "printJobFailed": true, "orderFailed": true,
            "fulfillmentFailed": true, "unmappedSku": true, "emailConfigured": false,
            "updatedAt": null
        }));

        let (status, saved) = send(admin.put(&url).json(&json!({
            "recipients": [" ops@shop.example ", "Lead@Shop.example", "OPS@shop.example"],
            "printJobFailed": true, "orderFailed": false, "fulfillmentFailed": true,
            "unmappedSku": false
        }))).await;
        assert_eq!(status, 200, "{saved}");
        assert_eq!(saved["recipients"], json!(["ops@shop.example", "Lead@Shop.example"]), "trimmed, once each");
        assert_eq!((saved["orderFailed"].as_bool(), saved["unmappedSku"].as_bool()), (Some(false), Some(false)));
        assert!(saved["updatedAt"].is_string(), "{saved}");
        let (_, read) = send(admin.get(&url)).await;
        assert_eq!(read, saved);

        // What a GET returns can be PUT back as it is (the read-only field is ignored).
        let (status, again) = send(admin.put(&url).json(&read)).await;
        assert_eq!((status, &again["recipients"]), (200, &saved["recipients"]));

        let (_, audit) = send(admin.get(app.url("/api/v1/audit-logs?targetType=notification-settings"))).await;
        let entry = &audit["items"][0];
        assert_eq!(audit["total"], 2, "{audit}");
        assert_eq!(entry["action"], "notifications.settings.updated");
        assert_eq!(entry["actorEmail"], "admin@localhost");
        assert_eq!(entry["details"]["after"]["recipients"], saved["recipients"], "{entry}");
    }
}

#[tokio::test]
async fn bad_settings_are_400_with_every_problem_listed() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let admin = app.admin().await;
    let url = app.url(PATH);
    let (status, body) = send(admin.put(&url).json(&json!({
        "recipients": ["ops@shop.example", "not-an-address", "", "a@b@c", "ops@[192.0.2.1]"],
        "printJobFailed": true, "orderFailed": true
    })))
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        body,
        json!({"statusCode": 400, "error": "Bad Request", "message": [
            "fulfillmentFailed must be a boolean value",
            "unmappedSku must be a boolean value",
            "recipients.1 must be an email address (got \"not-an-address\")",
            "recipients.2 should not be empty",
            "recipients.3 must be an email address (got \"a@b@c\")",
            // The sender could never build a message to it.
            "recipients.4 must be an email address (got \"ops@[192.0.2.1]\")",
        ]})
    );
    let all_on = |recipients: Value| {
        json!({"recipients": recipients, "printJobFailed": true, "orderFailed": true,
            "fulfillmentFailed": true, "unmappedSku": true})
    };
    let many: Vec<String> = (0..21).map(|i| format!("ops{i}@shop.example")).collect();
    let (status, body) = send(admin.put(&url).json(&all_on(json!(many)))).await;
    assert_eq!(
        (status, body["message"].clone()),
        (
            400,
            json!(["recipients must contain no more than 20 elements"])
        )
    );
    let long = format!("{}@shop.example", "a".repeat(250));
    let (status, body) = send(admin.put(&url).json(&all_on(json!([long])))).await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!(["recipients.0 must be at most 254 characters"]))
    );
    let (status, body) = send(
        admin
            .put(&url)
            .json(&json!({"recipients": "ops@shop.example"})),
    )
    .await;
    assert_eq!((status, body["statusCode"].as_u64()), (400, Some(400)));
    let (status, body) = send(admin.put(&url).json(&all_on(json!([5])))).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("Bad Request")));
    let (status, body) = send(
        admin
            .put(&url)
            .header("content-type", "application/json")
            .body("{"),
    )
    .await;
    assert_eq!((status, body["statusCode"].as_u64()), (400, Some(400)));
    // Nothing of it was saved.
    let (_, read) = send(admin.get(&url)).await;
    assert_eq!(read["recipients"], json!([]));
}

#[tokio::test]
async fn only_notifications_managers_see_or_change_the_settings() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    app.create_user("ops@example.com", "a-long-password", UserRole::Operator)
        .await;
    let (ops, _) = app.login("ops@example.com", "a-long-password").await;
    let url = app.url(PATH);
    let (status, body) = send(ops.get(&url)).await;
    assert_eq!(
        (status, body["message"].as_str()),
        (403, Some("Missing permission notifications.manage"))
    );
    let (status, _) = send(ops.put(&url).json(&json!({"recipients": []}))).await;
    assert_eq!(status, 403);
    let (status, _) = send(app.client.get(&url)).await;
    assert_eq!(status, 401, "signed out");
}

#[tokio::test]
async fn with_an_smtp_server_configured_the_settings_say_so() {
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = crate::simulators::smtp::SmtpSim::start(stop.clone())
        .await
        .unwrap();
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| sim.configure(&mut c.smtp)).await;
    let (_, settings) = send(app.admin().await.get(app.url(PATH))).await;
    assert_eq!(settings["emailConfigured"], true, "{settings}");
}
