//! The order flow end to end, as a user sees it (issue: the order service): a signed Shopify
//! `orders/create` through the gateway becomes an order and its print jobs, the jobs reach the
//! (simulated) print farm, its webhooks complete them, and the order becomes READY_FOR_FULFILLMENT
//! with `order.ready-for-fulfillment` on the bus. In `all` on SQLite, and split (two gateways, two
//! order services) on PostgreSQL and Redis.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, Secret, UrlList};
use crate::infra::db::Backend;
use crate::roles::Role;
use crate::simulators::shopify::{self, Delivery, Line};
use crate::simulators::simplyprint::SimplyPrintSim;
use crate::testing::{self, TestApp, TestDatabase, eventually};

pub const SHOP: &str = "forma-test.myshopify.com";
pub const SHOPIFY_SECRET: &str = "shopify-webhook-secret-for-tests";
pub const SP_TOKEN: &str = "simplyprint-webhook-token-for-tests";
const SP_KEY: &str = "simplyprint-api-key-for-tests";
const SP_COMPANY: &str = "4242";
const WAIT: Duration = Duration::from_secs(60);

/// What forma needs to talk to Shopify and the simulated farm.
pub fn integrations(config: &mut Config, farm: Option<&SimplyPrintSim>) {
    // These tests watch outcomes by asking again and again: no limit of the gateway's stops them.
    config.rate_limit.per_ip = 1_000_000;
    config.rate_limit.per_user = 1_000_000;
    config.shopify.webhook_secret = Some(Secret::new(SHOPIFY_SECRET));
    config.shopify.shop_domain = Some(SHOP.to_owned());
    config.simplyprint.webhook_secret = Some(Secret::new(SP_TOKEN));
    if let Some(farm) = farm {
        config.simplyprint.api_key = Some(Secret::new(SP_KEY));
        config.simplyprint.company_id = Some(SP_COMPANY.to_owned());
        config.simplyprint.base_url = Some(farm.base_url());
        config.simplyprint.reconcile_secs = Some(1);
    }
}

/// A deployment under test, with the gateways clients talk to.
pub struct Deployment {
    pub gateways: Vec<TestApp>,
    _services: Vec<TestApp>,
    pub farm: SimplyPrintSim,
    _stop: tokio_util::sync::DropGuard,
}

impl Deployment {
    /// `serve --role all` on SQLite.
    pub async fn all() -> Self {
        Self::all_with(true, |_| {}).await
    }

    /// `serve --role all` on SQLite, connected to the simulated farm or not, after `configure`.
    pub async fn all_with(connected: bool, configure: impl FnOnce(&mut Config)) -> Self {
        let stop = CancellationToken::new();
        let farm = SimplyPrintSim::start(SP_COMPANY, SP_KEY, stop.clone())
            .await
            .unwrap();
        let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
            integrations(c, connected.then_some(&farm));
            configure(c);
        })
        .await;
        Self {
            gateways: vec![app],
            _services: Vec::new(),
            farm,
            _stop: stop.drop_guard(),
        }
    }

    /// Two order services and two gateways on one PostgreSQL database and one Redis.
    pub async fn split() -> Self {
        let stop = CancellationToken::new();
        let farm = SimplyPrintSim::start(SP_COMPANY, SP_KEY, stop.clone())
            .await
            .unwrap();
        let database = Arc::new(TestDatabase::create(Backend::Postgres).await);
        let mut redis = Config::default();
        testing::use_redis(&mut redis);
        let shared = |c: &mut Config| {
            c.redis = redis.redis.clone();
            integrations(c, Some(&farm));
        };
        let mut services = Vec::new();
        for _ in 0..2 {
            services.push(TestApp::spawn_on(Role::Order, database.clone(), shared).await);
        }
        let order_urls: Vec<String> = services.iter().map(|s| s.url("")).collect();
        let mut gateways = Vec::new();
        for _ in 0..2 {
            let urls = order_urls.clone();
            gateways.push(
                TestApp::spawn_on(Role::Gateway, database.clone(), |c| {
                    shared(c);
                    c.services.order_url = UrlList(urls);
                })
                .await,
            );
        }
        Self {
            gateways,
            _services: services,
            farm,
            _stop: stop.drop_guard(),
        }
    }

    pub fn gateway(&self, i: usize) -> &TestApp {
        &self.gateways[i % self.gateways.len()]
    }
}

