//! Recording and sending notification e-mails, on both databases, to a real SMTP server on
//! loopback (the simulator): delivered once each, kept through an outage, given up when refused.

use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeDelta, Utc};
use uuid::Uuid;

use super::Kind;
use super::email::{self, Mailer, Notice};
use super::email_sender::{self, forget_old, lease_for};
use super::settings::{self, NotificationSettings};
use crate::config::{SecretUrl, SmtpConfig};
use crate::each_database;
use crate::identity::{bootstrap, tenants};
use crate::infra::db::{Backend, Conn, Db};
use crate::infra::workers::{Wakeup, Workers};
use crate::on_pool;
use crate::simulators::smtp::{Mode, SmtpSim};
use crate::testing::{TestDatabase, eventually, free_port};

const WAIT: Duration = Duration::from_secs(60);
const OPS: &str = "ops@shop.example";
const LEAD: &str = "lead@shop.example";

/// A migrated database with the default tenant; the handle keeps it alive.
async fn database(backend: Backend) -> (TestDatabase, Db, Uuid) {
    let database = TestDatabase::create(backend).await;
    let db = Db::connect(&database.url, 5).await.unwrap();
    db.migrate().await.unwrap();
    bootstrap::ensure_first_admin(&db, None).await.unwrap();
    let tenant = tenants::find_by_slug(&db, tenants::DEFAULT_SLUG)
        .await
        .unwrap()
        .unwrap();
    (database, db, tenant.id)
}

async fn mail_to(db: &Db, tenant: Uuid, recipients: &[&str]) -> NotificationSettings {
    let mut wanted = NotificationSettings::defaults();
    wanted.recipients = recipients.iter().map(|r| (*r).to_owned()).collect();
    settings::save(db, tenant, &wanted).await.unwrap()
}

fn notice(tenant: Uuid, key: Option<&str>) -> Notice {
    Notice {
        tenant_id: tenant,
        kind: Kind::PrintJobFailed,
        dedupe_key: key.map(str::to_owned),
        subject: "Print job failed: cube.gcode (order #1001)".to_owned(),
        body: "The print job of order #1001 failed.\nSimplyPrint said: nozzle clog".to_owned(),
    }
}

fn smtp_at(url: &str, timeout_ms: u64) -> SmtpConfig {
    SmtpConfig {
        url: Some(SecretUrl::new(url)),
        from: Some("forma <forma@shop.example>".to_owned()),
        timeout_ms: Some(timeout_ms),
    }
}

/// (recipient, status, attempts, last error) of every e-mail, by recipient.
async fn rows(db: &Db) -> Vec<(String, String, i64, Option<String>)> {
    on_pool!(db, pool => {
        sqlx::query_as(
            "SELECT recipient, status, attempts, last_error FROM notification_emails \
             ORDER BY recipient",
        )
        .fetch_all(pool)
        .await
        .unwrap()
    })
}

/// Runs the real background sender until the returned workers are shut down.
fn run_sender(db: &Db, mailer: Mailer) -> (Workers, Wakeup) {
    let (workers, wakeup) = (Workers::new(), Wakeup::default());
    email_sender::spawn(&workers, db.clone(), Arc::new(mailer), wakeup.clone());
    (workers, wakeup)
}

each_database! {
    async fn recorded_emails_reach_the_smtp_server_once_each_per_recipient(backend: Backend) {
        let (_database, db, tenant) = database(backend).await;
        let settings = mail_to(&db, tenant, &[OPS, LEAD]).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let sim = SmtpSim::start(stop.clone()).await.unwrap();
        let mailer = Mailer::from_config(&smtp_at(&sim.url(), 5_000)).unwrap();

        let keyed = notice(tenant, Some("print-job:1:attempt:1"));
        assert_eq!(email::record(&mut Conn::Pool(&db), &settings, &keyed).await.unwrap(), 2);
        // The same occurrence reported again (by the bus, on another replica) records nothing.
        assert_eq!(email::record(&mut Conn::Pool(&db), &settings, &keyed).await.unwrap(), 0);

        let lease = lease_for(&mailer);
        assert_eq!(email_sender::pass(&db, &mailer, lease).await.unwrap(), 2);
        assert_eq!(email_sender::pass(&db, &mailer, lease).await.unwrap(), 0, "nothing is sent twice");
        let mails = sim.mails();
        let mut to: Vec<&str> = mails.iter().flat_map(|m| m.to.iter().map(String::as_str)).collect();
        to.sort_unstable();
        assert_eq!(to, [LEAD, OPS]);
        let mail = &mails[0];
        assert_eq!(mail.from, "forma@shop.example");
        assert_eq!(mail.header("Subject").as_deref(), Some("Print job failed: cube.gcode (order #1001)"));
        assert!(mail.header("From").is_some_and(|f| f.contains("forma@shop.example")), "{}", mail.data);
        assert!(mail.body().contains("SimplyPrint said: nozzle clog"), "{}", mail.data);
        let statuses: Vec<(String, String, i64)> =
            rows(&db).await.into_iter().map(|(r, s, a, _)| (r, s, a)).collect();
        assert_eq!(statuses, [(LEAD.into(), "SENT".into(), 1), (OPS.into(), "SENT".into(), 1)]);
    }
}

