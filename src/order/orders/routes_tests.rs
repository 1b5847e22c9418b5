//! Orders through the API over loopback HTTP: lines without a mapping, retry, cancellation, job
//! failure and revival, Shopify's updates and cancellations, filters, tenants and permissions.

use std::time::Duration;

use serde_json::{Value, json};
use uuid::Uuid;

use crate::identity::roles::UserRole;
use crate::infra::db::Conn;
use crate::on_conn;
use crate::order::flow_tests::{
    Deployment, SHOP, SP_TOKEN, deliver, farm_reports, get_json, line, line_states, map,
    order_numbered,
};
use crate::simulators::shopify::{self, Delivery};
use crate::testing::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(60);

async fn post(client: &reqwest::Client, url: &str, body: Value) -> (u16, Value) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn status_of(admin: &reqwest::Client, app: &TestApp, order_id: &str) -> Value {
    get_json(admin, &app.url(&format!("/api/v1/orders/{order_id}"))).await
}

async fn wait_for_status(
    admin: &reqwest::Client,
    app: &TestApp,
    order_id: &str,
    status: &str,
) -> Value {
    eventually(&format!("the order is {status}"), WAIT, || async {
        let order = status_of(admin, app, order_id).await;
        (order["status"] == status).then_some(order)
    })
    .await
}

async fn jobs_of(
    admin: &reqwest::Client,
    app: &TestApp,
    order_id: &str,
    count: usize,
) -> Vec<Value> {
    let url = app.url(&format!(
        "/api/v1/print-jobs?orderId={order_id}&pageSize=100"
    ));
    eventually(&format!("{count} jobs"), WAIT, || async {
        let page = get_json(admin, &url).await;
        let items = page["items"].as_array()?.clone();
        (items.len() == count).then_some(items)
    })
    .await
}

/// The event log's entry types of an order, oldest first (the log has no API yet).
async fn event_types(app: &TestApp, order_id: &str) -> Vec<String> {
    let id = Uuid::parse_str(order_id).unwrap();
    let mut conn = Conn::Pool(&app.ctx.db);
    on_conn!(&mut conn, c => {
        sqlx::query_scalar::<_, String>("SELECT event_type FROM event_log WHERE order_id = $1 ORDER BY created_at, id")
            .bind(id)
            .fetch_all(c)
            .await
    })
    .unwrap()
}

/// Role `all` connected to the simulated farm, with SKU CUBE mapped; and its signed-in admin.
async fn with_cube() -> (Deployment, reqwest::Client) {
    with_cube_on(Deployment::all().await).await
}