/// Creates a product mapping through the API; returns its JSON.
pub async fn map(admin: &reqwest::Client, gateway: &TestApp, sku: &str, files: Value) -> Value {
    let response = admin
        .post(gateway.url("/api/v1/product-mappings"))
        .json(&json!({"sku": sku, "productName": sku, "printFiles": files}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{:?}", response.text().await);
    response.json().await.unwrap()
}

pub fn line(id: u64, sku: &str, quantity: u32) -> Line {
    Line {
        id,
        sku: sku.to_owned(),
        name: format!("{sku} product"),
        quantity,
        price: "12.50".to_owned(),
    }
}

/// Delivers `orders/create` for a new order through `gateway`; returns forma's answer.
pub async fn deliver(gateway: &TestApp, delivery: &Delivery) -> (u16, Value) {
    let response = delivery
        .send(
            &testing::client(),
            &gateway.url("/api/v1/webhooks/shopify"),
            SHOPIFY_SECRET.as_bytes(),
        )
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub async fn get_json(client: &reqwest::Client, url: &str) -> Value {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200, "{url}");
    response.json().await.unwrap()
}

/// The tenant's order with Shopify order number `number`, once the list has it.
pub async fn order_numbered(admin: &reqwest::Client, gateway: &TestApp, number: u64) -> Value {
    let url = gateway.url(&format!("/api/v1/orders?search=%23{number}"));
    eventually("the order is listed", WAIT, || async {
        let page = get_json(admin, &url).await;
        page["items"]
            .as_array()
            .and_then(|items| items.first().cloned())
    })
    .await
}

async fn the_order_prints_and_becomes_ready_for_fulfillment(deployment: Deployment) {
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    // 3 cubes at 2 per print: 2 jobs. 3 plates of two files: 3 prints of the first, and 6 copies
    // of the second at 4 per print: 2. Seven jobs in all.
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode", "unitsPerPrint": 2}]),
    )
    .await;
    map(&admin, gateway, "PLATE", json!([
        {"fileId": "f-plate", "fileName": "plate.gcode"},
        {"fileId": "f-feet", "fileName": "feet.gcode", "quantity": 2, "unitsPerPrint": 4, "printProfile": "0.2mm PETG"}
    ]))
    .await;
    let document =
        shopify::order_document(5_500_001, 1001, &[line(1, "CUBE", 3), line(2, "PLATE", 3)]);
    let delivery = Delivery::new("orders/create", SHOP, &document);
    // Through the second gateway when split: any gateway serves any webhook.
    let (status, ack) = deliver(deployment.gateway(1), &delivery).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("created")),
        "{ack}"
    );

    let order = order_numbered(&admin, gateway, 1001).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["status"], "PROCESSING", "{order}");
    assert_eq!(order["totalPrice"], "75.00");
    assert_eq!(order["customerEmail"], "customer1001@example.com");
    assert_eq!(order["lineItems"].as_array().unwrap().len(), 2);
    assert!(
        order["lineItems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "PENDING")
    );

    let jobs_url = gateway.url(&format!(
        "/api/v1/print-jobs?orderId={order_id}&pageSize=100"
    ));
    let jobs = eventually("seven jobs are planned", WAIT, || async {
        let page = get_json(&admin, &jobs_url).await;
        (page["items"].as_array().map(Vec::len) == Some(7)).then_some(page)
    })
    .await;
    let items = jobs["items"].as_array().unwrap();
    let count = |file: &str| items.iter().filter(|j| j["fileId"] == file).count();
    assert_eq!(
        (count("f-cube"), count("f-plate"), count("f-feet")),
        (2, 3, 2)
    );
    assert!(
        items
            .iter()
            .all(|j| j["status"] == "QUEUED" && j["tenantId"] == order["tenantId"])
    );
    assert!(items.iter().any(|j| j["printProfile"] == "0.2mm PETG"));

    // The farm receives every job once, tagged with forma's job id.
    let farm = &deployment.farm;
    let queued = eventually("the farm has the seven jobs", WAIT, || async {
        let items = farm.items();
        (items.len() >= 7).then_some(items)
    })
    .await;
    assert_eq!(queued.len(), 7, "no job is sent twice: {queued:?}");
    let job_ids: Vec<&str> = items.iter().filter_map(|j| j["id"].as_str()).collect();
    assert!(queued.iter().all(|i| job_ids.contains(&i.note.as_str())));
    assert!(
        farm.requests()
            .iter()
            .all(|r| r.api_key.as_deref() == Some(SP_KEY))
    );
    let sent = eventually("forma recorded SimplyPrint's ids", WAIT, || async {
        let page = get_json(&admin, &jobs_url).await;
        let all = page["items"]
            .as_array()?
            .iter()
            .all(|j| j["simplyPrintJobId"].is_string());
        all.then_some(page)
    })
    .await;
    assert!(
        sent["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "QUEUED")
    );

    // The farm prints them; its webhooks arrive through the gateway.
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    for item in &queued {
        assert_eq!(
            farm.report(item.id, "job.started", &hook, SP_TOKEN)
                .await
                .unwrap(),
            200
        );
    }
    let detail_url = gateway.url(&format!("/api/v1/orders/{order_id}"));
    eventually("the lines are printing", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        let printing = detail["lineItems"]
            .as_array()?
            .iter()
            .all(|l| l["status"] == "PRINTING");
        printing.then_some(())
    })
    .await;
    for item in &queued {
        assert_eq!(
            farm.report(item.id, "job.done", &hook, SP_TOKEN)
                .await
                .unwrap(),
            200
        );
    }
    let ready = eventually("the order is ready for fulfillment", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        (detail["status"] == "READY_FOR_FULFILLMENT").then_some(detail)
    })
    .await;
    assert!(
        ready["lineItems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "COMPLETED")
    );
    let print_jobs = ready["printJobs"].as_array().unwrap();
    assert_eq!(print_jobs.len(), 7);
    assert!(
        print_jobs
            .iter()
            .all(|j| j["status"] == "COMPLETED" && j["completedAt"].is_string())
    );
    assert_eq!(ready["shipment"], Value::Null);

    // order.ready-for-fulfillment waits on the bus for the shipping service.
    let queue =
        gateway.url("/api/v1/admin/queues/order.ready-for-fulfillment:shipping/jobs?state=waiting");
    let waiting = eventually(
        "order.ready-for-fulfillment is on the bus",
        WAIT,
        || async {
            let jobs = get_json(&admin, &queue).await;
            jobs.as_array()?
                .iter()
                .find(|j| j["payload"]["orderId"] == order_id.as_str())
                .cloned()
        },
    )
    .await;
    assert_eq!(
        waiting["payload"]["eventType"],
        "order.ready-for-fulfillment"
    );
    assert_eq!(waiting["payload"]["source"], "order-service");
    assert_eq!(waiting["payload"]["tenantId"], order["tenantId"]);
}

