//! Pushes end to end: a Shopify order arrives through the gateway, and the simulated push service
//! checks every request's VAPID token and decrypts its payload as the browser would. On both
//! databases.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::messages;
use super::sender::MAX_ATTEMPTS;
use super::subscriptions::{self, NewSubscription};
use crate::config::Role;
use crate::each_database;
use crate::infra::db::Backend;
use crate::order::flow_tests::{SHOP, SHOPIFY_SECRET, integrations};
use crate::simulators::push::{Answer, BrowserSubscription, PushServiceSim};
use crate::simulators::shopify::{Delivery, Line, order_document};
use crate::testing::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(60);

async fn app_with_push(backend: Backend) -> TestApp {
    TestApp::spawn_with(Role::All, backend, |config| {
        integrations(config, None);
        config.push.timeout_ms = Some(500);
    })
    .await
}

async fn subscribe(app: &TestApp, client: &reqwest::Client, browser: &BrowserSubscription) {
    let response = client
        .post(app.url("/api/v1/push/subscriptions"))
        .json(browser)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
}

/// A new Shopify order, number `number`, through the gateway.
async fn new_order(app: &TestApp, number: u64) {
    let line = Line {
        id: number * 10,
        sku: "NOT-MAPPED".into(),
        name: "Unmapped thing".into(),
        quantity: 1,
        price: "12.50".into(),
    };
    let document = order_document(number * 100, number, &[line]);
    let response = Delivery::new("orders/create", SHOP, &document)
        .send(
            &app.client,
            &app.url("/api/v1/webhooks/shopify"),
            SHOPIFY_SECRET.as_bytes(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

fn of_type(service: &PushServiceSim, endpoint: &str, kind: &str) -> Vec<Value> {
    service
        .delivered_to(endpoint)
        .into_iter()
        .map(|d| d.payload)
        .filter(|p| p["type"] == kind)
        .collect()
}

async fn count(app: &TestApp, sql: &'static str) -> i64 {
    crate::on_pool!(&app.ctx.db, pool => {
        sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.unwrap()
    })
}

each_database! {
    async fn a_new_order_is_pushed_once_to_every_browser_of_its_tenant_signed_and_encrypted(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = app_with_push(backend).await;
        let admin = app.admin().await;
        let (laptop, phone, elsewhere) = (service.subscribe(), service.subscribe(), service.subscribe());
        subscribe(&app, &admin, &laptop).await;
        subscribe(&app, &admin, &phone).await;
        // A browser of another tenant hears nothing of this one.
        let other = NewSubscription {
            endpoint: elsewhere.endpoint.clone(),
            p256dh: elsewhere.keys.p256dh.clone(),
            auth: elsewhere.keys.auth.clone(),
        };
        subscriptions::upsert(&app.ctx.db, Uuid::now_v7(), Uuid::now_v7(), &other).await.unwrap();

        new_order(&app, 1001).await;
        for browser in [&laptop, &phone] {
            let pushed = eventually("the new order's push", WAIT, || async {
                let pushed = of_type(&service, &browser.endpoint, "order.created");
                (!pushed.is_empty()).then_some(pushed)
            })
            .await;
            let order_id = pushed[0]["orderId"].as_str().unwrap().to_owned();
            assert_eq!(pushed[0], json!({
                "type": "order.created",
                "title": "New order #1001",
                "body": "Ada Customer 1001 · 12.50 EUR",
                "orderId": order_id,
                "url": format!("/orders/{order_id}"),
            }));
        }
        let delivered = service.delivered();
        assert_eq!(delivered[0].ttl, 24 * 60 * 60);
        assert_eq!(delivered[0].subject, "mailto:admin@localhost");
        assert!(service.refusals().is_empty(), "{:?}", service.refusals());
        assert!(service.delivered_to(&elsewhere.endpoint).is_empty());
        // Whatever else is pushed, the order's arrival is pushed once per browser.
        eventually("every message sent", WAIT, || async {
            (count(&app, "SELECT COUNT(*) FROM push_messages WHERE status = 'PENDING'").await == 0).then_some(())
        })
        .await;
        assert_eq!(of_type(&service, &laptop.endpoint, "order.created").len(), 1);
        assert_eq!(of_type(&service, &phone.endpoint, "order.created").len(), 1);
        stop.cancel();
    }
}

each_database! {
    async fn a_subscription_its_push_service_calls_gone_or_unknown_is_removed(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = app_with_push(backend).await;
        let admin = app.admin().await;
        let (expired, unknown, alive) = (service.subscribe(), service.subscribe(), service.subscribe());
        for browser in [&expired, &unknown, &alive] {
            subscribe(&app, &admin, browser).await;
        }
        service.answer_always(&expired.endpoint, Answer::Gone);
        service.answer_always(&unknown.endpoint, Answer::NotFound);

        new_order(&app, 1002).await;
        eventually("the dead subscriptions removed", WAIT, || async {
            (count(&app, "SELECT COUNT(*) FROM push_subscriptions").await == 1).then_some(())
        })
        .await;
        assert_eq!(of_type(&service, &alive.endpoint, "order.created").len(), 1);
        let endpoint = json!({"endpoint": expired.endpoint});
        let url = app.url("/api/v1/push/subscriptions");
        assert_eq!(admin.delete(&url).json(&endpoint).send().await.unwrap().status(), 404);
        assert_eq!(
            count(&app, "SELECT COUNT(*) FROM push_messages WHERE subscription_id NOT IN (SELECT id FROM push_subscriptions)").await,
            0,
            "their messages went with them"
        );
        stop.cancel();
    }
}

each_database! {
    async fn a_push_service_error_or_silence_is_tried_again_until_it_takes_the_message(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = app_with_push(backend).await;
        let admin = app.admin().await;
        let browser = service.subscribe();
        subscribe(&app, &admin, &browser).await;
        // The first push to it meets a 503, the second no answer within push.timeout_ms.
        service.answer_next(&browser.endpoint, &[Answer::Unavailable, Answer::Hang]);

        new_order(&app, 1003).await;
        eventually("the push taken at the third request", WAIT, || async {
            (!of_type(&service, &browser.endpoint, "order.created").is_empty()).then_some(())
        })
        .await;
        eventually("every message sent", WAIT, || async {
            (count(&app, "SELECT COUNT(*) FROM push_messages WHERE status <> 'SENT'").await == 0).then_some(())
        })
        .await;
        let requests = service.requests_to(&browser.endpoint);
        assert!(requests >= 3, "{requests}");
        let attempts = count(&app, "SELECT CAST(SUM(attempts) AS BIGINT) FROM push_messages").await;
        assert_eq!(usize::try_from(attempts).unwrap(), requests, "each request was one attempt");
        assert_eq!(of_type(&service, &browser.endpoint, "order.created").len(), 1);
        assert!(service.refusals().is_empty(), "{:?}", service.refusals());
        stop.cancel();
    }
}

each_database! {
    async fn a_push_that_keeps_failing_is_given_up_after_a_bounded_number_of_attempts(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = app_with_push(backend).await;
        let admin = app.admin().await;
        let browser = service.subscribe();
        subscribe(&app, &admin, &browser).await;
        service.answer_always(&browser.endpoint, Answer::Unavailable);

        new_order(&app, 1004).await;
        eventually("every message given up", WAIT, || async {
            let failed = count(&app, "SELECT COUNT(*) FROM push_messages WHERE status = 'FAILED'").await;
            let all = count(&app, "SELECT COUNT(*) FROM push_messages").await;
            (all > 0 && failed == all).then_some(())
        })
        .await;
        let attempts = count(&app, "SELECT MIN(attempts) FROM push_messages").await;
        assert_eq!(attempts, MAX_ATTEMPTS);
        assert_eq!(count(&app, "SELECT COUNT(*) FROM push_subscriptions").await, 1, "an outage is no reason to drop the browser");
        stop.cancel();
    }
}

each_database! {
    async fn the_same_occurrence_reported_twice_is_recorded_once(backend: Backend) {
        let stop = CancellationToken::new();
        let service = PushServiceSim::start(stop.clone()).await.unwrap();
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let browser = service.subscribe();
        subscribe(&app, &admin, &browser).await;
        let tenant = tenant_of_subscriptions(&app).await;
        let targets = subscriptions::of_tenant(&app.ctx.db, tenant).await.unwrap();
        assert_eq!(targets.len(), 1);

        let key = format!("print-job-failed:{}:attempt:1", Uuid::now_v7());
        let payload = r#"{"type":"printjob.failed"}"#;
        assert_eq!(messages::enqueue(&app.ctx.db, &targets, &key, payload).await.unwrap(), 1);
        assert_eq!(messages::enqueue(&app.ctx.db, &targets, &key, payload).await.unwrap(), 0, "the second report");
        let retried = key.replace("attempt:1", "attempt:2");
        assert_eq!(messages::enqueue(&app.ctx.db, &targets, &retried, payload).await.unwrap(), 1, "a later attempt is news");
        stop.cancel();
    }
}

/// Recording a push is no part of the webhook that caused it: while another transaction holds the
/// subscriptions (as a busy database would keep the push's bookkeeping waiting), a Shopify order is
/// still answered, its push not yet recorded; once they are free the push follows. PostgreSQL only:
/// SQLite's one writer would keep the webhook's own writes waiting as well.
#[tokio::test]
async fn a_webhook_is_answered_while_its_push_waits_for_the_database() {
    /// Far longer than a webhook takes; a webhook waiting on the lock never finishes in it.
    const ANSWERED_WITHIN: Duration = Duration::from_secs(30);
    let stop = CancellationToken::new();
    let service = PushServiceSim::start(stop.clone()).await.unwrap();
    let app = app_with_push(Backend::Postgres).await;
    let admin = app.admin().await;
    let browser = service.subscribe();
    subscribe(&app, &admin, &browser).await;
    let crate::infra::db::Db::Postgres(pool) = &app.ctx.db else {
        unreachable!("a PostgreSQL app")
    };
    let mut holder = pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE push_subscriptions IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *holder)
        .await
        .unwrap();

    tokio::time::timeout(ANSWERED_WITHIN, new_order(&app, 1005))
        .await
        .expect("the webhook is answered while its push cannot be recorded");
    assert_eq!(
        count(&app, "SELECT COUNT(*) FROM push_messages").await,
        0,
        "recorded through the lock?"
    );

    holder.rollback().await.unwrap();
    eventually(
        "the push follows once the subscriptions are free",
        WAIT,
        || async {
            (!of_type(&service, &browser.endpoint, "order.created").is_empty()).then_some(())
        },
    )
    .await;
    stop.cancel();
}

/// The tenant the push subscriptions belong to.
async fn tenant_of_subscriptions(app: &TestApp) -> Uuid {
    crate::on_pool!(&app.ctx.db, pool => {
        sqlx::query_scalar::<_, Uuid>("SELECT tenant_id FROM push_subscriptions")
            .fetch_one(pool)
            .await
            .unwrap()
    })
}

/// In production a push reaches only the public internet (a subscription's endpoint is an
/// address a user gave): an endpoint on an inside address is refused without a request, and a
/// name that resolves to inside addresses only is never connected to.
#[tokio::test]
async fn in_production_no_push_reaches_an_inside_address() {
    use futures::FutureExt;

    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let inside = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = inside.local_addr().unwrap().port();
    let mut config = (*app.ctx.config).clone();
    config.environment = crate::config::Environment::Production;
    let push = super::Push::from_config(std::sync::Arc::new(config), app.ctx.db.clone()).unwrap();

    let by_name = push
        .http
        .get(format!("http://localhost:{port}/"))
        .send()
        .await;
    let error = format!(
        "{:?}",
        by_name.expect_err("a name of loopback addresses only")
    );
    assert!(error.contains("no public address"), "{error}");
    for endpoint in [
        format!("https://127.0.0.1:{port}/push/abc"),
        format!("https://localhost:{port}/push/abc"),
        format!("https://[::ffff:127.0.0.1]:{port}/push/abc"),
    ] {
        let target = subscriptions::Target {
            id: Uuid::now_v7(),
            endpoint: endpoint.clone(),
            p256dh: String::new(),
            auth: String::new(),
        };
        match super::sender::send(&push, &target, "{}").await {
            super::sender::Outcome::Refused(error) => {
                assert!(
                    error.contains("not on the public internet"),
                    "{endpoint}: {error}"
                )
            }
            other => panic!("{endpoint}: {other:?}"),
        }
    }
    // Every attempt above ended before any connection: none waits to be accepted.
    assert!(
        inside.accept().now_or_never().is_none(),
        "a connection reached the inside address"
    );
}
