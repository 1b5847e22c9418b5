//! `forma serve --role all --demo`: one command, and orders flow from Shopify to FULFILLED against
//! the built-in simulators.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use forma::demo::DEMO_RECIPIENT;

use crate::support::{Server, client, forma, run};

/// How long the first demo order may take to be fulfilled.
const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn demo_on_an_empty_directory_fulfills_an_order_with_tracking() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start_with_args(dir.path(), "all", &HashMap::new(), &["--demo"]).await;
    assert!(dir.path().join("data/forma.db").exists());
    // No password configured: the first admin's password is logged once, as without --demo.
    let password = server
        .startup_lines
        .iter()
        .find(|l| l["email"] == "admin@localhost")
        .and_then(|l| l["password"].as_str())
        .expect("the admin's password is logged")
        .to_owned();
    let http = client();
    let signed_in: Value = http
        .post(format!("{}/api/v1/auth/token", server.addr))
        .json(&json!({"email": "admin@localhost", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = signed_in["accessToken"]
        .as_str()
        .expect("a token")
        .to_owned();

    let fulfilled_url = format!("{}/api/v1/orders?status=FULFILLED", server.addr);
    let deadline = Instant::now() + WAIT;
    let order = loop {
        let response = http.get(&fulfilled_url).bearer_auth(&token).send().await;
        let page: Value = match response {
            Ok(response) if response.status() == 200 => response.json().await.unwrap(),
            other => panic!("listing orders failed: {other:?}"),
        };
        if let Some(order) = page["items"].as_array().and_then(|i| i.first()) {
            break order.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no order FULFILLED within {WAIT:?}; log: {:#?}",
            server.drain_log()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };

    let order_url = format!(
        "{}/api/v1/orders/{}",
        server.addr,
        order["id"].as_str().unwrap()
    );
    let detail = signed_get(&http, &order_url, &token).await;
    let tracking = detail["shipment"]["trackingNumber"]
        .as_str()
        .unwrap_or_default();
    assert!(!tracking.is_empty(), "{detail}");
    assert_eq!(detail["trackingNumber"], tracking, "{detail}");
    // Failure reports go to the simulated mail server, to the address the demo named.
    let settings_url = format!("{}/api/v1/notifications/settings", server.addr);
    let settings = signed_get(&http, &settings_url, &token).await;
    assert_eq!(
        settings["recipients"],
        json!([DEMO_RECIPIENT]),
        "{settings}"
    );
    assert_eq!(settings["emailConfigured"], true, "{settings}");
    let mut log = server.drain_log();
    assert!(
        log.iter()
            .any(|l| l["message"] == "demo: Shopify sent orders/create for a new order"),
        "the driver tells its story at info"
    );

    // With every demo product unmapped, the next order has an unmapped SKU: forma e-mails the
    // report, and the demo tells of the mail its mail server received.
    let mappings_url = format!("{}/api/v1/product-mappings", server.addr);
    let mappings = signed_get(&http, &mappings_url, &token).await;
    for mapping in mappings["items"].as_array().expect("a page of mappings") {
        let id = mapping["id"].as_str().expect("an id");
        let response = http
            .patch(format!("{mappings_url}/{id}"))
            .bearer_auth(&token)
            .json(&json!({"isActive": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{mapping}");
    }
    let mailed = |l: &Value| {
        l["message"] == "demo: forma e-mailed a failure report"
            && l["to"] == DEMO_RECIPIENT
            && l["subject"]
                .as_str()
                .is_some_and(|s| s.starts_with("Unmapped SKU"))
    };
    let deadline = Instant::now() + WAIT;
    while !log.iter().any(mailed) {
        assert!(
            Instant::now() < deadline,
            "no unmapped-SKU report e-mailed within {WAIT:?}; log: {log:#?}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        log.extend(server.drain_log());
    }

    server.signal("TERM").await;
    assert!(
        server.wait(Duration::from_secs(15)).await,
        "SIGTERM is a clean exit"
    );
}

/// `url`'s JSON, fetched with the bearer `token`.
async fn signed_get(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let response = http.get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200, "GET {url}");
    response.json().await.unwrap()
}

#[tokio::test]
async fn demo_is_refused_outside_role_all() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = forma(dir.path());
    command.args(["serve", "--role", "gateway", "--demo"]);
    let (ok, _, stderr) = run(command, "").await;
    assert!(!ok);
    assert!(
        stderr.contains("--demo") && stderr.contains("--role all"),
        "{stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