/// [`with_cube`] on `deployment`.
async fn with_cube_on(deployment: Deployment) -> (Deployment, reqwest::Client) {
    let admin = deployment.gateway(0).admin().await;
    map(
        &admin,
        deployment.gateway(0),
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    (deployment, admin)
}

#[tokio::test]
async fn an_unmapped_line_waits_and_a_retry_after_mapping_it_plans_it() {
    let deployment = Deployment::all().await;
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    let document = shopify::order_document(100, 1100, &[line(1, "MYSTERY", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let order = order_numbered(&admin, app, 1100).await;
    let id = order["id"].as_str().unwrap().to_owned();
    assert_eq!(order["status"], "PENDING");
    assert_eq!(order["lineItems"][0]["status"], "UNMAPPED");
    assert!(
        event_types(app, &id)
            .await
            .contains(&"line_item.unmapped".to_owned())
    );

    let retry = app.url(&format!("/api/v1/orders/{id}/retry"));
    let (status, body) = post(&admin, &retry, json!({})).await;
    assert_eq!(status, 409, "nothing can be mapped yet: {body}");
    map(
        &admin,
        app,
        "MYSTERY",
        json!([{"fileId": "f-m", "fileName": "m.gcode"}]),
    )
    .await;
    let (status, body) = post(&admin, &retry, json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "PROCESSING");
    assert_eq!(body["lineItems"][0]["status"], "PENDING");
    assert!(body["lineItems"][0]["productMappingId"].is_string());
    jobs_of(&admin, app, &id, 2).await;
    let types = event_types(app, &id).await;
    assert!(types.contains(&"order.retried".to_owned()), "{types:?}");
    // Its move to PROCESSING is told as every other move is.
    assert!(
        types.contains(&"order.status_changed".to_owned()),
        "{types:?}"
    );
}

#[tokio::test]
async fn a_failed_job_fails_the_order_and_its_retry_revives_it() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let document = shopify::order_document(200, 1200, &[line(1, "CUBE", 1)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1200).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = jobs_of(&admin, app, &id, 1).await.remove(0);
    farm_reports(&deployment, "job.failed").await;
    let failed = wait_for_status(&admin, app, &id, "FAILED").await;
    assert_eq!(failed["lineItems"][0]["status"], "FAILED");
    assert_eq!(failed["printJobs"][0]["status"], "FAILED");

    let job_id = job["id"].as_str().unwrap();
    let (status, retried) = post(
        &admin,
        &app.url(&format!("/api/v1/print-jobs/{job_id}/retry")),
        json!({}),
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(
        (retried["status"].as_str(), retried["attempts"].as_u64()),
        (Some("QUEUED"), Some(2))
    );
    assert_eq!(
        retried["simplyPrintJobId"],
        Value::Null,
        "it goes to the farm again"
    );
    let revived = wait_for_status(&admin, app, &id, "PROCESSING").await;
    assert_eq!(revived["lineItems"][0]["status"], "PENDING");
    assert!(
        event_types(app, &id)
            .await
            .contains(&"order.revived".to_owned())
    );
    // Sent to the farm a second time, as a new queue item.
    eventually("the farm has the retried job", WAIT, || async {
        (deployment.farm.items().len() == 2).then_some(())
    })
    .await;
    let (status, body) = post(
        &admin,
        &app.url(&format!("/api/v1/print-jobs/{job_id}/retry")),
        json!({}),
    )
    .await;
    assert_eq!(status, 409, "a queued job is not retried: {body}");
}

#[tokio::test]
async fn cancelling_an_order_cancels_its_open_jobs_and_a_revived_job_brings_it_back() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let document = shopify::order_document(300, 1300, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1300).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    let cancel = app.url(&format!("/api/v1/orders/{id}/cancel"));
    let (status, body) = post(
        &admin,
        &cancel,
        json!({"reason": "customer changed their mind"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "CANCELLED");
    assert!(
        body["lineItems"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["status"] == "CANCELLED")
    );
    let jobs = eventually("the jobs are cancelled", WAIT, || async {
        let detail = status_of(&admin, app, &id).await;
        let jobs = detail["printJobs"].as_array()?.clone();
        jobs.iter()
            .all(|j| j["status"] == "CANCELLED")
            .then_some(jobs)
    })
    .await;
    let (status, body) = post(&admin, &cancel, json!({})).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["message"], "The order is cancelled already");

    // An operator queues one job again: the order comes back to life.
    let job_id = jobs[0]["id"].as_str().unwrap();
    let (status, _) = post(
        &admin,
        &app.url(&format!("/api/v1/print-jobs/{job_id}/retry")),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    wait_for_status(&admin, app, &id, "PROCESSING").await;
    let log = event_types(app, &id).await;
    assert!(
        log.contains(&"order.cancelled".to_owned()) && log.contains(&"order.revived".to_owned()),
        "{log:?}"
    );
}

#[tokio::test]
async fn shopify_updates_replan_unprinted_lines_and_shopify_cancels_orders() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    map(
        &admin,
        app,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let document = shopify::order_document(400, 1400, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1400).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;

    // Three instead of two, and a new address: the line is planned anew (3 new jobs, the 2 old
    // cancelled).
    let mut updated = shopify::order_document(400, 1400, &[line(1, "CUBE", 3)]);
    updated["shipping_address"]["city"] = json!("Brugge");
    let (status, ack) = deliver(app, &Delivery::new("orders/updated", SHOP, &updated)).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("updated")),
        "{ack}"
    );
    let jobs = jobs_of(&admin, app, &id, 5).await;
    let queued = jobs.iter().filter(|j| j["status"] == "QUEUED").count();
    let cancelled = jobs.iter().filter(|j| j["status"] == "CANCELLED").count();
    assert_eq!((queued, cancelled), (3, 2));
    let order = status_of(&admin, app, &id).await;
    assert_eq!(order["shippingAddress"]["city"], "Brugge");
    assert_eq!(order["lineItems"][0]["quantity"], 3);

    // The signature covers the document, not the topic: the update's document sent again as a
    // cancellation cancels nothing.
    let (status, ack) = deliver(app, &Delivery::new("orders/cancelled", SHOP, &updated)).await;
    assert_eq!(status, 400, "{ack}");
    assert_ne!(status_of(&admin, app, &id).await["status"], "CANCELLED");
    updated["cancelled_at"] = json!(chrono::Utc::now().to_rfc3339());
    let (status, ack) = deliver(app, &Delivery::new("orders/cancelled", SHOP, &updated)).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("cancelled")),
        "{ack}"
    );
    wait_for_status(&admin, app, &id, "CANCELLED").await;
    eventually("every job is cancelled", WAIT, || async {
        let detail = status_of(&admin, app, &id).await;
        detail["printJobs"]
            .as_array()?
            .iter()
            .all(|j| j["status"] == "CANCELLED")
            .then_some(())
    })
    .await;
}

/// Shopify delivers webhooks in no set order and retries a failed one for hours: a version of the
/// order older than the one applied changes nothing, neither the address nor the lines.
#[tokio::test]
async fn an_older_version_of_an_order_arriving_late_changes_nothing() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let version = |quantity: u32, city: &str, at: &str| {
        let mut document = shopify::order_document(490, 1490, &[line(1, "CUBE", quantity)]);
        document["shipping_address"]["city"] = json!(city);
        document["updated_at"] = json!(at);
        document
    };
    let first = version(2, "Gent", "2026-12-01T10:00:00+01:00");
    deliver(app, &Delivery::new("orders/create", SHOP, &first)).await;
    let id = order_numbered(&admin, app, 1490).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    // 08:05 UTC, older than the first although its text sorts after it.
    let older = version(3, "Antwerpen", "2026-12-01T10:05:00+02:00");
    let newer = version(1, "Brugge", "2026-12-01T09:10:00Z");
    for (document, outcome) in [(&newer, "updated"), (&older, "unchanged")] {
        let (status, ack) = deliver(app, &Delivery::new("orders/updated", SHOP, document)).await;
        assert_eq!(
            (status, ack["outcome"].as_str()),
            (200, Some(outcome)),
            "{ack}"
        );
    }
    let order = status_of(&admin, app, &id).await;
    assert_eq!(order["shippingAddress"]["city"], "Brugge", "{order}");
    assert_eq!(order["lineItems"][0]["quantity"], 1, "{order}");
    let jobs = jobs_of(&admin, app, &id, 3).await;
    let queued = jobs.iter().filter(|j| j["status"] == "QUEUED").count();
    assert_eq!(queued, 1, "{jobs:?}");
    assert!(
        event_types(app, &id)
            .await
            .contains(&"order.update_ignored".to_owned())
    );
}

/// Shopify retries each delivery on its own, so a cancellation can come before its create, and an
/// update can come for an order forma never had (an old one the merchant touched). Neither may
/// put an order on the farm that Shopify has closed.
#[tokio::test]
async fn shopify_deliveries_about_closed_orders_print_nothing() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let acked = |outcome: &'static str| {
        move |(status, ack): (u16, Value)| {
            assert_eq!(
                (status, ack["outcome"].as_str()),
                (200, Some(outcome)),
                "{ack}"
            );
        }
    };

    // The cancellation first: the order is stored cancelled, and its create changes nothing.
    let document = shopify::order_document(450, 1450, &[line(1, "CUBE", 2)]);
    let mut cancelled = document.clone();
    cancelled["cancelled_at"] = json!(chrono::Utc::now().to_rfc3339());
    acked("cancelled")(deliver(app, &Delivery::new("orders/cancelled", SHOP, &cancelled)).await);
    acked("exists")(deliver(app, &Delivery::new("orders/create", SHOP, &document)).await);
    acked("unchanged")(deliver(app, &Delivery::new("orders/updated", SHOP, &document)).await);
    let order = order_numbered(&admin, app, 1450).await;
    let id = order["id"].as_str().unwrap();
    let order = status_of(&admin, app, id).await;
    assert_eq!(order["status"], "CANCELLED", "{order}");
    assert_eq!(order["lineItems"][0]["status"], "CANCELLED", "{order}");
    assert_eq!(order["printJobs"], json!([]), "{order}");
    assert_eq!(event_types(app, id).await, ["order.cancelled"]);

    // An update about an order forma never had: created when open, not when fulfilled or
    // cancelled in Shopify.
    let mut fulfilled = shopify::order_document(451, 1451, &[line(1, "CUBE", 1)]);
    fulfilled["fulfillment_status"] = json!("fulfilled");
    acked("unchanged")(deliver(app, &Delivery::new("orders/updated", SHOP, &fulfilled)).await);
    let mut cancelled = shopify::order_document(452, 1452, &[line(1, "CUBE", 1)]);
    cancelled["cancelled_at"] = json!(chrono::Utc::now().to_rfc3339());
    acked("unchanged")(deliver(app, &Delivery::new("orders/updated", SHOP, &cancelled)).await);
    // Cancelled, its lines refunded, before its create came: stored cancelled all the same, so
    // the create, retried with the document of before, prints nothing.
    let placed = shopify::order_document(456, 1456, &[line(1, "CUBE", 1)]);
    let mut refunded = placed.clone();
    refunded["cancelled_at"] = json!(chrono::Utc::now().to_rfc3339());
    refunded["line_items"][0]["current_quantity"] = json!(0);
    acked("cancelled")(deliver(app, &Delivery::new("orders/cancelled", SHOP, &refunded)).await);
    acked("exists")(deliver(app, &Delivery::new("orders/create", SHOP, &placed)).await);

    // Created closed (a sale at the counter), or with nothing to print or send: not stored.
    let mut sold = shopify::order_document(454, 1454, &[line(1, "CUBE", 1)]);
    sold["fulfillment_status"] = json!("fulfilled");
    acked("ignored")(deliver(app, &Delivery::new("orders/create", SHOP, &sold)).await);
    let mut gift = shopify::order_document(455, 1455, &[line(1, "GIFT", 1)]);
    gift["line_items"][0]["gift_card"] = json!(true);
    gift["line_items"][0]["requires_shipping"] = json!(false);
    acked("ignored")(deliver(app, &Delivery::new("orders/create", SHOP, &gift)).await);
    acked("ignored")(deliver(app, &Delivery::new("orders/updated", SHOP, &gift)).await);
    let open = shopify::order_document(453, 1453, &[line(1, "CUBE", 1)]);
    acked("created")(deliver(app, &Delivery::new("orders/updated", SHOP, &open)).await);
    let id = order_numbered(&admin, app, 1453).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 1).await;
    for number in [1451, 1452, 1454, 1455] {
        let url = app.url(&format!("/api/v1/orders?search=%23{number}"));
        assert_eq!(
            get_json(&admin, &url).await["items"],
            json!([]),
            "#{number}"
        );
    }
    // Only the open order's job reached the farm.
    eventually("the farm has the open order's job", WAIT, || async {
        (deployment.farm.items().len() == 1).then_some(())
    })
    .await;
}

