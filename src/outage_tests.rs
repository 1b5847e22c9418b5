//! Outages at run time (issue: hardening), each on a PostgreSQL or Redis of the test's own on a
//! free port, never the shared one: forma keeps answering, says what is wrong in `/health`, and
//! recovers by itself with no event lost.

mod traffic;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::config::Role;
use crate::config::{SecretUrl, UrlList};
use crate::infra::db::Backend;
use crate::order::flow_tests::{SHOP, deliver, get_json, integrations, line, map};
use crate::simulators::shopify::{self, Delivery};
use crate::testing::{
    TestApp, TestDatabase, client, eventually, free_port, postgres_server, redis_server,
};
use traffic::{Traffic, assert_well_answered, order_delivery, orders_delivered, unacknowledged};

const WAIT: Duration = Duration::from_secs(90);
/// How long a dependency stays away.
const OUTAGE: Duration = Duration::from_secs(10);
const DATABASE_UNAVAILABLE: &str = "The database is unavailable; try again shortly";
const SESSIONS_UNAVAILABLE: &str = "Sessions are unavailable; try again shortly";

/// A bus whose Redis is not there at start-up is opened later, by itself; what happened meanwhile
/// waited in the outbox and goes out then.
#[tokio::test]
async fn a_bus_whose_redis_comes_late_starts_by_itself_and_nothing_waits_forever() {
    let port = free_port();
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |c| {
        integrations(c, None);
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

/// PostgreSQL stops for ten seconds under steady traffic (role `all`). Every request is answered
/// meanwhile, a 503 in the §4 shape wherever the database was needed, and `/health` says `down`.
/// When it returns everything works again without a restart, and nothing is lost: the order
/// delivered before is processed, the ones refused meanwhile are accepted when Shopify delivers
/// them again, the outbox drains. With Redis, the bus and the sessions stay up; without it they
/// live in PostgreSQL too and go down with it.
async fn postgres_stops_for_ten_seconds(redis: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut postgres = postgres_server(free_port(), dir.path()).await;
    let database = Arc::new(TestDatabase::create_on(&postgres.admin_url()).await);
    let app = TestApp::spawn_on(Role::All, database, |c| {
        integrations(c, None);
        if redis {
            crate::testing::use_redis(c);
        }
    })
    .await;
    // Where the session is read from says which store the signed-in read finds away.
    let read_refusal = if redis {
        DATABASE_UNAVAILABLE
    } else {
        SESSIONS_UNAVAILABLE
    };
    let admin = app.admin().await;
    let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    map(&admin, &app, "CUBE", cube).await;

    // Its order.created may still be on its way when the database stops.
    let before = order_delivery(1);
    assert_eq!(deliver(&app, &before).await.0, 200);
    let traffic = Traffic::start(app.url(""), admin.clone(), 1000);

    postgres.stop().await;
    let stopped = Instant::now();
    let (status, health) = eventually("/health says the database is down", WAIT, || async {
        let response = app.get("/health").await;
        let status = response.status();
        let health: Value = response.json().await.ok()?;
        (health["checks"]["database"]["status"] == "down").then_some((status, health))
    })
    .await;
    assert_eq!((status.as_u16(), &health["status"]), (503, &json!("down")));

    // A new order is refused with a 503, which Shopify delivers again; a signed-in read too.
    let during = order_delivery(2);
    let (status, body) = deliver(&app, &during).await;
    assert_unavailable(status, &body, DATABASE_UNAVAILABLE);
    let response = admin.get(app.url("/api/v1/orders")).send().await.unwrap();
    let status = response.status().as_u16();
    assert_unavailable(status, &response.json().await.unwrap(), read_refusal);

    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    postgres.start().await;
    eventually("/health says ok again", WAIT, || async {
        let health: Value = app.get("/health").await.json().await.ok()?;
        (health["status"] == "ok").then_some(())
    })
    .await;
    let answers = traffic.finish().await;
    assert_well_answered(&answers, &[DATABASE_UNAVAILABLE, read_refusal]);

    let mut again = unacknowledged(&answers);
    again.push(during);
    for delivery in &again {
        let (status, ack) = deliver(&app, delivery).await;
        assert_eq!(status, 200, "{ack}");
    }
    let orders = 2 + orders_delivered(&answers);
    every_order_is_planned_and_no_event_waits(&app, &admin, orders).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_for_ten_seconds_answers_503_and_recovers_losing_no_order() {
    postgres_stops_for_ten_seconds(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_stopped_for_ten_seconds_with_the_bus_on_it_recovers_losing_no_order() {
    postgres_stops_for_ten_seconds(false).await;
}

/// Redis stops for ten seconds while the gateway and the order service run split, under steady
/// traffic. Nothing hangs: rate limits are counted by each gateway on its own (and still hold),
/// `/health` says `degraded`, cookie sessions answer 503 (they live in Redis and no other store
/// knows them; a 401 would sign everyone out) while bearer tokens keep working, and Shopify's
/// orders are accepted, their events waiting in the outbox. When Redis returns the same session
/// works again and the bus delivers what waited, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_for_ten_seconds_degrades_the_split_deployment_and_it_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = redis_server(port, dir.path()).await;
    let database = Arc::new(TestDatabase::create(Backend::Postgres).await);
    let shared = |c: &mut crate::config::Config| {
        integrations(c, None);
        c.redis.url = Some(SecretUrl::new(format!("redis://127.0.0.1:{port}")));
        c.redis.key_prefix = "redis-outage:".to_owned();
        // Three sign-in attempts a minute per address: small enough to see the limit hold.
        c.rate_limit.auth = 3;
    };
    let order = TestApp::spawn_on(Role::Order, database.clone(), shared).await;
    let gateway = TestApp::spawn_on(Role::Gateway, database, |c| {
        shared(c);
        c.services.order_url = UrlList(vec![order.url("")]);
    })
    .await;
    let (admin, _) = gateway
        .login("admin@localhost", crate::testing::ADMIN_PASSWORD)
        .await;
    let token = client()
        .post(gateway.url("/api/v1/auth/token"))
        .json(&json!({"email": "admin@localhost", "password": crate::testing::ADMIN_PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(token.status(), 200);
    let bearer = format!(
        "Bearer {}",
        token.json::<Value>().await.unwrap()["accessToken"]
            .as_str()
            .unwrap()
    );
    let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    map(&admin, &gateway, "CUBE", cube).await;
    let traffic = Traffic::start(gateway.url(""), admin.clone(), 1000);

    redis.kill().await.unwrap();
    let stopped = Instant::now();
    eventually("/health says Redis is down", WAIT, || async {
        let response = gateway.get("/health").await;
        let status = response.status();
        let health: Value = response.json().await.ok()?;
        let down = health["checks"]["redis"]["status"] == "down"
            && health["checks"]["rateLimit"]["status"] == "down";
        down.then_some((status, health))
    })
    .await;
    let (status, health) = {
        let response = gateway.get("/health").await;
        (response.status(), response.json::<Value>().await.unwrap())
    };
    assert_eq!(
        (status.as_u16(), &health["status"]),
        (200, &json!("degraded")),
        "{health}"
    );

    // The cookie session is in Redis: 503, not 401 (once the identity this gateway holds for a
    // moment has expired). A bearer token needs no session.
    eventually("a cookie session answers 503", WAIT, || async {
        let response = admin.get(gateway.url("/api/v1/orders")).send().await.ok()?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.ok()?;
        assert!(status == 200 || status == 503, "{status} {body}");
        (status == 503).then(|| assert_unavailable(status, &body, SESSIONS_UNAVAILABLE))
    })
    .await;
    let response = client()
        .get(gateway.url("/api/v1/orders"))
        .header("authorization", &bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("ratelimit-limit"));

    // Limits are counted by this gateway alone now, and still hold.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let response = client()
            .post(gateway.url("/api/v1/auth/token"))
            .json(&json!({"email": "nobody@example.com", "password": "wrong"}))
            .send()
            .await
            .unwrap();
        statuses.push(response.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 401, 429]);
    let metrics = gateway.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("gateway_rate_limit_fallback_total"),
        "{metrics}"
    );

    // Shopify's orders are accepted; their events wait in the outbox.
    let during = order_delivery(2);
    assert_eq!(deliver(&gateway, &during).await.0, 200);
    assert!(unsent_events(&gateway).await > 0);

    tokio::time::sleep(OUTAGE.saturating_sub(stopped.elapsed())).await;
    let _redis = redis_server(port, dir.path()).await;
    eventually("/health says ok again", WAIT, || async {
        let health: Value = gateway.get("/health").await.json().await.ok()?;
        (health["status"] == "ok").then_some(())
    })
    .await;
    // The session made before the outage, not a new one.
    eventually("the cookie session works again", WAIT, || async {
        let response = admin.get(gateway.url("/api/v1/orders")).send().await.ok()?;
        (response.status() == 200).then_some(())
    })
    .await;
    let answers = traffic.finish().await;
    assert_well_answered(&answers, &[SESSIONS_UNAVAILABLE]);
    assert!(
        unacknowledged(&answers).is_empty(),
        "a webhook was refused while only Redis was away"
    );
    let orders = 1 + orders_delivered(&answers);
    every_order_is_planned_and_no_event_waits(&gateway, &admin, orders).await;
}

/// A 503 in the §4 shape saying `message`.
fn assert_unavailable(status: u16, body: &Value, message: &str) {
    assert_eq!(
        (status, body),
        (
            503,
            &json!({"statusCode": 503, "message": message, "error": "Service Unavailable"})
        )
    );
}

/// Outbox rows not yet published to the bus.
async fn unsent_events(app: &TestApp) -> i64 {
    let db = &app.ctx.db;
    crate::on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await
    })
    .unwrap()
}

/// Every one of the `orders` Shopify orders is stored and got its print job (its order.created
/// went through the bus), nothing waits in the outbox and no event ended dead.
async fn every_order_is_planned_and_no_event_waits(
    app: &TestApp,
    admin: &reqwest::Client,
    orders: usize,
) {
    let stored = get_json(admin, &app.url("/api/v1/orders?pageSize=1")).await;
    assert_eq!(stored["total"], orders, "{stored}");
    let jobs_url = app.url("/api/v1/print-jobs?pageSize=1");
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let jobs = get_json(admin, &jobs_url).await;
        if jobs["total"] == orders {
            break;
        }
        if std::time::Instant::now() >= deadline {
            // What the bus holds says where an order.created stopped.
            let queues = get_json(admin, &app.url("/api/v1/admin/queues")).await;
            panic!(
                "{} of {orders} orders have their print job; queues: {queues}",
                jobs["total"]
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eventually("the outbox is drained", WAIT, || async {
        (unsent_events(app).await == 0).then_some(())
    })
    .await;
    let queues = get_json(admin, &app.url("/api/v1/admin/queues")).await;
    let queues = queues.as_array().unwrap();
    assert!(queues.iter().all(|q| q["dead"] == 0), "{queues:?}");
}
