//! The Admin API client against the Shopify simulator, over real HTTP.

use std::time::Duration;

use serde_json::json;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::*;
use crate::simulators::shopify::ShopifyAdminSim;

const SHOP: &str = "forma-test.myshopify.com";
const TOKEN: &str = "shpat_simulated";
const ORDER: u64 = 820_982_911_946_154_508;

struct Fixture {
    shopify: ShopifyAdminSim,
    client: ShopifyAdmin,
    token: Secret,
    _stop: DropGuard,
}

async fn fixture_with_timeout(timeout: Duration) -> Fixture {
    let stop = CancellationToken::new();
    let shopify = ShopifyAdminSim::start(TOKEN, stop.clone()).await.unwrap();
    shopify.add_order(ORDER, &[(466_157_049, 3), (466_157_050, 1)]);
    let client = ShopifyAdmin::new(Some(&shopify.base_url()), timeout).unwrap();
    Fixture {
        shopify,
        client,
        token: Secret::new(TOKEN),
        _stop: stop.drop_guard(),
    }
}

async fn fixture() -> Fixture {
    fixture_with_timeout(DEFAULT_TIMEOUT).await
}

fn tracking(number: &str) -> Tracking {
    Tracking {
        number: number.to_owned(),
        url: Some(format!("https://tracking.example/{number}")),
        company: Some("PostNL".to_owned()),
    }
}

fn order() -> String {
    ORDER.to_string()
}

#[tokio::test]
async fn a_fulfillment_with_tracking_reaches_shopify_and_closes_the_order() {
    let f = fixture().await;
    let before = f
        .client
        .fulfillment_orders(SHOP, &f.token, &order())
        .await
        .unwrap();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].status, "open");
    assert_eq!(
        before[0]
            .line_items
            .iter()
            .map(|l| (l.quantity, l.fulfillable_quantity))
            .collect::<Vec<_>>(),
        [(3, 3), (1, 1)]
    );

    let made = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0001"))
        .await
        .unwrap();
    assert_eq!(made.tracking_number.as_deref(), Some("3SPOST0001"));
    assert_eq!(
        made.tracking_url.as_deref(),
        Some("https://tracking.example/3SPOST0001")
    );
    assert_eq!(made.tracking_company.as_deref(), Some("PostNL"));

    let held = f.shopify.fulfillments();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id.to_string(), made.id);
    assert_eq!(held[0].order_id, ORDER);
    assert_eq!(
        held[0].fulfillment_order_ids,
        [before[0].id.parse::<u64>().unwrap()]
    );
    assert_eq!(held[0].tracking_number.as_deref(), Some("3SPOST0001"));
    assert_eq!(held[0].tracking_company.as_deref(), Some("PostNL"));

    let after = f
        .client
        .fulfillment_orders(SHOP, &f.token, &order())
        .await
        .unwrap();
    assert_eq!(after[0].status, "closed");
    assert!(
        after[0]
            .line_items
            .iter()
            .all(|l| l.fulfillable_quantity == 0)
    );

    let requests = f.shopify.requests();
    assert!(
        requests
            .iter()
            .all(|r| r.access_token.as_deref() == Some(TOKEN)
                && r.path.starts_with(&format!("/admin/api/{API_VERSION}/")))
    );
    let post = requests.iter().find(|r| r.method == "POST").unwrap();
    assert_eq!(post.body["fulfillment"]["notify_customer"], true);
}

#[tokio::test]
async fn creating_the_shopify_fulfillment_again_returns_the_first_one() {
    let f = fixture().await;
    let first = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0002"))
        .await
        .unwrap();
    let again = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0002"))
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(f.shopify.fulfillments().len(), 1);
    let posts = f
        .shopify
        .requests()
        .iter()
        .filter(|r| r.method == "POST")
        .count();
    assert_eq!(posts, 1, "the second call only looked");
}

#[tokio::test]
async fn another_tracking_number_for_a_fulfilled_shopify_order_is_rejected() {
    let f = fixture().await;
    f.client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0003"))
        .await
        .unwrap();
    let refused = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST9999"))
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, ShopifyError::Rejected(m) if m.contains("nothing left to fulfill")),
        "{refused:?}"
    );
    assert_eq!(f.shopify.fulfillments().len(), 1);
}