/// A line refused when planned (more prints than any line needs) stays FAILED while the order's
/// other lines print: the order ends PARTIALLY_COMPLETED.
#[tokio::test]
async fn a_line_refused_when_planned_stays_failed_while_the_others_print() {
    let deployment = Deployment::all().await;
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    for sku in ["CUBE", "BIG"] {
        let files = json!([{"fileId": format!("f-{sku}"), "fileName": format!("{sku}.gcode")}]);
        map(&admin, app, sku, files).await;
    }
    let document = shopify::order_document(460, 1460, &[line(1, "CUBE", 1), line(2, "BIG", 5_000)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1460).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 1).await;
    farm_reports(&deployment, "job.done").await;
    let order = wait_for_status(&admin, app, &id, "PARTIALLY_COMPLETED").await;
    let statuses: Vec<&Value> = order["lineItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| &l["status"])
        .collect();
    assert_eq!(statuses, [&json!("COMPLETED"), &json!("FAILED")], "{order}");
}

/// A merchant removes a line from an order before it is printed (an order edit): the rest of the
/// order is made and ships without it. Before, the removed line counted as a cancelled one, and
/// the order stopped at PARTIALLY_COMPLETED, never shipped.
#[tokio::test]
async fn a_line_shopify_removed_does_not_hold_the_rest_of_the_order_back() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let files = json!([{"fileId": "f-ball", "fileName": "ball.gcode"}]);
    map(&admin, app, "BALL", files).await;
    let document = shopify::order_document(470, 1470, &[line(1, "CUBE", 1), line(2, "BALL", 1)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1470).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    eventually("both are on the farm", WAIT, || async {
        (deployment.farm.items().len() == 2).then_some(())
    })
    .await;
    let mut edited = shopify::order_document(470, 1470, &[line(1, "CUBE", 1), line(2, "BALL", 1)]);
    edited["line_items"][1]["current_quantity"] = json!(0);
    let (status, ack) = deliver(app, &Delivery::new("orders/updated", SHOP, &edited)).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("updated")),
        "{ack}"
    );
    // The ball's job leaves the farm; the cube's is printed.
    let cube = eventually("the ball is taken off the farm", WAIT, || async {
        let items = deployment.farm.items();
        let ball_removed = items
            .iter()
            .any(|i| i.file_id == "f-ball" && i.status == "removed");
        let cube = items.into_iter().find(|i| i.file_id == "f-cube");
        cube.filter(|_| ball_removed)
    })
    .await;
    let hook = app.url("/api/v1/webhooks/simplyprint");
    let status = deployment
        .farm
        .report(cube.id, "job.done", &hook, SP_TOKEN)
        .await;
    assert_eq!(status.unwrap(), 200);
    let order = wait_for_status(&admin, app, &id, "READY_FOR_FULFILLMENT").await;
    assert_eq!(
        line_states(&order),
        [("COMPLETED", 1), ("CANCELLED", 0)],
        "{order}"
    );
}

