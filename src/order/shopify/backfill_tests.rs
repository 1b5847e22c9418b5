//! Backfills over loopback HTTP against the simulated Shopify's paginated orders, on both databases.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use super::*;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::order::flow_tests::line;
use crate::order::shopify::oauth::tests::{
    API_SECRET, InstallSetup, SHOP, TOKEN, browser, sign_in,
};
use crate::simulators::shopify::{Delivery, order_document};
use crate::testing::{self, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// Order `n`'s document as Shopify lists it.
fn document(n: u64) -> Value {
    order_document(
        9_000_000 + n,
        5_000 + n,
        &[line(9_100_000 + n, "BACKFILLED", 1)],
    )
}

async fn start(setup: &InstallSetup, body: Value) -> (u16, Value) {
    let response = setup
        .admin
        .post(setup.app.url("/api/v1/shopify/backfill"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The run once it has ended.
async fn ended(setup: &InstallSetup, run: &Value) -> Value {
    let url = setup.app.url(&format!(
        "/api/v1/shopify/backfill/{}",
        run["id"].as_str().unwrap()
    ));
    eventually("the backfill ends", WAIT, || async {
        let run: Value = setup
            .admin
            .get(&url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (run["status"] != "RUNNING").then_some(run)
    })
    .await
}

fn since() -> String {
    (Utc::now() - chrono::TimeDelta::hours(1)).to_rfc3339()
}

#[test]
fn the_next_page_comes_from_shopifys_link_header() {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::LINK,
        "<https://x.myshopify.com/admin/api/2025-10/orders.json?limit=50&page_info=prev123>; rel=\"previous\", \
         <https://x.myshopify.com/admin/api/2025-10/orders.json?limit=50&page_info=next456>; rel=\"next\""
            .parse()
            .unwrap(),
    );
    assert_eq!(next_page_info(&headers).as_deref(), Some("next456"));
    headers.insert(
        reqwest::header::LINK,
        "<https://x.myshopify.com/admin/api/2025-10/orders.json?limit=50&page_info=prev123>; rel=\"previous\""
            .parse()
            .unwrap(),
    );
    assert_eq!(next_page_info(&headers), None);
    assert_eq!(next_page_info(&reqwest::header::HeaderMap::new()), None);
}

each_database! {
    async fn a_backfill_imports_every_page_once_however_often_it_runs_and_beside_live_webhooks(backend: Backend) {
        let setup = InstallSetup::start(backend).await;
        setup.connect().await;
        for n in 1..=120 {
            setup.shopify.add_order_document(document(n));
        }
        // Two orders Shopify closed (skipped), and one from before the backfill's moment (not listed).
        let mut cancelled = document(121);
        cancelled["cancelled_at"] = json!(Utc::now().to_rfc3339());
        let mut fulfilled = document(122);
        fulfilled["fulfillment_status"] = json!("fulfilled");
        let mut old = document(123);
        old["created_at"] = json!((Utc::now() - chrono::TimeDelta::days(2)).to_rfc3339());
        for extra in [cancelled, fulfilled, old] {
            setup.shopify.add_order_document(extra);
        }

        // Two runs and the live webhook of one of their orders, all at once.
        let live = Delivery::new("orders/create", SHOP, &document(60));
        let webhook_url = setup.app.url("/api/v1/webhooks/shopify");
        let client = testing::client();
        let body = json!({"since": since()});
        let (first, second, webhook) = tokio::join!(
            start(&setup, body.clone()),
            start(&setup, body.clone()),
            live.send(&client, &webhook_url, API_SECRET.as_bytes()),
        );
        let webhook: Value = webhook.unwrap().json().await.unwrap();
        for (status, run) in [&first, &second] {
            assert_eq!(*status, 202, "{run}");
            assert_eq!(run["status"], "RUNNING", "{run}");
            assert_eq!(run["shop"], SHOP);
        }
        let (first, second) = (ended(&setup, &first.1).await, ended(&setup, &second.1).await);
        for run in [&first, &second] {
            assert_eq!(run["status"], "DONE", "{run}");
            assert_eq!((run["pages"].as_i64(), run["skipped"].as_i64()), (Some(3), Some(2)), "{run}");
            assert!(run["finishedAt"].is_string() && run["error"].is_null(), "{run}");
        }
        let by_webhook = i64::from(webhook["outcome"] == "created");
        assert_eq!(
            first["imported"].as_i64().unwrap() + second["imported"].as_i64().unwrap() + by_webhook,
            120,
            "{first} {second} {webhook}"
        );
        let orders = "SELECT COUNT(*) FROM orders";
        assert_eq!(setup.count(orders).await, 120);
        assert_eq!(setup.count("SELECT COUNT(DISTINCT shopify_order_id) FROM orders").await, 120);

        // Once more: every order is there already.
        let (status, third) = start(&setup, json!({"since": since(), "shop": SHOP})).await;
        assert_eq!(status, 202, "{third}");
        let third = ended(&setup, &third).await;
        assert_eq!((third["status"].as_str(), third["pages"].as_i64(), third["imported"].as_i64()), (Some("DONE"), Some(3), Some(0)), "{third}");
        assert_eq!(setup.count(orders).await, 120);

        // The first page filters, the next ones only name the page, every one with the shop's token.
        let pages: Vec<_> = setup
            .shopify
            .requests()
            .into_iter()
            .filter(|r| r.path.contains("/orders.json"))
            .collect();
        assert_eq!(pages.len(), 9);
        assert!(pages.iter().all(|r| r.access_token.as_deref() == Some(TOKEN)));
        let firsts: Vec<_> = pages.iter().filter(|r| r.path.contains("created_at_min=")).collect();
        assert_eq!(firsts.len(), 3);
        assert!(firsts.iter().all(|r| r.path.contains("status=any") && r.path.contains("limit=50")));
        assert!(pages
            .iter()
            .filter(|r| r.path.contains("page_info="))
            .all(|r| !r.path.contains("status=") && !r.path.contains("created_at_min=")));
    }
}

#[tokio::test]
async fn a_backfill_needs_a_connected_shop_a_moment_and_the_permission() {
    let setup = InstallSetup::start(Backend::Sqlite).await;
    let (status, body) = start(&setup, json!({"since": since()})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"], "Conflict");
    setup.connect().await;
    for bad in [
        json!({"since": "yesterday"}),
        json!({}),
        json!({"since": 12}),
    ] {
        let (status, body) = start(&setup, bad.clone()).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body["message"].is_array(), "{body}");
    }
    let (status, body) = start(
        &setup,
        json!({"since": since(), "shop": "other.myshopify.com"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let unknown = setup
        .admin
        .get(setup.app.url(&format!(
            "/api/v1/shopify/backfill/{}",
            uuid::Uuid::new_v4()
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);

    setup
        .app
        .create_user("ops@example.com", "a-long-password", UserRole::Operator)
        .await;
    let operator = sign_in(&setup.app, "ops@example.com", "a-long-password").await;
    let response = operator
        .post(setup.app.url("/api/v1/shopify/backfill"))
        .json(&json!({"since": since()}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    assert_eq!(
        setup.count("SELECT COUNT(*) FROM shopify_backfills").await,
        0
    );
    let anonymous = browser()
        .post(setup.app.url("/api/v1/shopify/backfill"))
        .json(&json!({"since": since()}))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

#[tokio::test]
async fn the_configured_shop_is_backfilled_with_its_configured_token() {
    let setup = InstallSetup::start_with(Backend::Sqlite, |c| {
        c.shopify.shop_domain = Some(SHOP.to_owned());
        c.shopify.access_token = Some(crate::config::Secret::new(TOKEN));
    })
    .await;
    for n in 1..=3 {
        setup.shopify.add_order_document(document(n));
    }
    let (status, run) = start(&setup, json!({"since": since()})).await;
    assert_eq!(status, 202, "{run}");
    let run = ended(&setup, &run).await;
    assert_eq!(
        (
            run["status"].as_str(),
            run["pages"].as_i64(),
            run["imported"].as_i64()
        ),
        (Some("DONE"), Some(1), Some(3)),
        "{run}"
    );
    assert_eq!(setup.count("SELECT COUNT(*) FROM orders").await, 3);
}
