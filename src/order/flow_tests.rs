//! The order flow end to end, as a user sees it: a signed Shopify `orders/create` through the
//! gateway becomes an order and its print jobs, the jobs reach the (simulated) print farm, its
//! webhooks complete them, the order becomes READY_FOR_FULFILLMENT, its parcel is created at the
//! (simulated) Sendcloud with the order's address, the tracking reaches the order and the
//! (simulated) Shopify's fulfillment, and the order is FULFILLED; every event of the way on the
//! bus, none dead. In `all` on SQLite, and split (two gateways, two order services) on PostgreSQL
//! and Redis.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::Role;
use crate::config::{Config, Secret, UrlList};
use crate::identity::roles::UserRole;
use crate::infra::db::Backend;
use crate::simulators::sendcloud::SendcloudSim;
use crate::simulators::shopify::{self, Delivery, Line, ShopifyAdminSim};
use crate::simulators::simplyprint::SimplyPrintSim;
use crate::testing::{self, TestApp, TestDatabase, eventually};

pub const SHOP: &str = "forma-test.myshopify.com";
pub const SHOPIFY_SECRET: &str = "shopify-webhook-secret-for-tests";
/// The app's client secret (`shopify.api_secret`): it signs the webhooks of every shop but `SHOP`.
pub const APP_SECRET: &str = "shopify-app-secret-for-tests";
pub const SP_TOKEN: &str = "simplyprint-webhook-token-for-tests";
const SP_KEY: &str = "simplyprint-api-key-for-tests";
const SP_COMPANY: &str = "4242";
const SHOPIFY_TOKEN: &str = "shpat_admin-token-for-tests";
const WAIT: Duration = Duration::from_secs(60);

/// What forma needs to talk to Shopify and the simulated farm.
pub fn integrations(config: &mut Config, farm: Option<&SimplyPrintSim>) {
    // These tests watch outcomes by asking again and again: no limit of the gateway's stops them.
    config.rate_limit.per_ip = 1_000_000;
    config.rate_limit.per_user = 1_000_000;
    config.shopify.webhook_secret = Some(Secret::new(SHOPIFY_SECRET));
    config.shopify.api_secret = Some(Secret::new(APP_SECRET));
    config.shopify.shop_domain = Some(SHOP.to_owned());
    config.simplyprint.webhook_secret = Some(Secret::new(SP_TOKEN));
    if let Some(farm) = farm {
        config.simplyprint.api_key = Some(Secret::new(SP_KEY));
        config.simplyprint.company_id = Some(SP_COMPANY.to_owned());
        config.simplyprint.base_url = Some(farm.base_url());
        config.simplyprint.reconcile_secs = Some(1);
    }
}

/// Sendcloud and Shopify's Admin API, simulated, for the way from parcel to fulfillment.
#[derive(Clone)]
pub struct Carriers {
    pub sendcloud: SendcloudSim,
    pub shop: ShopifyAdminSim,
}

impl Carriers {
    pub async fn start(stop: &CancellationToken) -> Self {
        Self {
            sendcloud: SendcloudSim::start(stop.clone()).await.unwrap(),
            shop: ShopifyAdminSim::start(SHOPIFY_TOKEN, stop.clone())
                .await
                .unwrap(),
        }
    }

    /// Points forma's Sendcloud and Shopify Admin API at the simulators.
    pub fn configure(&self, config: &mut Config) {
        config.sendcloud = self.sendcloud.config();
        config.shopify.base_url = Some(self.shop.base_url());
        config.shopify.access_token = Some(Secret::new(SHOPIFY_TOKEN));
    }
}