/// An order of two cubes, planned, that Shopify then changes to three while the print service's
/// database refuses new jobs (a trigger, `refuse_jobs`, the caller drops): the old plan's jobs are
/// cancelled, the new plan's could not be made. The deployment, the admin and the order's id.
async fn changed_while_jobs_are_refused(
    shopify_id: u64,
    number: u64,
) -> (Deployment, reqwest::Client, String) {
    let (deployment, admin) = with_cube_on(Deployment::all_with(false, |_| {}).await).await;
    let app = deployment.gateway(0);
    let document = shopify::order_document(shopify_id, number, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, number).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    sqlx::query(
        "CREATE TRIGGER refuse_jobs BEFORE INSERT ON print_jobs \
         BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )
    .execute(sqlite(app))
    .await
    .unwrap();
    let updated = shopify::order_document(shopify_id, number, &[line(1, "CUBE", 3)]);
    let (status, ack) = deliver(app, &Delivery::new("orders/updated", SHOP, &updated)).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("updated")),
        "{ack}"
    );
    let jobs = jobs_of(&admin, app, &id, 2).await;
    assert!(jobs.iter().all(|j| j["status"] == "CANCELLED"), "{jobs:#?}");
    (deployment, admin, id)
}

fn sqlite(app: &TestApp) -> &sqlx::SqlitePool {
    let crate::infra::db::Db::Sqlite(pool) = &app.ctx.db else {
        panic!("role all in these tests runs on SQLite")
    };
    pool
}

