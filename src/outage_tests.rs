//! Outages at run time (issue: hardening), each on a Redis of the test's own on a free port, never
//! the shared one: forma keeps answering, says what is wrong in `/health`, and recovers by itself
//! with no event lost.

use std::time::Duration;

use serde_json::Value;

use crate::config::SecretUrl;
use crate::infra::db::Backend;
use crate::order::flow_tests::{SHOP, deliver, get_json, line};
use crate::roles::Role;
use crate::simulators::shopify::{self, Delivery};
use crate::testing::{TestApp, eventually, free_port, redis_server};

const WAIT: Duration = Duration::from_secs(90);

/// A bus whose Redis is not there at start-up is opened later, by itself; what happened meanwhile
/// waited in the outbox and goes out then.
#[tokio::test]
async fn a_bus_whose_redis_comes_late_starts_by_itself_and_nothing_waits_forever() {
    let port = free_port();
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        crate::order::flow_tests::integrations(c, None);
        c.redis.url = Some(SecretUrl::new(format!("redis://127.0.0.1:{port}")));
        c.redis.key_prefix = "late-bus:".to_owned();
    })
    .await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["bus"]["status"], "down", "{health}");
    assert_eq!(
        health["status"], "degraded",
        "a bus that is starting degrades, it does not kill"
    );
    let ready = app.get("/health/ready").await;
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.json::<Value>().await.unwrap()["status"], "degraded");

    // An order arrives while there is no bus: it is stored, its event waits.
    let document = shopify::order_document(42, 4242, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(&app, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);

    let dir = tempfile::tempdir().unwrap();
    let _redis = redis_server(port, dir.path()).await;
    eventually("the bus runs", WAIT, || async {
        let health: Value = app.get("/health").await.json().await.ok()?;
        (health["checks"]["bus"]["status"] == "ok").then_some(())
    })
    .await;
    // The waiting order.created reached the print side, which planned the order (no mapping:
    // it is UNMAPPED; the dedupe record of the planner shows the event was handled).
    eventually("order.created was handled", WAIT, || async {
        let db = &app.ctx.db;
        let handled = crate::on_pool!(db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM processed_events WHERE consumer = 'print.planner'")
                .fetch_one(pool)
                .await
        })
        .ok()?;
        (handled == 1).then_some(())
    })
    .await;
    let admin = app.admin().await;
    let orders = get_json(&admin, &app.url("/api/v1/orders")).await;
    assert_eq!(orders["total"], 1);
}