each_database! {
    async fn an_smtp_server_that_is_down_loses_no_email_it_is_sent_once_the_server_is_back(backend: Backend) {
        let (_database, db, tenant) = database(backend).await;
        let settings = mail_to(&db, tenant, &[OPS]).await;
        let port = free_port();
        let mailer = Mailer::from_config(&smtp_at(&format!("smtp://127.0.0.1:{port}"), 2_000)).unwrap();
        email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None)).await.unwrap();
        let (workers, wakeup) = run_sender(&db, mailer);
        wakeup.notify();

        // Nobody listens: every attempt fails, is recorded, and is tried again with backoff.
        let (_, status, _, error) = eventually("two attempts have failed", WAIT, || async {
            let row = rows(&db).await.pop()?;
            (row.2 >= 2).then_some(row)
        })
        .await;
        assert_eq!(status, "PENDING");
        assert!(error.is_some_and(|e| !e.is_empty()));

        let stop = tokio_util::sync::CancellationToken::new();
        let sim = SmtpSim::start_on(port, stop.clone()).await.unwrap();
        let mail = eventually("the e-mail arrives once the server is back", WAIT, || async {
            sim.mails().into_iter().next()
        })
        .await;
        assert_eq!(mail.to, [OPS]);
        eventually("the e-mail is marked sent", WAIT, || async {
            let row = rows(&db).await.pop()?;
            (row.1 == "SENT" && row.3.is_none()).then_some(())
        })
        .await;
        assert!(workers.shutdown(Duration::from_secs(10)).await);
        assert_eq!(sim.mails().len(), 1, "sent once");
    }
}

#[tokio::test]
async fn an_smtp_server_that_never_answers_is_given_up_on_after_the_timeout_and_tried_again() {
    let (_database, db, tenant) = database(Backend::Sqlite).await;
    let settings = mail_to(&db, tenant, &[OPS]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = SmtpSim::start(stop.clone()).await.unwrap();
    sim.set_mode(Mode::Stall);
    let mailer = Mailer::from_config(&smtp_at(&sim.url(), 300)).unwrap();
    email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None))
        .await
        .unwrap();
    let (workers, wakeup) = run_sender(&db, mailer);
    wakeup.notify();

    let (_, status, _, error) = eventually("an attempt timed out", WAIT, || async {
        let row = rows(&db).await.pop()?;
        (row.2 >= 1 && row.3.is_some()).then_some(row)
    })
    .await;
    assert_eq!(status, "PENDING");
    assert!(
        error.as_deref().is_some_and(|e| e.contains("timed out")),
        "{error:?}"
    );
    assert!(sim.mails().is_empty());

    sim.set_mode(Mode::Accept);
    eventually(
        "the e-mail arrives once the server answers",
        WAIT,
        || async {
            let row = rows(&db).await.pop()?;
            (row.1 == "SENT").then_some(())
        },
    )
    .await;
    assert!(workers.shutdown(Duration::from_secs(10)).await);
    assert_eq!(
        sim.mails().len(),
        1,
        "the timed-out attempts delivered nothing"
    );
}

each_database! {
    async fn a_recipient_the_server_refuses_for_good_is_given_up_and_the_others_still_get_theirs(backend: Backend) {
        let (_database, db, tenant) = database(backend).await;
        let settings = mail_to(&db, tenant, &[OPS, "gone@shop.example"]).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let sim = SmtpSim::start(stop.clone()).await.unwrap();
        sim.refuse_recipient("gone@shop.example");
        let mailer = Mailer::from_config(&smtp_at(&sim.url(), 5_000)).unwrap();
        email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None)).await.unwrap();
        let lease = lease_for(&mailer);
        assert_eq!(email_sender::pass(&db, &mailer, lease).await.unwrap(), 2);
        let rows = rows(&db).await;
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("gone@shop.example", "FAILED"));
        assert!(rows[0].3.as_deref().is_some_and(|e| e.contains("550")), "{rows:?}");
        assert_eq!((rows[1].0.as_str(), rows[1].1.as_str()), (OPS, "SENT"));
        assert_eq!(email_sender::pass(&db, &mailer, lease).await.unwrap(), 0, "a refusal is not retried");
        assert_eq!(sim.mails().len(), 1);
    }
}