/// Shopify changes a line, and the new plan's jobs cannot be made after the change committed (the
/// print service's database refuses them): an operator's retry makes them at once, though no line
/// is unmapped or failed, without waiting for the next attempt (put off here).
#[tokio::test]
async fn a_retry_finishes_a_replanning_that_failed() {
    let (deployment, admin, id) = changed_while_jobs_are_refused(480, 1480).await;
    let app = deployment.gateway(0);
    let pool = sqlite(app);
    sqlx::query(
        "UPDATE orders SET replan_after = '2999-01-01T00:00:00Z' WHERE replan_after IS NOT NULL",
    )
    .execute(pool)
    .await
    .unwrap();
    sqlx::query("DROP TRIGGER refuse_jobs")
        .execute(pool)
        .await
        .unwrap();

    let retry = app.url(&format!("/api/v1/orders/{id}/retry"));
    let (status, body) = post(&admin, &retry, json!({})).await;
    assert_eq!(status, 200, "{body}");
    let jobs = jobs_of(&admin, app, &id, 5).await;
    let queued = jobs.iter().filter(|j| j["status"] == "QUEUED").count();
    let cancelled = jobs.iter().filter(|j| j["status"] == "CANCELLED").count();
    assert_eq!((queued, cancelled), (3, 2));
    let (status, body) = post(&admin, &retry, json!({})).await;
    assert_eq!(status, 409, "nothing left to do: {body}");
}