#[tokio::test]
async fn the_shopify_simulator_refuses_to_fulfill_a_closed_fulfillment_order() {
    let f = fixture().await;
    let order_id = f.shopify.add_order(1001, &[(1, 1)]);
    let http = crate::infra::tls::http_client().build().unwrap();
    let url = format!(
        "{}/admin/api/{API_VERSION}/fulfillments.json",
        f.shopify.base_url()
    );
    let body = json!({"fulfillment": {
        "line_items_by_fulfillment_order": [{"fulfillment_order_id": order_id}],
        "tracking_info": {"number": "1Z999"},
    }});
    let post = || {
        http.post(&url)
            .header("X-Shopify-Access-Token", TOKEN)
            .json(&body)
            .send()
    };
    assert_eq!(post().await.unwrap().status(), 201);
    let second = post().await.unwrap();
    assert_eq!(second.status(), 422);
    assert_eq!(
        second.json::<serde_json::Value>().await.unwrap(),
        json!({"errors": [format!("Fulfillment order {order_id} has an unfulfillable status= closed.")]})
    );
}

#[tokio::test]
async fn a_shopify_server_error_is_unavailable_and_after_recovery_the_call_succeeds_once() {
    let f = fixture().await;
    f.shopify.fail_next(1);
    let failed = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0004"))
        .await
        .unwrap_err();
    assert!(matches!(failed, ShopifyError::Unavailable(_)), "{failed:?}");

    f.shopify.set_failing(true);
    let failed = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0004"))
        .await
        .unwrap_err();
    assert!(matches!(failed, ShopifyError::Unavailable(_)), "{failed:?}");
    assert!(f.shopify.fulfillments().is_empty());

    f.shopify.set_failing(false);
    for _ in 0..2 {
        f.client
            .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0004"))
            .await
            .unwrap();
    }
    assert_eq!(f.shopify.fulfillments().len(), 1);
}

#[tokio::test]
async fn a_shopify_slower_than_the_timeout_is_unavailable() {
    let f = fixture_with_timeout(Duration::from_millis(200)).await;
    f.shopify.set_delay(Duration::from_secs(60));
    let failed = f
        .client
        .create_fulfillment(SHOP, &f.token, &order(), &tracking("3SPOST0005"))
        .await
        .unwrap_err();
    assert!(matches!(failed, ShopifyError::Unavailable(_)), "{failed:?}");
    assert!(f.shopify.fulfillments().is_empty());
}

#[tokio::test]
async fn a_wrong_shopify_access_token_is_rejected() {
    let f = fixture().await;
    let failed = f
        .client
        .create_fulfillment(
            SHOP,
            &Secret::new("shpat_wrong"),
            &order(),
            &tracking("3SPOST0006"),
        )
        .await
        .unwrap_err();
    assert_eq!(
        failed,
        ShopifyError::Rejected("[API] Invalid API key or access token".to_owned())
    );
    assert!(f.shopify.fulfillments().is_empty());
}

#[tokio::test]
async fn an_order_unknown_to_shopify_is_rejected() {
    let f = fixture().await;
    let failed = f
        .client
        .create_fulfillment(SHOP, &f.token, "404404404", &tracking("3SPOST0007"))
        .await
        .unwrap_err();
    assert_eq!(failed, ShopifyError::Rejected("Not Found".to_owned()));
}

#[test]
fn a_shop_is_reached_at_its_domain_unless_shopify_base_url_is_set() {
    let real = ShopifyAdmin::new(None, DEFAULT_TIMEOUT).unwrap();
    assert_eq!(
        real.url(
            "Forma-Test.myshopify.com",
            &["orders", "1", "fulfillments.json"]
        )
        .unwrap()
        .as_str(),
        format!(
            "https://forma-test.myshopify.com/admin/api/{API_VERSION}/orders/1/fulfillments.json"
        )
    );
    for bad in [
        "",
        "evil.example/steal?",
        "user@evil.example",
        "evil.example:8443",
    ] {
        assert!(
            matches!(real.url(bad, &[]), Err(ShopifyError::Rejected(_))),
            "{bad:?}"
        );
    }

    let fake = ShopifyAdmin::new(Some("http://127.0.0.1:8080/"), DEFAULT_TIMEOUT).unwrap();
    assert_eq!(
        fake.url(
            "any.myshopify.com",
            &["orders", "1/../2", "fulfillment_orders.json"]
        )
        .unwrap()
        .as_str(),
        format!(
            "http://127.0.0.1:8080/admin/api/{API_VERSION}/orders/1%2F..%2F2/fulfillment_orders.json"
        )
    );
    assert!(ShopifyAdmin::new(Some("not a url"), DEFAULT_TIMEOUT).is_err());
}

#[test]
fn shopify_errors_read_as_one_sentence() {
    assert_eq!(errors_text(&json!("Not Found")), "Not Found");
    assert_eq!(errors_text(&json!(["a", "b"])), "a; b");
    assert_eq!(
        errors_text(&json!({"fulfillment": "Required parameter missing or invalid"})),
        "fulfillment: Required parameter missing or invalid"
    );
}