/// A deployment under test, with the gateways clients talk to.
pub struct Deployment {
    pub gateways: Vec<TestApp>,
    _services: Vec<TestApp>,
    pub farm: SimplyPrintSim,
    pub carriers: Carriers,
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
        let carriers = Carriers::start(&stop).await;
        let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
            integrations(c, connected.then_some(&farm));
            if connected {
                carriers.configure(c);
            }
            configure(c);
        })
        .await;
        carriers
            .sendcloud
            .set_webhook(Some(&app.url("/api/v1/webhooks/sendcloud")));
        Self {
            gateways: vec![app],
            _services: Vec::new(),
            farm,
            carriers,
            _stop: stop.drop_guard(),
        }
    }

    /// Two order services and two gateways on one PostgreSQL database and one Redis.
    pub async fn split() -> Self {
        let stop = CancellationToken::new();
        let farm = SimplyPrintSim::start(SP_COMPANY, SP_KEY, stop.clone())
            .await
            .unwrap();
        let carriers = Carriers::start(&stop).await;
        let database = Arc::new(TestDatabase::create(Backend::Postgres).await);
        let mut redis = Config::default();
        testing::use_redis(&mut redis);
        let shared = |c: &mut Config| {
            c.redis = redis.redis.clone();
            integrations(c, Some(&farm));
            carriers.configure(c);
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
        // Sendcloud reaches the second gateway: any gateway serves any webhook.
        carriers
            .sendcloud
            .set_webhook(Some(&gateways[1].url("/api/v1/webhooks/sendcloud")));
        Self {
            gateways,
            _services: services,
            farm,
            carriers,
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
    deliver_signed(gateway, delivery, SHOPIFY_SECRET).await
}

/// `delivery` signed with `secret` (`APP_SECRET` for a shop installed through OAuth).
pub async fn deliver_signed(gateway: &TestApp, delivery: &Delivery, secret: &str) -> (u16, Value) {
    let response = delivery
        .send(
            &testing::client(),
            &gateway.url("/api/v1/webhooks/shopify"),
            secret.as_bytes(),
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

/// The farm's first queue item reports `topic` (`job.done`, `job.failed`) to forma.
pub async fn farm_reports(deployment: &Deployment, topic: &str) {
    let item = eventually("the farm has the job", WAIT, || async {
        deployment.farm.items().into_iter().next()
    })
    .await;
    let hook = deployment.gateway(0).url("/api/v1/webhooks/simplyprint");
    deployment
        .farm
        .report(item.id, topic, &hook, SP_TOKEN)
        .await
        .unwrap();
}

/// Each line of an order's JSON as (status, quantity).
pub fn line_states(order: &Value) -> Vec<(&str, u64)> {
    order["lineItems"]
        .as_array()
        .map(|lines| {
            lines
                .iter()
                .map(|l| {
                    (
                        l["status"].as_str().unwrap_or(""),
                        l["quantity"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
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

async fn the_order_runs_the_whole_way_to_fulfilled(deployment: Deployment) {
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
    deployment
        .carriers
        .shop
        .add_order(5_500_001, &[(1, 3), (2, 3)]);
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
    // READY_FOR_FULFILLMENT, and maybe on its way already: the parcel follows at once.
    let ready = eventually("the order is ready for fulfillment", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        let status = detail["status"].as_str()?;
        ["READY_FOR_FULFILLMENT", "SHIPPED", "FULFILLED"]
            .contains(&status)
            .then_some(detail)
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

    // The shipping service takes order.ready-for-fulfillment: one parcel at Sendcloud, with the
    // order's address and items.
    let sendcloud = &deployment.carriers.sendcloud;
    let parcel = eventually("Sendcloud has the parcel", WAIT, || async {
        sendcloud.parcels().into_iter().next()
    })
    .await;
    assert_eq!(
        (
            parcel.name.as_str(),
            parcel.address.as_str(),
            parcel.city.as_str(),
            parcel.postal_code.as_str(),
            parcel.country.as_str()
        ),
        ("Ada Customer 1001", "Veldstraat 1", "Gent", "9000", "BE"),
        "{parcel:?}"
    );
    assert_eq!(parcel.email.as_deref(), Some("customer1001@example.com"));
    let skus: Vec<(Option<&str>, u64)> = parcel
        .items
        .iter()
        .map(|i| (i.sku.as_deref(), i.quantity))
        .collect();
    assert_eq!(skus, [(Some("CUBE"), 3), (Some("PLATE"), 3)]);

    // Its tracking reaches the order and Shopify's fulfillment; the order is FULFILLED.
    let fulfilled = eventually("the order is fulfilled", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        (detail["status"] == "FULFILLED").then_some(detail)
    })
    .await;
    assert_eq!(fulfilled["trackingNumber"], parcel.tracking_number.as_str());
    assert_eq!(fulfilled["carrier"], "postnl");
    let shipment = &fulfilled["shipment"];
    assert_eq!(
        (
            shipment["sendcloudParcelId"].as_i64(),
            shipment["status"].as_str()
        ),
        (Some(parcel.id), Some("ANNOUNCED")),
        "{shipment}"
    );
    assert!(shipment["labelUrl"].is_string(), "{shipment}");
    let fulfillments = deployment.carriers.shop.fulfillments();
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    assert_eq!(fulfillments[0].order_id, 5_500_001);
    assert_eq!(
        fulfillments[0].tracking_number.as_deref(),
        Some(parcel.tracking_number.as_str())
    );
    assert_eq!(sendcloud.parcels().len(), 1, "one parcel, never two");

    // Sendcloud's webhook moves the shipment.
    let shipment_url = gateway.url(&format!(
        "/api/v1/shipments/{}",
        shipment["id"].as_str().unwrap()
    ));
    assert_eq!(
        sendcloud.advance(parcel.id, 11, "Delivered").await.unwrap(),
        Some(200)
    );
    eventually("the shipment is delivered", WAIT, || async {
        let shipment = get_json(&admin, &shipment_url).await;
        (shipment["status"] == "DELIVERED").then_some(())
    })
    .await;
    let listed = get_json(
        &admin,
        &gateway.url(&format!("/api/v1/shipments?orderId={order_id}")),
    )
    .await;
    assert_eq!(listed["total"], 1);

    // Every event of the way went through the bus; none is dead, nothing is left waiting. The
    // last ones are still on their way from the outbox when the shipment already reads DELIVERED.
    let expected = [
        "order.created:print",
        "order.ready-for-fulfillment:shipping",
        "shipment.created:order",
        "shipment.status-changed:order",
    ];
    let queues = eventually("the bus has settled", WAIT, || async {
        let queues = get_json(&admin, &gateway.url("/api/v1/admin/queues")).await;
        let all = queues.as_array()?;
        let settled = all
            .iter()
            .all(|q| q["waiting"] == 0 && q["active"] == 0 && q["failed"] == 0);
        let delivered = expected.iter().all(|name| {
            all.iter()
                .any(|q| q["queue"] == *name && q["completed"].as_u64().unwrap_or(0) >= 1)
        });
        (settled && delivered).then_some(queues)
    })
    .await;
    assert!(
        queues.as_array().unwrap().iter().all(|q| q["dead"] == 0),
        "{queues}"
    );
}

#[tokio::test]
async fn an_order_runs_the_whole_way_to_fulfilled_in_role_all() {
    the_order_runs_the_whole_way_to_fulfilled(Deployment::all().await).await;
}

#[tokio::test]
async fn an_order_runs_the_whole_way_to_fulfilled_split() {
    the_order_runs_the_whole_way_to_fulfilled(Deployment::split().await).await;
}

/// Sendcloud announces some carriers' parcels after answering the create: the parcel comes
/// "being announced", without a label or tracking number. The order ships when the parcel has
/// them, so the order and Shopify's fulfillment carry its tracking number.
#[tokio::test]
async fn a_parcel_announced_later_ships_the_order_with_its_tracking() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    let carriers = &deployment.carriers;
    let files = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    map(&admin, gateway, "CUBE", files).await;
    carriers.sendcloud.set_announcing_later(true);
    carriers.shop.add_order(5_650_001, &[(1, 1)]);
    let document = shopify::order_document(5_650_001, 1651, &[line(1, "CUBE", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    let order_id = order_numbered(&admin, gateway, 1651).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    farm_reports(&deployment, "job.done").await;

    let detail_url = gateway.url(&format!("/api/v1/orders/{order_id}"));
    let waiting = eventually("the parcel waits for its label", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        detail["shipment"]["sendcloudParcelId"]
            .is_i64()
            .then_some(detail)
    })
    .await;
    assert_eq!(waiting["status"], "READY_FOR_FULFILLMENT", "{waiting}");
    assert_eq!(waiting["trackingNumber"], Value::Null, "{waiting}");
    let parcel = carriers.sendcloud.parcels().remove(0);
    assert!(parcel.tracking_number.is_empty());

    // Sendcloud announces it: its webhook brings the label and the tracking number.
    let advanced = carriers.sendcloud.advance(parcel.id, 1000, "Ready to send");
    assert_eq!(advanced.await.unwrap(), Some(200));
    let tracking = carriers.sendcloud.parcels().remove(0).tracking_number;
    assert!(!tracking.is_empty());
    let fulfilled = eventually("the order is fulfilled", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        (detail["status"] == "FULFILLED").then_some(detail)
    })
    .await;
    assert_eq!(
        fulfilled["trackingNumber"],
        tracking.as_str(),
        "{fulfilled}"
    );
    let fulfillments = carriers.shop.fulfillments();
    assert_eq!(fulfillments.len(), 1, "{fulfillments:?}");
    assert_eq!(
        fulfillments[0].tracking_number.as_deref(),
        Some(tracking.as_str())
    );
}

/// Sendcloud, then Shopify, each answer 500, then time out, then recover. Each call waits in the
/// retry queue meanwhile with what went wrong (the order keeps its state), and the order ends
/// FULFILLED with one parcel and one fulfillment, no event dead.
#[tokio::test]
async fn sendcloud_and_shopify_failing_then_timing_out_then_recovering_fulfill_the_order_once() {
    let deployment = Deployment::all_with(true, |c| {
        c.sendcloud.timeout_ms = Some(300);
        c.shopify.timeout_ms = Some(300);
    })
    .await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    let (farm, carriers) = (&deployment.farm, &deployment.carriers);
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    carriers.shop.add_order(5_600_001, &[(1, 1)]);
    carriers.sendcloud.set_failing(true);
    carriers.shop.set_failing(true);
    let document = shopify::order_document(5_600_001, 1601, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let order = order_numbered(&admin, gateway, 1601).await;
    let detail_url = gateway.url(&format!("/api/v1/orders/{}", order["id"].as_str().unwrap()));
    let item = eventually("the farm has the job", WAIT, || async {
        farm.items().into_iter().next()
    })
    .await;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    for event in ["job.started", "job.done"] {
        assert_eq!(
            farm.report(item.id, event, &hook, SP_TOKEN).await.unwrap(),
            200
        );
    }

    let queue_url = gateway.url("/api/v1/retry-queue");
    // The entry of `kind` once `told` holds of it (an attempt counts from its claim, so the
    // count can run ahead of the error it ends with: what went wrong is told by the error).
    let failed = |kind: &'static str, told: Box<dyn Fn(&Value) -> bool + Send + Sync>| {
        let (admin, queue_url) = (admin.clone(), queue_url.clone());
        async move {
            eventually("the call fails again", WAIT, || async {
                let queue = get_json(&admin, &queue_url).await;
                queue
                    .as_array()?
                    .iter()
                    .find(|e| e["kind"] == kind && told(e))
                    .cloned()
            })
            .await
        }
    };
    let now = |entry: &Value| {
        let url = gateway.url(&format!(
            "/api/v1/retry-queue/{}/retry",
            entry["id"].as_str().unwrap()
        ));
        let admin = admin.clone();
        async move {
            let response = admin.post(url).send().await.unwrap();
            assert_eq!(response.status(), 204);
        }
    };

    // Sendcloud: two 500s, then a call that times out, then it answers.
    let answered_500 = |e: &Value| e["lastError"].as_str().is_some_and(|m| m.contains("500"));
    let refused = failed(
        "sendcloud.parcel",
        Box::new(move |e| answered_500(e) && e["attempts"].as_i64() >= Some(2)),
    )
    .await;
    carriers.sendcloud.set_failing(false);
    carriers.sendcloud.set_delay(Duration::from_secs(2));
    now(&refused).await;
    let timed_out = failed("sendcloud.parcel", Box::new(move |e| !answered_500(e))).await;
    carriers.sendcloud.set_delay(Duration::ZERO);
    now(&timed_out).await;

    // Shopify: the same, while the order waits SHIPPED.
    let refused = failed(
        "shopify.fulfillment",
        Box::new(move |e| answered_500(e) && e["attempts"].as_i64() >= Some(2)),
    )
    .await;
    assert_eq!(get_json(&admin, &detail_url).await["status"], "SHIPPED");
    carriers.shop.set_failing(false);
    carriers.shop.set_delay(Duration::from_secs(2));
    now(&refused).await;
    let timed_out = failed("shopify.fulfillment", Box::new(move |e| !answered_500(e))).await;
    carriers.shop.set_delay(Duration::ZERO);
    now(&timed_out).await;

    let fulfilled = eventually("the order is fulfilled", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        (detail["status"] == "FULFILLED").then_some(detail)
    })
    .await;
    assert_eq!(carriers.sendcloud.parcels().len(), 1, "one parcel");
    let fulfillments = carriers.shop.fulfillments();
    assert_eq!(fulfillments.len(), 1, "one fulfillment: {fulfillments:?}");
    assert_eq!(
        fulfillments[0].tracking_number.as_deref(),
        fulfilled["trackingNumber"].as_str()
    );
    let queue = get_json(&admin, &queue_url).await;
    assert_eq!(queue, json!([]), "nothing waits");
    let queues = get_json(&admin, &gateway.url("/api/v1/admin/queues")).await;
    assert!(
        queues.as_array().unwrap().iter().all(|q| q["dead"] == 0),
        "{queues}"
    );
}

/// A fulfillment Shopify refuses (here: Shopify does not have the order) would be refused again:
/// it waits a day in the retry queue for an operator instead of being tried every ten minutes,
/// each time with an error in the order's log.
#[tokio::test]
async fn a_fulfillment_shopify_refuses_waits_for_an_operator() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    map(&admin, gateway, "CUBE", cube).await;
    let document = shopify::order_document(5_700_001, 1701, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let item = eventually("the farm has the job", WAIT, || async {
        deployment.farm.items().into_iter().next()
    })
    .await;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    for event in ["job.started", "job.done"] {
        let reported = deployment
            .farm
            .report(item.id, event, &hook, SP_TOKEN)
            .await;
        assert_eq!(reported.unwrap(), 200);
    }
    let queue_url = gateway.url("/api/v1/retry-queue");
    let entry = eventually("the refusal waits in the retry queue", WAIT, || async {
        let queue = get_json(&admin, &queue_url).await;
        queue
            .as_array()?
            .iter()
            .find(|e| e["kind"] == "shopify.fulfillment")
            .cloned()
    })
    .await;
    let next: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(entry["nextAttemptAt"].clone()).unwrap();
    assert!(
        next - chrono::Utc::now() > chrono::TimeDelta::hours(12),
        "tried again soon: {entry}"
    );
    assert_eq!(entry["attempts"], 1, "{entry}");
}

/// The retry queue (SPEC §6.5): each failed call to SimplyPrint, Sendcloud and Shopify waits in
/// it with its error; an admin makes one now, or gives one up; a viewer may not.
#[tokio::test]
async fn the_retry_queue_shows_failed_calls_and_makes_them_now_or_gives_them_up() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    let (farm, carriers) = (&deployment.farm, &deployment.carriers);
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    farm.set_failing(true);
    carriers.sendcloud.set_failing(true);
    carriers.shop.set_failing(true);
    carriers.shop.add_order(5_700_001, &[(1, 1)]);
    let document = shopify::order_document(5_700_001, 1701, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let order = order_numbered(&admin, gateway, 1701).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let queue_url = gateway.url("/api/v1/retry-queue");
    let waiting = |kind: &'static str| {
        let (admin, queue_url) = (admin.clone(), queue_url.clone());
        async move {
            let queue = get_json(&admin, &queue_url).await;
            queue
                .as_array()?
                .iter()
                .find(|e| e["kind"] == kind)
                .cloned()
        }
    };
    let act = |method: reqwest::Method, entry: &Value, suffix: &str| {
        let url = gateway.url(&format!(
            "/api/v1/retry-queue/{}{suffix}",
            entry["id"].as_str().unwrap()
        ));
        admin.request(method, url).send()
    };

    // SimplyPrint refuses the job: it waits with SimplyPrint's error; made now once it answers.
    let job = eventually("the print job waits", WAIT, || {
        waiting("simplyprint.print-job")
    })
    .await;
    assert_eq!(job["orderId"], order_id.as_str());
    assert!(job["attempts"].as_i64() >= Some(1), "{job}");
    assert!(!job["lastError"].as_str().unwrap().is_empty(), "{job}");
    farm.set_failing(false);
    let made = act(reqwest::Method::POST, &job, "/retry").await.unwrap();
    assert_eq!(made.status(), 204);
    let item = eventually("the farm has the job", WAIT, || async {
        farm.items().into_iter().next()
    })
    .await;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    for event in ["job.started", "job.done"] {
        assert_eq!(
            farm.report(item.id, event, &hook, SP_TOKEN).await.unwrap(),
            200
        );
    }

    // Sendcloud refuses the parcel: it waits; made now once Sendcloud answers.
    let parcel = eventually("the parcel waits", WAIT, || waiting("sendcloud.parcel")).await;
    assert_eq!(parcel["orderId"], order_id.as_str());
    carriers.sendcloud.set_failing(false);
    let made = act(reqwest::Method::POST, &parcel, "/retry").await.unwrap();
    assert_eq!(made.status(), 204);

    // Shopify refuses the fulfillment: it waits; given up, the order stays SHIPPED.
    let fulfillment = eventually("the fulfillment waits", WAIT, || {
        waiting("shopify.fulfillment")
    })
    .await;
    assert_eq!(fulfillment["entityId"], order_id.as_str());
    let gone = act(reqwest::Method::DELETE, &fulfillment, "")
        .await
        .unwrap();
    assert_eq!(gone.status(), 204);
    let again = act(reqwest::Method::DELETE, &fulfillment, "")
        .await
        .unwrap();
    assert_eq!(again.status(), 404, "nothing waits any more");
    eventually("the queue is empty", WAIT, || async {
        let queue = get_json(&admin, &queue_url).await;
        queue.as_array()?.is_empty().then_some(())
    })
    .await;
    let detail = get_json(&admin, &gateway.url(&format!("/api/v1/orders/{order_id}"))).await;
    assert_eq!(detail["status"], "SHIPPED");
    assert_eq!(carriers.sendcloud.parcels().len(), 1);
    assert!(carriers.shop.fulfillments().is_empty());

    // Admins only.
    gateway
        .create_user("viewer@example.com", "a-long-password", UserRole::Viewer)
        .await;
    let (viewer, _) = gateway.login("viewer@example.com", "a-long-password").await;
    let refused = viewer.get(&queue_url).send().await.unwrap();
    assert_eq!(refused.status(), 403);
}

/// The event log (SPEC §6.5) tells an order's story from webhook to FULFILLED, one entry per state
/// change, and filters it by order, type and severity.
#[tokio::test]
async fn the_event_log_tells_an_orders_story_and_filters_it() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    deployment.carriers.shop.add_order(5_800_001, &[(1, 1)]);
    let document = shopify::order_document(5_800_001, 1801, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let order = order_numbered(&admin, gateway, 1801).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let farm = &deployment.farm;
    let item = eventually("the farm has the job", WAIT, || async {
        farm.items().into_iter().next()
    })
    .await;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    for event in ["job.started", "job.done"] {
        assert_eq!(
            farm.report(item.id, event, &hook, SP_TOKEN).await.unwrap(),
            200
        );
    }
    let events_of = |query: String| {
        let (admin, url) = (
            admin.clone(),
            gateway.url(&format!("/api/v1/events?{query}")),
        );
        async move { get_json(&admin, &url).await }
    };
    let story = eventually(
        "the order is fulfilled, and the log says so",
        WAIT,
        || async {
            let page = events_of(format!("orderId={order_id}&pageSize=100")).await;
            let told = page["items"]
                .as_array()?
                .iter()
                .any(|e| e["eventType"] == "fulfillment.created");
            told.then_some(page)
        },
    )
    .await;
    let types: Vec<&str> = story["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["eventType"].as_str())
        .collect();
    for expected in [
        "order.created",
        "print_job.status_changed",
        "order.status_changed",
        "shipment.created",
        "fulfillment.created",
    ] {
        assert!(
            types.contains(&expected),
            "{expected} missing from {types:?}"
        );
    }
    assert!(
        story["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["orderId"] == order_id.as_str() && e["tenantId"] == order["tenantId"])
    );
    assert_eq!(story["total"], types.len());

    let shipped = events_of(format!("orderId={order_id}&eventType=shipment.created")).await;
    assert_eq!(shipped["total"], 1, "{shipped}");
    assert_eq!(
        shipped["items"][0]["details"]["tracking"]["carrier"],
        "postnl"
    );
    let errors = events_of(format!("orderId={order_id}&severity=error")).await;
    assert_eq!(errors["total"], 0, "{errors}");
    let other = events_of(format!("orderId={}", uuid::Uuid::new_v4())).await;
    assert_eq!(other["total"], 0);
    let refused = admin
        .get(gateway.url("/api/v1/events?severity=loud"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
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

/// A deployment with its shop's own webhook secret and an app installed through OAuth takes the
/// webhooks of both: Shopify signs an app's webhooks with the app's client secret.
#[tokio::test]
async fn webhooks_signed_with_the_apps_secret_or_the_shops_are_both_taken() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let gateway = deployment.gateway(0);
    let url = gateway.url("/api/v1/webhooks/shopify");
    for (number, secret, status) in [
        (3101, APP_SECRET, 200),
        (3102, SHOPIFY_SECRET, 200),
        (3103, "not-the-secret", 401),
    ] {
        let document = shopify::order_document(9_900_000 + number, number, &[line(1, "CUBE", 1)]);
        let delivery = Delivery::new("orders/create", SHOP, &document);
        let response = delivery
            .send(&testing::client(), &url, secret.as_bytes())
            .await
            .unwrap();
        assert_eq!(response.status(), status, "signed with {secret}");
    }

    // Another tenant's shop, installed through OAuth. The configured shop's own secret is shown
    // to that shop's staff: it signs none of this shop's webhooks, or they could write orders
    // into every tenant by naming its shop.
    let db = &gateway.ctx.db;
    let acme = crate::identity::tenants::ensure(db, "acme", "Acme")
        .await
        .unwrap();
    let other = "acme-shop.myshopify.com";
    let installation = crate::order::shopify::tokens::Installation {
        tenant_id: acme.id,
        domain: other,
        sealed_token: b"sealed",
        scopes: "read_orders",
    };
    crate::order::shopify::tokens::connect(db, &installation)
        .await
        .unwrap()
        .unwrap();
    for (number, secret, status) in [(3104, SHOPIFY_SECRET, 401), (3105, APP_SECRET, 200)] {
        let document = shopify::order_document(9_900_000 + number, number, &[line(1, "CUBE", 1)]);
        let delivery = Delivery::new("orders/create", other, &document);
        let response = delivery
            .send(&testing::client(), &url, secret.as_bytes())
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            status,
            "{other}'s webhook signed with {secret}"
        );
    }
    let acme_orders = crate::on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM orders WHERE tenant_id = $1")
            .bind(acme.id)
            .fetch_one(pool)
            .await
    })
    .unwrap();
    assert_eq!(acme_orders, 1, "only the app-signed order");
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
    // A shop nobody connected: the configured shop's secret signs no other shop's webhooks.
    let stranger = Delivery::new("orders/create", "stranger.myshopify.com", &document);
    assert_eq!(deliver(gateway, &stranger).await.0, 401);
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