/// `order.cancelled` and `order.created` travel in queues of their own: a cancellation can be
/// handled by the print side after it read the order's plan and before it stored the jobs, and
/// find none to cancel. The planner reads the plan again after storing them, and cancels them.
/// (A trigger cancels the order as its jobs are stored: that interleaving, every time.)
#[tokio::test]
async fn jobs_planned_as_the_order_is_cancelled_are_cancelled_too() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let crate::infra::db::Db::Sqlite(pool) = &app.ctx.db else {
        panic!("role all in these tests runs on SQLite")
    };
    sqlx::query(
        "CREATE TRIGGER cancelled_meanwhile AFTER INSERT ON print_jobs \
         BEGIN UPDATE orders SET status = 'CANCELLED' WHERE id = NEW.order_id; \
         UPDATE line_items SET status = 'CANCELLED' WHERE order_id = NEW.order_id; END",
    )
    .execute(pool)
    .await
    .unwrap();
    let document = shopify::order_document(490, 1490, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1490).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    eventually("the jobs are cancelled", WAIT, || async {
        let jobs = jobs_of(&admin, app, &id, 2).await;
        jobs.iter()
            .all(|j| j["status"] == "CANCELLED")
            .then_some(())
    })
    .await;
}

/// Likewise Shopify changing a line while the print side plans the order: the new plan is made,
/// finds no old job to cancel yet, and the planner then stores the old plan's jobs. It reads the
/// plan again and cancels them. (A trigger re-plans the line as its jobs are stored.)
#[tokio::test]
async fn jobs_planned_as_the_line_is_planned_anew_are_cancelled() {
    let (deployment, admin) = with_cube().await;
    let app = deployment.gateway(0);
    let crate::infra::db::Db::Sqlite(pool) = &app.ctx.db else {
        panic!("role all in these tests runs on SQLite")
    };
    sqlx::query(
        "CREATE TRIGGER planned_anew_meanwhile AFTER INSERT ON print_jobs \
         BEGIN UPDATE line_items SET plan_generation = plan_generation + 1 \
         WHERE id = NEW.line_item_id; END",
    )
    .execute(pool)
    .await
    .unwrap();
    let document = shopify::order_document(491, 1491, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1491).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("the old plan's jobs are cancelled", WAIT, || async {
        let jobs = jobs_of(&admin, app, &id, 2).await;
        jobs.iter()
            .all(|j| j["status"] == "CANCELLED")
            .then_some(())
    })
    .await;
}

/// The planner stored an order's jobs, then ended before it read the plan again (the read
/// failed, the process died), and the line was planned anew meanwhile: the bus delivers
/// `order.created` again. That delivery creates nothing, and still cancels the old plan's jobs.
#[tokio::test]
async fn a_repeated_order_created_still_cancels_the_jobs_of_an_old_plan() {
    let (deployment, admin) = with_cube_on(Deployment::all_with(false, |_| {}).await).await;
    let app = deployment.gateway(0);
    let document = shopify::order_document(492, 1492, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1492).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    let pool = sqlite(app);
    let order_id = Uuid::parse_str(&id).unwrap();
    sqlx::query("UPDATE line_items SET plan_generation = plan_generation + 1 WHERE order_id = $1")
        .bind(order_id)
        .execute(pool)
        .await
        .unwrap();
    let created: Vec<String> =
        sqlx::query_scalar("SELECT payload FROM outbox WHERE event_type = 'order.created'")
            .fetch_all(pool)
            .await
            .unwrap();
    let event: crate::events::catalog::Event = created
        .iter()
        .map(|payload| serde_json::from_str::<crate::events::catalog::Event>(payload).unwrap())
        .find(|event| matches!(&event.payload, crate::events::catalog::EventPayload::OrderCreated(c) if c.order_id == id))
        .unwrap();

    let print = crate::print::PrintCore::detached(app.ctx.db.clone());
    let orders = crate::clients::order::InProcessOrderClient::of(&app.ctx);
    crate::print::planner::plan_order(&print, &orders, &event)
        .await
        .unwrap();
    let jobs = jobs_of(&admin, app, &id, 2).await;
    assert!(jobs.iter().all(|j| j["status"] == "CANCELLED"), "{jobs:#?}");
}