each_database! {
    /// A recipient the server asks to try later (a full mailbox) is tried again later, alone:
    /// the recipients after it get theirs now.
    async fn a_recipient_the_server_defers_holds_back_no_other(backend: Backend) {
        let (_database, db, tenant) = database(backend).await;
        let settings = mail_to(&db, tenant, &["full@shop.example", OPS]).await;
        let stop = tokio_util::sync::CancellationToken::new();
        let sim = SmtpSim::start(stop.clone()).await.unwrap();
        sim.fill_mailbox("full@shop.example");
        let mailer = Mailer::from_config(&smtp_at(&sim.url(), 5_000)).unwrap();
        email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None)).await.unwrap();
        let lease = lease_for(&mailer);
        assert_eq!(email_sender::pass(&db, &mailer, lease).await.unwrap(), 2);
        let rows = rows(&db).await;
        assert_eq!((rows[0].0.as_str(), rows[0].1.as_str()), ("full@shop.example", "PENDING"));
        assert!(rows[0].3.as_deref().is_some_and(|e| e.contains("452")), "{rows:?}");
        assert_eq!((rows[1].0.as_str(), rows[1].1.as_str()), (OPS, "SENT"), "{rows:?}");
        assert_eq!(sim.mails().len(), 1);
    }
}

/// A server that takes no e-mail now (421) is tried once per pass: the other e-mails of the pass
/// wait as long, untried.
#[tokio::test]
async fn a_server_that_takes_no_email_now_holds_the_pass_back() {
    let (_database, db, tenant) = database(Backend::Sqlite).await;
    let settings = mail_to(&db, tenant, &[LEAD, OPS]).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let sim = SmtpSim::start(stop.clone()).await.unwrap();
    sim.set_mode(Mode::Refuse);
    let mailer = Mailer::from_config(&smtp_at(&sim.url(), 5_000)).unwrap();
    email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None))
        .await
        .unwrap();
    assert_eq!(
        email_sender::pass(&db, &mailer, lease_for(&mailer))
            .await
            .unwrap(),
        2
    );
    let rows = rows(&db).await;
    let tried: Vec<_> = rows.iter().filter(|r| r.2 == 1).collect();
    let waited: Vec<_> = rows.iter().filter(|r| r.2 == 0).collect();
    assert_eq!((tried.len(), waited.len()), (1, 1), "{rows:?}");
    assert!(
        tried[0].3.as_deref().is_some_and(|e| e.contains("421")),
        "{rows:?}"
    );
    assert!(rows.iter().all(|r| r.1 == "PENDING"), "{rows:?}");
    assert_eq!(sim.connections(), 1, "{rows:?}");
}

#[tokio::test]
async fn without_an_smtp_server_the_email_is_logged_instead_and_marked_so() {
    let (_database, db, tenant) = database(Backend::Sqlite).await;
    let settings = mail_to(&db, tenant, &[OPS]).await;
    let mailer = Mailer::from_config(&SmtpConfig::default()).unwrap();
    assert!(mailer.is_log_only());
    email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None))
        .await
        .unwrap();
    assert_eq!(
        email_sender::pass(&db, &mailer, lease_for(&mailer))
            .await
            .unwrap(),
        1
    );
    assert_eq!(rows(&db).await[0].1, "LOGGED");
}

each_database! {
    async fn nothing_is_recorded_for_a_kind_that_is_off_or_without_recipients(backend: Backend) {
        let (_database, db, tenant) = database(backend).await;
        let defaults = settings::load(&mut Conn::Pool(&db), tenant).await.unwrap();
        assert_eq!(defaults, NotificationSettings::defaults());
        let recorded = email::record(&mut Conn::Pool(&db), &defaults, &notice(tenant, None)).await.unwrap();
        assert_eq!(recorded, 0, "no recipients yet");
        let mut off = NotificationSettings::defaults();
        off.recipients = vec![OPS.to_owned()];
        off.print_job_failed = false;
        let off = settings::save(&db, tenant, &off).await.unwrap();
        assert_eq!(email::record(&mut Conn::Pool(&db), &off, &notice(tenant, None)).await.unwrap(), 0);
        let mut other = notice(tenant, None);
        other.kind = Kind::OrderFailed;
        assert_eq!(email::record(&mut Conn::Pool(&db), &off, &other).await.unwrap(), 1);
    }
}