#[tokio::test]
async fn an_order_prints_and_becomes_ready_for_fulfillment_in_role_all() {
    the_order_prints_and_becomes_ready_for_fulfillment(Deployment::all().await).await;
}

#[tokio::test]
async fn an_order_prints_and_becomes_ready_for_fulfillment_split() {
    the_order_prints_and_becomes_ready_for_fulfillment(Deployment::split().await).await;
}

async fn one_order_however_often_shopify_delivers_it(deployment: Deployment) {
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let document = shopify::order_document(7_700_001, 2001, &[line(1, "CUBE", 2)]);
    let delivery = Delivery::new("orders/create", SHOP, &document);
    let concurrent = (0..5).map(|i| {
        let delivery = delivery.clone();
        let gateway = deployment.gateway(i);
        async move { deliver(gateway, &delivery).await }
    });
    let mut outcomes: Vec<String> = futures::future::join_all(concurrent)
        .await
        .into_iter()
        .map(|(status, ack)| {
            assert_eq!(status, 200, "{ack}");
            ack["outcome"].as_str().unwrap_or_default().to_owned()
        })
        .collect();
    for i in 0..5 {
        let (status, ack) = deliver(deployment.gateway(i), &delivery).await;
        assert_eq!(status, 200);
        outcomes.push(ack["outcome"].as_str().unwrap_or_default().to_owned());
    }
    // A redelivery of the same event under a new delivery id, and a new event for the same order.
    let mut same_event = delivery.clone();
    same_event.webhook_id = uuid::Uuid::new_v4().to_string();
    outcomes.push(
        deliver(gateway, &same_event).await.1["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    let other_event = Delivery::new("orders/create", SHOP, &document);
    outcomes.push(
        deliver(gateway, &other_event).await.1["outcome"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "created").count(),
        1,
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.iter().filter(|o| *o == "duplicate").count(),
        10,
        "{outcomes:?}"
    );
    assert_eq!(outcomes.last().map(String::as_str), Some("exists"));

    let page = get_json(&admin, &gateway.url("/api/v1/orders")).await;
    assert_eq!(page["total"], 1, "{page}");
    let order_id = page["items"][0]["id"].as_str().unwrap().to_owned();
    let jobs_url = gateway.url(&format!("/api/v1/print-jobs?orderId={order_id}"));
    eventually("the order's two jobs", WAIT, || async {
        (get_json(&admin, &jobs_url).await["total"] == 2).then_some(())
    })
    .await;
}

#[tokio::test]
async fn one_order_however_often_shopify_delivers_it_in_role_all() {
    one_order_however_often_shopify_delivers_it(Deployment::all().await).await;
}

#[tokio::test]
async fn one_order_however_often_shopify_delivers_it_split() {
    one_order_however_often_shopify_delivers_it(Deployment::split().await).await;
}

#[tokio::test]
async fn a_wrong_signature_stores_nothing_and_bad_bodies_never_give_a_5xx() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    let document = shopify::order_document(9_900_001, 3001, &[line(1, "CUBE", 1)]);
    let delivery = Delivery::new("orders/create", SHOP, &document);
    let url = gateway.url("/api/v1/webhooks/shopify");
    for secret in ["not-the-secret", ""] {
        let response = delivery
            .send(&testing::client(), &url, secret.as_bytes())
            .await
            .unwrap();
        assert_eq!(response.status(), 401);
    }
    let unsigned = testing::client()
        .post(&url)
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-shop-domain", SHOP)
        .body(delivery.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), 401);
    let body: Value = unsigned.json().await.unwrap();
    assert_eq!(body["statusCode"], 401);
    // A shop nobody connected.
    let stranger = Delivery::new("orders/create", "stranger.myshopify.com", &document);
    assert_eq!(deliver(gateway, &stranger).await.0, 404);
    assert_eq!(
        get_json(&admin, &gateway.url("/api/v1/orders")).await["total"],
        0
    );

    let malformed: Vec<Value> = vec![
        json!(null),
        json!([]),
        json!("text"),
        json!(42),
        json!({}),
        json!({"id": null}),
        json!({"id": 1}),
        json!({"id": 1, "total_price": "abc", "currency": "EUR"}),
        json!({"id": 1, "total_price": "1.00", "currency": "EURO"}),
        json!({"id": {"nested": true}, "total_price": "1", "currency": "EUR"}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "line_items": "none"}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "line_items": [{}]}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "line_items": [{"id": 1, "quantity": -5}]}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "line_items": [{"id": 1, "quantity": 1e30}]}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "line_items": [{"id": 1, "quantity": "many"}]}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "shipping_address": "nowhere"}),
        json!({"id": 1, "total_price": 1e300, "currency": "EUR"}),
        json!({"id": 1, "total_price": "1", "currency": "EUR", "customer": []}),
        json!({"id": "", "total_price": "1", "currency": "EUR"}),
    ];
    let mut bodies: Vec<Vec<u8>> = malformed
        .iter()
        .map(|v| v.to_string().into_bytes())
        .collect();
    bodies.push(b"{\"id\": 1, \"total_price\": \"1\", ".to_vec());
    assert_eq!(bodies.len(), 20);
    for body in bodies {
        let mut bad = Delivery::new("orders/create", SHOP, &json!({}));
        bad.body = body.clone();
        let (status, answer) = deliver(gateway, &bad).await;
        assert!(
            (200..500).contains(&status),
            "{} gave {status}: {answer}",
            String::from_utf8_lossy(&body)
        );
        if status >= 400 {
            assert_eq!(answer["statusCode"], status, "{answer}");
        }
    }
    assert_eq!(
        get_json(&admin, &gateway.url("/api/v1/orders")).await["total"],
        0
    );
}