/// Once jobs can be stored again, an order whose re-planning failed is planned anew by itself,
/// without an operator's retry.
#[tokio::test]
async fn an_update_whose_replanning_failed_is_replanned_once_it_can_be() {
    let (deployment, admin, id) = changed_while_jobs_are_refused(493, 1493).await;
    let app = deployment.gateway(0);
    let pool = sqlite(app);
    sqlx::query("DROP TRIGGER refuse_jobs")
        .execute(pool)
        .await
        .unwrap();
    let jobs = jobs_of(&admin, app, &id, 5).await;
    let queued = jobs.iter().filter(|j| j["status"] == "QUEUED").count();
    assert_eq!(queued, 3, "{jobs:#?}");
}

/// A line is planned anew while a re-planning of its order runs: the re-planning has read the
/// older plan and stores its jobs after the change. It finds the line planned anew, and the order
/// is planned again: the older plan's jobs are cancelled, and the newest plan is what prints. (A
/// one-shot trigger plans the line anew as the re-planning stores its jobs, as a second change
/// would; that change's own re-planning is left out.)
#[tokio::test]
async fn a_replanning_overtaken_by_a_newer_plan_has_the_order_planned_again() {
    let (deployment, admin) = with_cube_on(Deployment::all_with(false, |_| {}).await).await;
    let app = deployment.gateway(0);
    let document = shopify::order_document(494, 1494, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1494).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    jobs_of(&admin, app, &id, 2).await;
    let pool = sqlite(app);
    for statement in [
        "CREATE TABLE overtaken (fired INTEGER)",
        "CREATE TRIGGER overtaken_once AFTER INSERT ON print_jobs \
         WHEN NOT EXISTS (SELECT 1 FROM overtaken) \
         BEGIN INSERT INTO overtaken VALUES (1); \
         UPDATE line_items SET plan_generation = plan_generation + 1 WHERE id = NEW.line_item_id; END",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap();
    }
    let updated = shopify::order_document(494, 1494, &[line(1, "CUBE", 3)]);
    let (status, ack) = deliver(app, &Delivery::new("orders/updated", SHOP, &updated)).await;
    assert_eq!(
        (status, ack["outcome"].as_str()),
        (200, Some("updated")),
        "{ack}"
    );
    // 2 of the first plan and 3 of the second, cancelled; 3 of the third, queued.
    let jobs = jobs_of(&admin, app, &id, 8).await;
    let queued = jobs.iter().filter(|j| j["status"] == "QUEUED").count();
    let cancelled = jobs.iter().filter(|j| j["status"] == "CANCELLED").count();
    assert_eq!((queued, cancelled), (3, 5), "{jobs:#?}");
}