each_database! {
    async fn finished_emails_are_forgotten_after_their_time_and_waiting_ones_never(backend: Backend) {
        let (_database, db, tenant) = database(backend).await;
        let settings = mail_to(&db, tenant, &[OPS, LEAD]).await;
        email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None)).await.unwrap();
        on_pool!(&db, pool => {
            sqlx::query("UPDATE notification_emails SET status = 'SENT' WHERE recipient = $1")
                .bind(OPS)
                .execute(pool)
                .await
                .map(drop)
                .unwrap()
        });
        assert_eq!(forget_old(&db, Utc::now() - TimeDelta::days(1)).await.unwrap(), 0, "too young");
        assert_eq!(forget_old(&db, Utc::now() + TimeDelta::days(1)).await.unwrap(), 1);
        let left: Vec<String> = rows(&db).await.into_iter().map(|r| r.1).collect();
        assert_eq!(left, ["PENDING"]);
    }
}

#[tokio::test]
async fn an_email_that_could_not_be_sent_for_days_is_given_up() {
    let (_database, db, tenant) = database(Backend::Sqlite).await;
    let settings = mail_to(&db, tenant, &[OPS]).await;
    email::record(&mut Conn::Pool(&db), &settings, &notice(tenant, None))
        .await
        .unwrap();
    let days_ago = Utc::now() - email_sender::GIVE_UP_AFTER - TimeDelta::hours(1);
    on_pool!(&db, pool => {
        sqlx::query("UPDATE notification_emails SET created_at = $1")
            .bind(days_ago)
            .execute(pool)
            .await
            .map(drop)
            .unwrap()
    });
    let dead = format!("smtp://127.0.0.1:{}", free_port());
    let mailer = Mailer::from_config(&smtp_at(&dead, 2_000)).unwrap();
    assert_eq!(
        email_sender::pass(&db, &mailer, lease_for(&mailer))
            .await
            .unwrap(),
        1
    );
    let (_, status, attempts, error) = rows(&db).await.remove(0);
    assert_eq!((status.as_str(), attempts), ("FAILED", 1));
    assert!(error.is_some());
}

#[test]
fn a_bad_smtp_setting_stops_start_up_with_one_line_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("forma.toml");
    let load = |smtp: &str| {
        std::fs::write(&file, format!("[smtp]\n{smtp}\n")).unwrap();
        crate::config::Config::load_for(Some(&file), crate::config::Role::All).map(drop)
    };
    let error = load("url = \"http://mail.example.com\"\nfrom = \"ops@shop.example\"")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("smtp.url must be an smtp:// or smtps:// URL"),
        "{error}"
    );
    let error = load("url = \"smtp://mail.example.com\"")
        .unwrap_err()
        .to_string();
    assert!(error.contains("smtp.from is required"), "{error}");
    let error =
        load("url = \"smtp://mail.example.com\"\nfrom = \"ops@shop.example\"\ntimeout_ms = 0")
            .unwrap_err()
            .to_string();
    assert!(
        error.contains("smtp.timeout_ms must be at least 1"),
        "{error}"
    );
    load("url = \"smtps://u:p@mail.example.com\"\nfrom = \"forma <ops@shop.example>\"").unwrap();
}

#[test]
fn the_from_address_is_required_with_an_smtp_url_and_must_be_one() {
    let mut smtp = smtp_at("smtp://127.0.0.1:2525", 1_000);
    smtp.from = None;
    let error = Mailer::from_config(&smtp).unwrap_err();
    assert!(error.contains("smtp.from is required"), "{error}");
    smtp.from = Some("not an address".to_owned());
    let error = Mailer::from_config(&smtp).unwrap_err();
    assert!(error.contains("smtp.from"), "{error}");
    smtp.from = Some("Forma Ops <ops@shop.example>".to_owned());
    assert!(Mailer::from_config(&smtp).is_ok());
    // TLS from the start, and STARTTLS, verified against the platform's roots.
    for url in [
        "smtps://user:pw@mail.example.com",
        "smtp://user:pw@mail.example.com:587?tls=required",
    ] {
        smtp.url = Some(SecretUrl::new(url));
        assert!(Mailer::from_config(&smtp).is_ok(), "{url}");
    }
}
