//! Notification e-mails in the order flow, as an operator receives them: a print job fails at the
//! (simulated) farm, the order fails, an order arrives with an unmapped SKU, and the e-mails reach
//! a real SMTP server on loopback, once each, without an SMTP outage ever holding up an order.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::settings::{self, NotificationSettings};
use crate::config::Role;
use crate::config::{Config, UrlList};
use crate::each_database;
use crate::events::catalog::{Event, EventPayload, PrintJobFailed};
use crate::events::internal::{self as internal_events, InternalEvent};
use crate::identity::tenants;
use crate::infra::db::{Backend, Db};
use crate::on_pool;
use crate::order::OrderCore;
use crate::order::flow_tests::{
    Deployment, SHOP, SP_TOKEN, deliver, get_json, integrations, line, map, order_numbered,
};
use crate::simulators::shopify::{self, Delivery};
use crate::simulators::smtp::{Mode, SmtpSim};
use crate::testing::{self, TestApp, TestDatabase, eventually};

const WAIT: Duration = Duration::from_secs(60);
/// Longer than any wait of these tests: an e-mail sent on the order's way would hold it this long.
const HUNG_FOR_MS: u64 = 300_000;
const OPS: &str = "ops@shop.example";
const LEAD: &str = "lead@shop.example";

async fn mail_to(admin: &reqwest::Client, gateway: &TestApp, recipients: &[&str], unmapped: bool) {
    let response = admin
        .put(gateway.url("/api/v1/notifications/settings"))
        .json(
            &json!({"recipients": recipients, "printJobFailed": true, "orderFailed": true,
            "fulfillmentFailed": true, "unmappedSku": unmapped}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
}

/// Role `all` mailing through an SMTP simulator of its own, with the admin signed in and every kind
/// of e-mail going to `recipients`. The simulator stops when this is dropped.
struct Mailing {
    smtp: SmtpSim,
    deployment: Deployment,
    admin: reqwest::Client,
    _stop: tokio_util::sync::DropGuard,
}

impl Mailing {
    async fn start(recipients: &[&str]) -> Self {
        let stop = CancellationToken::new();
        let smtp = SmtpSim::start(stop.clone()).await.unwrap();
        let deployment = Deployment::all_with(false, |c| smtp.configure(&mut c.smtp)).await;
        let admin = deployment.gateway(0).admin().await;
        mail_to(&admin, deployment.gateway(0), recipients, true).await;
        Self {
            smtp,
            deployment,
            admin,
            _stop: stop.drop_guard(),
        }
    }

    fn gateway(&self) -> &TestApp {
        self.deployment.gateway(0)
    }
}

/// (kind, recipient, status) of every e-mail recorded, in order.
async fn recorded(db: &Db) -> Vec<(String, String, String)> {
    on_pool!(db, pool => {
        sqlx::query_as(
            "SELECT kind, recipient, status FROM notification_emails ORDER BY kind, recipient",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    })
}

fn subject(mail: &crate::simulators::smtp::Mail) -> String {
    mail.header("Subject").unwrap_or_default()
}

#[tokio::test]
async fn a_hung_smtp_server_does_not_hold_up_the_order_and_its_emails_follow_when_it_answers() {
    let stop = CancellationToken::new();
    let smtp = SmtpSim::start(stop.clone()).await.unwrap();
    smtp.set_mode(Mode::Stall);
    let deployment = Deployment::all_with(true, |c| {
        smtp.configure(&mut c.smtp);
        c.smtp.timeout_ms = Some(HUNG_FOR_MS);
    })
    .await;
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    mail_to(&admin, gateway, &[OPS], true).await;
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let document = shopify::order_document(5_600_001, 2001, &[line(1, "CUBE", 1)]);
    let (status, ack) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!((status, ack["outcome"].as_str()), (200, Some("created")));
    let order = order_numbered(&admin, gateway, 2001).await;
    let detail_url = gateway.url(&format!("/api/v1/orders/{}", order["id"].as_str().unwrap()));

    let farm = &deployment.farm;
    let item = eventually("the farm has the job", WAIT, || async {
        farm.items().into_iter().next()
    })
    .await;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    // Answered while the SMTP server hangs: the failure's e-mail is only recorded on the way.
    let answered = tokio::time::timeout(WAIT, farm.report(item.id, "job.failed", &hook, SP_TOKEN))
        .await
        .expect("the webhook is answered while the SMTP server hangs");
    assert_eq!(answered.unwrap(), 200);
    // The order moves on while the SMTP server holds the sender's connection without a word.
    eventually("the order fails", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        (detail["status"] == "FAILED").then_some(())
    })
    .await;
    eventually("the sender is waiting on the server", WAIT, || async {
        (smtp.connections() >= 1).then_some(())
    })
    .await;
    assert!(smtp.mails().is_empty());

    smtp.set_mode(Mode::Accept);
    let mails = eventually("both e-mails arrive", WAIT, || async {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    let mut subjects: Vec<String> = mails.iter().map(subject).collect();
    subjects.sort();
    assert!(
        subjects[0].starts_with("Order failed: order #2001")
            && subjects[1].starts_with("Print job failed: cube.gcode (order #2001"),
        "{subjects:?}"
    );
    assert!(mails.iter().all(|m| m.to == [OPS]));
    // Once each: the print side and the bus both reported the job's failure.
    let db = &deployment.gateways[0].ctx.db;
    let rows = eventually("both are marked sent", WAIT, || async {
        let rows = recorded(db).await;
        rows.iter().all(|r| r.2 == "SENT").then_some(rows)
    })
    .await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds, ["order_failed", "print_job_failed"]);
    assert_eq!(smtp.mails().len(), 2);
}

/// An order none of whose lines can be printed as ordered (more prints than any line needs) is
/// failed from its creation, and mailed as any failed order is.
#[tokio::test]
async fn an_order_failed_from_its_creation_is_mailed() {
    let mailing = Mailing::start(&[OPS]).await;
    let (smtp, gateway, admin) = (&mailing.smtp, mailing.gateway(), &mailing.admin);
    let files = json!([{"fileId": "f-big", "fileName": "big.gcode"}]);
    map(admin, gateway, "BIG", files).await;
    let document = shopify::order_document(5_600_009, 2009, &[line(1, "BIG", 5_000)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    assert_eq!(
        order_numbered(admin, gateway, 2009).await["status"],
        "FAILED"
    );
    let mail = eventually("the failure is mailed", WAIT, || async {
        smtp.mails().into_iter().next()
    })
    .await;
    assert!(subject(&mail).contains("#2009"), "{}", mail.data);
    let kinds: Vec<String> = recorded(&mailing.deployment.gateway(0).ctx.db)
        .await
        .into_iter()
        .map(|(kind, _, _)| kind)
        .collect();
    assert_eq!(kinds, ["order_failed"]);
}

#[tokio::test]
async fn an_order_with_an_unmapped_sku_is_mailed_to_every_recipient_unless_that_kind_is_off() {
    let mailing = Mailing::start(&[OPS, LEAD]).await;
    let (smtp, gateway, admin) = (&mailing.smtp, mailing.gateway(), &mailing.admin);
    let document = shopify::order_document(
        5_600_002,
        2002,
        &[line(1, "NOPE-1", 1), line(2, "NOPE-2", 2)],
    );
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let mails = eventually("one e-mail per recipient arrives", WAIT, || async {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    let mut to: Vec<&str> = mails.iter().map(|m| m.to[0].as_str()).collect();
    to.sort_unstable();
    assert_eq!(to, [LEAD, OPS]);
    for mail in &mails {
        assert!(
            subject(mail).starts_with("Unmapped SKU: NOPE-1, NOPE-2 (order #2002"),
            "{}",
            mail.data
        );
        assert!(
            mail.body().contains("- NOPE-1\r\n- NOPE-2"),
            "{}",
            mail.data
        );
    }

    mail_to(admin, gateway, &[OPS, LEAD], false).await;
    let document = shopify::order_document(5_600_003, 2003, &[line(1, "NOPE-3", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    let order = order_numbered(admin, gateway, 2003).await;
    assert_eq!(order["lineItems"][0]["status"], "UNMAPPED", "{order}");
    // Recorded with the order or not at all: nothing more can come for it.
    let rows = recorded(&gateway.ctx.db).await;
    assert_eq!(rows.len(), 2, "{rows:?}");
}

#[tokio::test]
async fn an_update_that_leaves_lines_unmapped_is_mailed_too() {
    let mailing = Mailing::start(&[OPS]).await;
    let (smtp, gateway, admin) = (&mailing.smtp, mailing.gateway(), &mailing.admin);
    let created = shopify::order_document(5_600_004, 2004, &[line(1, "NOPE-4", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &created)).await;
    eventually("the new order's e-mail arrives", WAIT, || async {
        (smtp.mails().len() == 1).then_some(())
    })
    .await;

    // The customer swapped the line's product and added one: neither has a mapping.
    let updated = shopify::order_document(
        5_600_004,
        2004,
        &[line(1, "NOPE-5", 1), line(2, "NOPE-6", 1)],
    );
    let (status, _) = deliver(gateway, &Delivery::new("orders/updated", SHOP, &updated)).await;
    assert_eq!(status, 200);
    let mails = eventually("the update's e-mail arrives", WAIT, || async {
        let mails = smtp.mails();
        (mails.len() == 2).then_some(mails)
    })
    .await;
    assert!(
        subject(&mails[1]).starts_with("Unmapped SKU: NOPE-5, NOPE-6 (order #2004"),
        "{}",
        mails[1].data
    );
    let order = order_numbered(admin, gateway, 2004).await;
    let id = order["id"].as_str().unwrap();
    let url = gateway.url(&format!(
        "/api/v1/events?orderId={id}&eventType=line_item.unmapped"
    ));
    let log = get_json(admin, &url).await;
    assert_eq!(log["total"], 3, "one entry per line left unmapped: {log}");

    // The same update delivered again changes nothing and tells nobody.
    deliver(gateway, &Delivery::new("orders/updated", SHOP, &updated)).await;
    assert_eq!(recorded(&gateway.ctx.db).await.len(), 2);
}

/// The order side of a running app, with a dispatcher of the test's own.
fn order_core(app: &TestApp) -> OrderCore {
    OrderCore::detached(app.ctx.db.clone())
}

/// `orders/create` of `document` for `tenant_id`, straight into `core`'s ingestion.
async fn create(core: &OrderCore, tenant_id: Uuid, document: serde_json::Value) {
    use crate::order::orders::ingest;
    let new = serde_json::from_value::<crate::order::shopify::payload::ShopifyOrder>(document)
        .unwrap()
        .to_new_order(tenant_id, crate::order::flow_tests::SHOP)
        .unwrap();
    let delivery = crate::order::shopify::Delivery {
        tenant_id,
        topic: "orders/create".to_owned(),
        webhook_id: Some(Uuid::new_v4().to_string()),
        event_id: None,
    };
    let outcome = ingest::create(core, &delivery, &new).await.unwrap();
    assert_eq!(outcome, ingest::Outcome::Created);
}

each_database! {
    async fn a_failure_reported_again_is_recorded_once_per_recipient(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let core = order_core(&app);
        crate::order::notifications::subscribe(&core);
        let tenant_id = tenants::find_by_slug(&core.db, tenants::DEFAULT_SLUG).await.unwrap().unwrap().id;
        let mut wanted = NotificationSettings::defaults();
        wanted.recipients = vec![OPS.to_owned(), LEAD.to_owned()];
        settings::save(&core.db, tenant_id, &wanted).await.unwrap();
        let order_id = Uuid::new_v4();

        // Shopify refuses the fulfillment again and again: the first failure is mailed.
        for _ in 0..3 {
            core.events.emit(InternalEvent::FulfillmentFailed(internal_events::FulfillmentFailed {
                tenant_id, order_id, error_message: "Shopify answered 500".to_owned(),
            })).await;
        }
        // The print side and the bus both report one failure of a job.
        let job = internal_events::PrintJobRef {
            tenant_id, print_job_id: Uuid::new_v4(), order_id, line_item_id: Uuid::new_v4(),
        };
        for _ in 0..2 {
            core.events.emit(InternalEvent::PrintJobFailed(internal_events::PrintJobFailed {
                job, error_message: "Nozzle clog".to_owned(),
            })).await;
        }
        // Events no e-mail is recorded for: an order's failure is recorded with the failure.
        core.events.emit(InternalEvent::OrderFailed(internal_events::OrderFailed {
            tenant_id, order_id, reason: "Every line failed".to_owned(),
        })).await;
        core.events.emit(InternalEvent::OrderFulfilled(internal_events::OrderRef { tenant_id, order_id })).await;

        let rows: Vec<(String, String)> =
            recorded(&core.db).await.into_iter().map(|(kind, to, _)| (kind, to)).collect();
        let expected: Vec<(String, String)> = ["fulfillment_failed", "print_job_failed"]
            .into_iter()
            .flat_map(|kind| [(kind.to_owned(), LEAD.to_owned()), (kind.to_owned(), OPS.to_owned())])
            .collect();
        assert_eq!(rows, expected);
        let subjects: Vec<String> = on_pool!(&core.db, pool => {
            sqlx::query_scalar("SELECT DISTINCT subject FROM notification_emails ORDER BY subject")
                .fetch_all(pool).await.unwrap()
        });
        let order = format!("order {order_id}");
        assert_eq!(subjects, [
            format!("Print job failed: (unknown file) ({order})"),
            format!("Shopify fulfillment failed: {order}"),
        ]);
    }
}

each_database! {
    /// The process that fails an order may stop before it tells anyone (its internal events are
    /// emitted after the commit): the failure's e-mail is recorded with the failure all the same.
    async fn an_order_failure_is_mailed_though_nobody_heard_of_it(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        mail_to(&admin, &app, &[OPS], false).await;
        map(&admin, &app, "BIG", json!([{"fileId": "f-big", "fileName": "big.gcode"}])).await;
        // A dispatcher nobody listens to: what the process would have told after the commit.
        let core = order_core(&app);
        let tenant_id = tenants::find_by_slug(&core.db, tenants::DEFAULT_SLUG).await.unwrap().unwrap().id;
        let document = shopify::order_document(5_600_010, 2010, &[line(1, "BIG", 5_000)]);
        create(&core, tenant_id, document).await;

        let rows = recorded(&core.db).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("order_failed", OPS));
    }
}

each_database! {
    /// A large order none of whose SKUs is mapped yet (a first backfill, say) is stored and
    /// mailed once: its e-mail's key does not grow with its SKUs past what an index entry holds.
    async fn an_order_of_many_unmapped_skus_is_stored_and_mailed_once(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        mail_to(&admin, &app, &[OPS], true).await;
        let core = order_core(&app);
        let tenant_id = tenants::find_by_slug(&core.db, tenants::DEFAULT_SLUG).await.unwrap().unwrap().id;
        let lines: Vec<_> = (1..=400)
            .map(|n| line(n, &format!("{:020x}", u128::from(n) * 0x9e37_79b9_7f4a_7c15), 1))
            .collect();
        let document = shopify::order_document(5_600_011, 2011, &lines);
        create(&core, tenant_id, document).await;
        let rows = recorded(&core.db).await;
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert_eq!(rows[0].0, "unmapped_sku");
    }
}

/// The farm fails a job; SimplyPrint's webhook tells the job's failure, addressed by forma's own
/// id (`uid`) and a farm job id of its own.
async fn farm_fails(gateway: &TestApp, job_id: &str, farm_job: u64) {
    let failed = testing::client()
        .post(gateway.url("/api/v1/webhooks/simplyprint"))
        .header("x-sp-token", SP_TOKEN)
        .json(&json!({
            "webhook_id": Uuid::new_v4().to_string(), "event": "job.failed",
            "timestamp": chrono::Utc::now().timestamp(),
            "data": {"job": {"id": farm_job, "uid": job_id, "status": "failed"},
                "printer": {"id": 1, "name": "Printer"}, "user": {"id": 1}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(failed.status(), 200);
}

/// A job fails, an operator retries it, and only then does the bus tell the order side of the
/// first failure (it was behind). That late report is no new failure: the retry's own failure is
/// still mailed, as the second attempt's.
#[tokio::test]
async fn a_failure_told_late_by_the_bus_does_not_silence_the_retrys_failure() {
    let mailing = Mailing::start(&[OPS]).await;
    let (gateway, admin) = (mailing.gateway(), &mailing.admin);
    let files = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    map(admin, gateway, "CUBE", files).await;
    let document = shopify::order_document(5_600_010, 2010, &[line(1, "CUBE", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    let order_id = order_numbered(admin, gateway, 2010).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let jobs_url = gateway.url(&format!("/api/v1/print-jobs?orderId={order_id}"));
    let job = eventually("the job is planned", WAIT, || async {
        get_json(admin, &jobs_url).await["items"].get(0).cloned()
    })
    .await;
    let job_id = job["id"].as_str().unwrap();
    let db = &gateway.ctx.db;
    let mailed = |n: usize| async move {
        let rows = recorded(db).await;
        let failures = rows.iter().filter(|r| r.0 == "print_job_failed").count();
        (failures == n).then_some(())
    };

    farm_fails(gateway, job_id, 770_010).await;
    eventually("the first failure is mailed", WAIT, || mailed(1)).await;
    let retry = gateway.url(&format!("/api/v1/print-jobs/{job_id}/retry"));
    let retried = admin.post(retry).json(&json!({})).send().await.unwrap();
    assert_eq!(retried.status(), 200);

    // The bus's report of the first failure, handled after the retry.
    let core = order_core(gateway);
    crate::order::notifications::subscribe(&core);
    let late = EventPayload::PrintJobFailed(PrintJobFailed {
        print_job_id: job_id.to_owned(),
        order_id: order_id.clone(),
        line_item_id: job["lineItemId"].as_str().unwrap().to_owned(),
        error_message: "Nozzle clog".to_owned(),
    });
    let tenant_id = job["tenantId"].as_str().unwrap();
    let late = Event::new("print-service", tenant_id, late);
    crate::order::orchestration::on_print_job_event(&core, &late)
        .await
        .unwrap();
    assert!(mailed(1).await.is_some(), "{:?}", recorded(db).await);

    farm_fails(gateway, job_id, 770_011).await;
    eventually("the retry's failure is mailed", WAIT, || mailed(2)).await;
}

/// Two order replicas and a gateway on one PostgreSQL database and one Redis, the farm reporting
/// by webhook only (forma's own job id in `uid`).
#[tokio::test]
async fn with_two_order_replicas_each_failure_is_mailed_once() {
    let stop = CancellationToken::new();
    let smtp = SmtpSim::start(stop.clone()).await.unwrap();
    let database = Arc::new(TestDatabase::create(Backend::Postgres).await);
    let mut redis = Config::default();
    testing::use_redis(&mut redis);
    let shared = |c: &mut Config| {
        c.redis = redis.redis.clone();
        integrations(c, None);
        smtp.configure(&mut c.smtp);
    };
    let mut replicas = Vec::new();
    for _ in 0..2 {
        replicas.push(TestApp::spawn_on(Role::Order, database.clone(), shared).await);
    }
    let urls: Vec<String> = replicas.iter().map(|r| r.url("")).collect();
    let gateway = TestApp::spawn_on(Role::Gateway, database.clone(), |c| {
        shared(c);
        c.services.order_url = UrlList(urls);
    })
    .await;
    let admin = gateway.admin().await;
    mail_to(&admin, &gateway, &[OPS], true).await;
    map(
        &admin,
        &gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let document = shopify::order_document(5_600_004, 2004, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(&gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let order = order_numbered(&admin, &gateway, 2004).await;
    let order_id = order["id"].as_str().unwrap().to_owned();
    let jobs_url = gateway.url(&format!("/api/v1/print-jobs?orderId={order_id}"));
    let job_id = eventually("the job is planned", WAIT, || async {
        let page = get_json(&admin, &jobs_url).await;
        page["items"][0]["id"].as_str().map(str::to_owned)
    })
    .await;
    farm_fails(&gateway, &job_id, 770_001).await;
    let detail_url = gateway.url(&format!("/api/v1/orders/{order_id}"));
    eventually("the order fails", WAIT, || async {
        let detail = get_json(&admin, &detail_url).await;
        (detail["status"] == "FAILED").then_some(())
    })
    .await;

    // The job's failure is reported twice (by the print side, and by the bus on either replica);
    // its dedupe key makes one e-mail of both, whenever the second comes.
    let db = &gateway.ctx.db;
    let rows = eventually("the e-mails are sent", WAIT, || async {
        let rows = recorded(db).await;
        let order_mailed = rows.iter().any(|r| r.0 == "order_failed");
        (order_mailed && rows.iter().all(|r| r.2 == "SENT")).then_some(rows)
    })
    .await;
    let kinds: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    assert_eq!(kinds, ["order_failed", "print_job_failed"]);
    let mails = eventually("both e-mails arrive", WAIT, || async {
        let mails = smtp.mails();
        (mails.len() >= 2).then_some(mails)
    })
    .await;
    assert_eq!(mails.len(), 2, "{mails:?}");
}