/// A re-planning that read a line's plan leaves the jobs of a newer plan alone: another
/// re-planning, which read the order after a later change, made them. (They are made here by
/// hand, one generation ahead of the order.)
#[tokio::test]
async fn a_replanning_leaves_the_jobs_of_a_newer_plan_alone() {
    let (deployment, admin) = with_cube_on(Deployment::all_with(false, |_| {}).await).await;
    let app = deployment.gateway(0);
    let document = shopify::order_document(495, 1495, &[line(1, "CUBE", 2)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let order = order_numbered(&admin, app, 1495).await;
    let id = order["id"].as_str().unwrap().to_owned();
    jobs_of(&admin, app, &id, 2).await;
    let (tenant_id, order_id) = (
        Uuid::parse_str(order["tenantId"].as_str().unwrap()).unwrap(),
        Uuid::parse_str(&id).unwrap(),
    );
    let core = crate::order::OrderCore::detached(app.ctx.db.clone());
    let record = super::repository::find(&mut Conn::Pool(&app.ctx.db), tenant_id, order_id)
        .await
        .unwrap()
        .unwrap();
    let mut newer = super::retry::print_plan(&record);
    for line in &mut newer.lines {
        line.generation += 1;
    }
    core.print.create_print_jobs(&newer).await.unwrap();
    jobs_of(&admin, app, &id, 4).await;

    let current = super::retry::replan(&core, tenant_id, order_id)
        .await
        .unwrap();
    assert!(current, "the plans it read are still the order's");
    let jobs = jobs_of(&admin, app, &id, 4).await;
    assert!(jobs.iter().all(|j| j["status"] == "QUEUED"), "{jobs:#?}");
}

#[tokio::test]
async fn lists_filter_and_another_tenants_order_is_a_404() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    for (id, number) in [(501, 1501), (502, 1502), (503, 1503)] {
        let document = shopify::order_document(id, number, &[line(1, "NOPE", 1)]);
        deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    }
    let page = get_json(&admin, &app.url("/api/v1/orders?pageSize=2")).await;
    assert_eq!(
        (
            page["total"].as_u64(),
            page["items"].as_array().map(Vec::len)
        ),
        (Some(3), Some(2))
    );
    assert_eq!(page["items"][0]["orderNumber"], "#1503", "newest first");
    let found = get_json(&admin, &app.url("/api/v1/orders?search=customer1502")).await;
    assert_eq!(found["total"], 1);
    let pending = get_json(
        &admin,
        &app.url("/api/v1/orders?status=PENDING&from=2000-01-01&to=2999-12-31"),
    )
    .await;
    assert_eq!(pending["total"], 3);
    let none = get_json(&admin, &app.url("/api/v1/orders?status=FULFILLED")).await;
    assert_eq!(none["total"], 0);
    for bad in ["status=DONE", "from=yesterday", "pageSize=101"] {
        let response = admin
            .get(app.url(&format!("/api/v1/orders?{bad}")))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert!(body["message"].is_array(), "{body}");
    }
    for path in [
        format!("/api/v1/orders/{}", Uuid::new_v4()),
        format!("/api/v1/print-jobs/{}", Uuid::new_v4()),
        format!("/api/v1/product-mappings/{}", Uuid::new_v4()),
    ] {
        assert_eq!(
            admin.get(app.url(&path)).send().await.unwrap().status(),
            404,
            "{path}"
        );
    }

    // Another tenant's order, stored as that tenant's: invisible, 404 not 403.
    let acme = crate::identity::tenants::ensure(&app.ctx.db, "acme", "Acme")
        .await
        .unwrap();
    let mut tx = app.ctx.db.begin().await.unwrap();
    let new = crate::order::orders::NewOrder::bare(acme.id);
    let theirs = crate::order::orders::repository::insert(
        &mut tx,
        &new,
        crate::order::orders::OrderStatus::Pending,
        &[],
    )
    .await
    .unwrap()
    .unwrap();
    tx.commit().await.unwrap();
    let url = app.url(&format!("/api/v1/orders/{}", theirs.order.id));
    assert_eq!(admin.get(&url).send().await.unwrap().status(), 404);
    let cancel = app.url(&format!("/api/v1/orders/{}/cancel", theirs.order.id));
    assert_eq!(post(&admin, &cancel, json!({})).await.0, 404);
}

#[tokio::test]
async fn viewers_read_and_only_writers_cancel() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    app.create_user("viewer@example.com", "a-long-password", UserRole::Viewer)
        .await;
    let (viewer, _) = app.login("viewer@example.com", "a-long-password").await;
    let admin = app.admin().await;
    let document = shopify::order_document(600, 1600, &[line(1, "NOPE", 1)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, 1600).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        viewer
            .get(app.url(&format!("/api/v1/orders/{id}")))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let (status, body) = post(
        &viewer,
        &app.url(&format!("/api/v1/orders/{id}/cancel")),
        json!({}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["message"], "Missing permission orders.write");
    let (status, _) = post(
        &viewer,
        &app.url("/api/v1/product-mappings"),
        json!({"sku": "X"}),
    )
    .await;
    assert_eq!(status, 403);
}
