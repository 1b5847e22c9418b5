//! Inventory end to end (SPEC §6.5b): in role `all` on SQLite and split (two order services, a
//! gateway, PostgreSQL and Redis), stock is printed ahead once however many replicas run the
//! scheduler, orders take from it first, and stock never goes negative under concurrent orders.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::repository;
use crate::config::Role;
use crate::config::{Config, UrlList};
use crate::infra::db::Backend;
use crate::order::flow_tests::{
    SHOP, SP_TOKEN, deliver, get_json, integrations, line, line_states, map,
};
use crate::simulators::shopify::{self, Delivery};
use crate::simulators::simplyprint::SimplyPrintSim;
use crate::testing::{self, TestApp, TestDatabase, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// A deployment whose scheduler runs every second.
struct Stack {
    gateway: TestApp,
    services: Vec<TestApp>,
    farm: SimplyPrintSim,
    _stop: tokio_util::sync::DropGuard,
}

impl Stack {
    async fn start(split: bool) -> Self {
        let stop = CancellationToken::new();
        let farm = SimplyPrintSim::start("4242", "simplyprint-api-key-for-tests", stop.clone())
            .await
            .unwrap();
        let configure = |c: &mut Config| {
            integrations(c, Some(&farm));
            c.inventory.interval_secs = Some(1);
        };
        if !split {
            let gateway = TestApp::spawn_with(Role::All, Backend::Sqlite, configure).await;
            return Self {
                gateway,
                services: Vec::new(),
                farm,
                _stop: stop.drop_guard(),
            };
        }
        let database = Arc::new(TestDatabase::create(Backend::Postgres).await);
        let mut redis = Config::default();
        testing::use_redis(&mut redis);
        let shared = |c: &mut Config| {
            configure(c);
            c.redis = redis.redis.clone();
        };
        let mut services = Vec::new();
        for _ in 0..2 {
            services.push(TestApp::spawn_on(Role::Order, database.clone(), shared).await);
        }
        let urls: Vec<String> = services.iter().map(|s| s.url("")).collect();
        let gateway = TestApp::spawn_on(Role::Gateway, database, |c| {
            shared(c);
            c.services.order_url = UrlList(urls);
        })
        .await;
        Self {
            gateway,
            services,
            farm,
            _stop: stop.drop_guard(),
        }
    }

    fn db(&self) -> &crate::infra::db::Db {
        &self.gateway.ctx.db
    }

    async fn inventory(&self, admin: &reqwest::Client, mapping_id: &str) -> Value {
        get_json(
            admin,
            &self.gateway.url(&format!("/api/v1/inventory/{mapping_id}")),
        )
        .await
    }

    async fn set(&self, admin: &reqwest::Client, mapping_id: &str, body: Value) -> Value {
        let response = admin
            .put(self.gateway.url(&format!("/api/v1/inventory/{mapping_id}")))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{:?}", response.text().await);
        response.json().await.unwrap()
    }

    async fn order(&self, shopify_id: u64, number: u64, quantity: u32) -> (u16, Value) {
        let document = shopify::order_document(shopify_id, number, &[line(1, "CUBE", quantity)]);
        deliver(
            &self.gateway,
            &Delivery::new("orders/create", SHOP, &document),
        )
        .await
    }

    /// The order with Shopify order number `number`.
    async fn numbered(&self, admin: &reqwest::Client, number: u64) -> Value {
        let url = self
            .gateway
            .url(&format!("/api/v1/orders?search=%23{number}"));
        let id = eventually("the order is listed", WAIT, || async {
            let page = get_json(admin, &url).await;
            page["items"][0]["id"].as_str().map(str::to_owned)
        })
        .await;
        get_json(admin, &self.gateway.url(&format!("/api/v1/orders/{id}"))).await
    }
}

async fn stock_is_printed_ahead_once_and_orders_take_from_it_first(split: bool) {
    let stack = Stack::start(split).await;
    let admin = stack.gateway.admin().await;
    let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    let mapping = map(&admin, &stack.gateway, "CUBE", cube).await;
    let mapping_id = mapping["id"].as_str().unwrap().to_owned();
    let set = stack
        .set(
            &admin,
            &mapping_id,
            json!({"stockTarget": 10, "batchSize": 5}),
        )
        .await;
    assert_eq!(
        (&set["stockTarget"], &set["stockOnHand"], &set["batchSize"]),
        (&json!(10), &json!(0), &json!(5)),
        "{set}"
    );

    // Two batches of five, sent to the farm after their jobs were created by the print side.
    let farm = &stack.farm;
    eventually("the farm has the ten stock jobs", WAIT, || async {
        (farm.items().len() >= 10).then_some(())
    })
    .await;
    // Several more passes (on either replica) schedule nothing more.
    let passes = super::scheduler::passes(stack.db()).await.unwrap();
    eventually("the scheduler ran three more times", WAIT, || async {
        let now = super::scheduler::passes(stack.db()).await.ok()?;
        (now >= passes + 3).then_some(())
    })
    .await;
    let entry = stack.inventory(&admin, &mapping_id).await;
    assert_eq!(
        (&entry["inProduction"], &entry["openBatches"]),
        (&json!(10), &json!(2)),
        "{entry}"
    );
    let jobs = get_json(
        &admin,
        &stack.gateway.url("/api/v1/print-jobs?pageSize=100"),
    )
    .await;
    assert_eq!(jobs["total"], 10, "{jobs}");
    assert!(
        jobs["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["orderId"].is_null() && j["lineItemId"].is_null())
    );
    let queued = farm.items();
    assert_eq!(queued.len(), 10, "no stock job is created twice");

    // The farm prints them; their completion brings stock to the target.
    let hook = stack.gateway.url("/api/v1/webhooks/simplyprint");
    for item in &queued {
        for event in ["job.started", "job.done"] {
            let status = farm.report(item.id, event, &hook, SP_TOKEN).await.unwrap();
            assert_eq!(status, 200);
        }
    }
    let entry = eventually("stock reaches the target", WAIT, || async {
        let entry = stack.inventory(&admin, &mapping_id).await;
        (entry["stockOnHand"] == 10).then_some(entry)
    })
    .await;
    assert_eq!(
        (&entry["inProduction"], &entry["openBatches"]),
        (&json!(0), &json!(0))
    );

    // An order for 3: taken from stock, nothing printed, ready at once.
    let (status, ack) = stack.order(6_600_001, 2001, 3).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("created")));
    let first = stack.numbered(&admin, 2001).await;
    assert_eq!(first["status"], "READY_FOR_FULFILLMENT", "{first}");
    assert_eq!(first["lineItems"][0]["status"], "COMPLETED", "{first}");
    assert_eq!(stack.inventory(&admin, &mapping_id).await["stockOnHand"], 7);

    // An order for 12: the 7 left, and 5 printed.
    let (status, _) = stack.order(6_600_002, 2002, 12).await;
    assert_eq!(status, 200);
    let second = stack.numbered(&admin, 2002).await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    assert_eq!(second["status"], "PROCESSING", "{second}");
    assert_eq!(second["lineItems"][0]["status"], "PENDING", "{second}");
    assert_eq!(stack.inventory(&admin, &mapping_id).await["stockOnHand"], 0);
    let jobs_of = |id: &str| {
        stack
            .gateway
            .url(&format!("/api/v1/print-jobs?orderId={id}&pageSize=100"))
    };
    let order_jobs = eventually("the rest of the order for 12 is printed", WAIT, || async {
        let page = get_json(&admin, &jobs_of(&second_id)).await;
        (page["total"] == 5).then_some(page)
    })
    .await;
    // Order jobs reach the farm like stock jobs (stock below target is being refilled meanwhile).
    let ids: Vec<String> = order_jobs["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["id"].as_str().map(str::to_owned))
        .collect();
    eventually("the farm has the five order jobs", WAIT, || async {
        let sent = farm
            .items()
            .iter()
            .filter(|i| ids.contains(&i.note))
            .count();
        (sent == 5).then_some(())
    })
    .await;
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(get_json(&admin, &jobs_of(first_id)).await["total"], 0);

    // The event log tells what came from stock.
    let log = get_json(
        &admin,
        &stack.gateway.url(&format!(
            "/api/v1/events?orderId={second_id}&eventType=line_item.served_from_stock"
        )),
    )
    .await;
    assert_eq!(log["items"][0]["details"]["fromStock"], 7, "{log}");
    assert_eq!(log["items"][0]["details"]["toPrint"], 5, "{log}");

    // Cancelling the order for 12 gives its 7 back.
    let response = admin
        .post(
            stack
                .gateway
                .url(&format!("/api/v1/orders/{second_id}/cancel")),
        )
        .json(&json!({"reason": "changed their mind"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(stack.inventory(&admin, &mapping_id).await["stockOnHand"], 7);
    drop(stack.services);
}

#[tokio::test]
async fn stock_is_printed_ahead_once_and_orders_take_from_it_first_in_role_all() {
    stock_is_printed_ahead_once_and_orders_take_from_it_first(false).await;
}

#[tokio::test]
async fn stock_is_printed_ahead_once_and_orders_take_from_it_first_split() {
    stock_is_printed_ahead_once_and_orders_take_from_it_first(true).await;
}

async fn fifty_concurrent_orders_share_twenty_units(split: bool) {
    let stack = Stack::start(split).await;
    let admin = stack.gateway.admin().await;
    let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    let mapping = map(&admin, &stack.gateway, "CUBE", cube).await;
    let mapping_id = mapping["id"].as_str().unwrap().to_owned();
    let started = chrono::Utc::now();
    stack
        .set(&admin, &mapping_id, json!({"stockOnHand": 20}))
        .await;

    let orders = (0..50u64).map(|i| stack.order(7_700_000 + i, 3000 + i, 1));
    let answers = futures::future::join_all(orders).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );

    let entry = stack.inventory(&admin, &mapping_id).await;
    assert_eq!(entry["stockOnHand"], 0, "{entry}");
    let tenant = Uuid::parse_str(mapping["tenantId"].as_str().unwrap()).unwrap();
    let figures = repository::stock_figures(stack.db(), tenant, started, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(figures.total_served_from_stock, 20, "{figures:?}");
    assert_eq!(figures.on_hand[0].units, 0);
    // Analytics show the same figures, through the gateway.
    let overview = get_json(&admin, &stack.gateway.url("/api/v1/analytics/overview")).await;
    assert_eq!(overview["stock"]["totalServedFromStock"], 20, "{overview}");
    assert_eq!(
        overview["stock"]["servedFromStock"],
        json!([{"sku": "CUBE", "units": 20}])
    );
    assert_eq!(
        overview["stock"]["onHand"],
        json!([{"sku": "CUBE", "units": 0}])
    );
    let page = get_json(&admin, &stack.gateway.url("/api/v1/orders?pageSize=100")).await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 50);
    let completed = items
        .iter()
        .filter(|o| o["lineItems"][0]["status"] == "COMPLETED")
        .count();
    assert_eq!(completed, 20, "exactly twenty orders got a unit");
    drop(stack.services);
}

#[tokio::test]
async fn fifty_concurrent_orders_share_twenty_units_in_role_all() {
    fifty_concurrent_orders_share_twenty_units(false).await;
}

#[tokio::test]
async fn fifty_concurrent_orders_share_twenty_units_split() {
    fifty_concurrent_orders_share_twenty_units(true).await;
}

/// Shopify changes an order's lines before anything is printed: what a changed or removed line
/// took from stock goes back, and the line as it is now is served from stock anew. Before, a line
/// cut to fewer units than it held kept them: it printed nothing, never completed, and the units
/// were lost to stock.
#[tokio::test]
async fn a_line_shopify_changes_gives_its_stock_back_and_is_served_anew() {
    let stack = Stack::start(false).await;
    let admin = stack.gateway.admin().await;
    let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    let mapping = map(&admin, &stack.gateway, "CUBE", cube).await;
    let cube_id = mapping["id"].as_str().unwrap().to_owned();
    let ball = json!([{"fileId": "f-ball", "fileName": "ball.gcode"}]);
    let mapping = map(&admin, &stack.gateway, "BALL", ball).await;
    let ball_id = mapping["id"].as_str().unwrap().to_owned();
    for id in [&cube_id, &ball_id] {
        stack
            .set(&admin, id, json!({"stockOnHand": 3, "replenish": false}))
            .await;
    }
    let stock = |id: String| {
        let admin = admin.clone();
        let stack = &stack;
        async move { stack.inventory(&admin, &id).await["stockOnHand"].clone() }
    };

    // 5 cubes (3 from stock, 2 to print) and 2 balls (from stock).
    let lines = [line(1, "CUBE", 5), line(2, "BALL", 2)];
    let document = shopify::order_document(6_700_001, 2701, &lines);
    deliver(
        &stack.gateway,
        &Delivery::new("orders/create", SHOP, &document),
    )
    .await;
    let order = stack.numbered(&admin, 2701).await;
    assert_eq!(order["status"], "PROCESSING", "{order}");
    assert_eq!(
        (stock(cube_id.clone()).await, stock(ball_id.clone()).await),
        (json!(0), json!(1))
    );

    // Now 2 cubes and no ball: the cubes come from stock, the ball's units go back.
    let document = shopify::order_document(6_700_001, 2701, &[line(1, "CUBE", 2)]);
    let (status, ack) = deliver(
        &stack.gateway,
        &Delivery::new("orders/updated", SHOP, &document),
    )
    .await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("updated")),
        "{ack}"
    );
    let order = stack.numbered(&admin, 2701).await;
    assert_eq!(order["status"], "READY_FOR_FULFILLMENT", "{order}");
    assert_eq!(
        line_states(&order),
        [("COMPLETED", 2), ("CANCELLED", 0)],
        "{order}"
    );
    assert_eq!(
        (stock(cube_id.clone()).await, stock(ball_id.clone()).await),
        (json!(1), json!(3))
    );
    // The first plan's two cube jobs are cancelled; none is printed.
    let url = stack.gateway.url(&format!(
        "/api/v1/print-jobs?orderId={}",
        order["id"].as_str().unwrap()
    ));
    eventually("the first plan's jobs are cancelled", WAIT, || async {
        let page = get_json(&admin, &url).await;
        let jobs = page["items"].as_array()?.clone();
        (jobs.len() == 2 && jobs.iter().all(|j| j["status"] == "CANCELLED")).then_some(())
    })
    .await;

    // Cancelling the order gives back what it holds now, once.
    let response = admin
        .post(stack.gateway.url(&format!(
            "/api/v1/orders/{}/cancel",
            order["id"].as_str().unwrap()
        )))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        (stock(cube_id).await, stock(ball_id).await),
        (json!(3), json!(3))
    );
}
