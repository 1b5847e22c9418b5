//! The kill -9 test of SPEC §8.1: a child process publishing through the outbox and consuming is
//! killed at random points while 1 000 events flow; after restart every committed event is handled
//! exactly once in effect and no event of a rolled-back transaction is ever published.
//!
//! The child is this same test binary run again with only [`child`] selected (an ignored test that
//! does nothing unless [`DB_ENV`] is set), so it works under `cargo test` and nextest alike.

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::Rng;
use tokio::process::{Child, Command};
use uuid::Uuid;

use crate::config::{Config, SecretUrl};
use crate::events::bus::subscriptions::consumers::ORDER;
use crate::events::bus::{EventBus, HandlerError};
use crate::events::catalog::{Event, EventPayload, PrintJobCompleted, names};
use crate::events::idempotency::handle_once;
use crate::events::outbox::{OutboxRelay, RelaySettings, enqueue};
use crate::infra::db::{Backend, Db};
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;
use crate::testing::{TestDatabase, use_redis};
use crate::{on_pool, on_tx};

/// The SQLite URL of the shared database; the child does nothing without it.
const DB_ENV: &str = "FORMA_CRASH_TEST_DB";
/// The file the child appends the id of every transaction it rolls back to.
const ROLLED_BACK_ENV: &str = "FORMA_CRASH_TEST_ROLLED_BACK";
/// The Redis URL and key prefix, for the Redis variant.
const REDIS_URL_ENV: &str = "FORMA_CRASH_TEST_REDIS_URL";
const REDIS_PREFIX_ENV: &str = "FORMA_CRASH_TEST_REDIS_PREFIX";

/// Committed events the producers write in all.
const EVENTS: i64 = 1000;
/// Every `ROLLBACK_EVERY`th transaction of a child is rolled back.
const ROLLBACK_EVERY: u64 = 7;
/// How long the final child may take to drain everything: a job held by a killed worker comes back
/// only after the heartbeat deadline (15 s).
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound on the killing phase.
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(60);

const SCRATCH_TABLES: [&str; 2] = [
    "CREATE TABLE IF NOT EXISTS crash_source (event_id TEXT PRIMARY KEY)",
    "CREATE TABLE IF NOT EXISTS crash_effects (event_id TEXT, handled_at TEXT)",
];

fn event() -> Event {
    let n = Uuid::new_v4();
    Event::new(
        "print-service",
        "tenant-1",
        EventPayload::PrintJobCompleted(PrintJobCompleted {
            print_job_id: format!("job-{n}"),
            order_id: format!("order-{n}"),
            line_item_id: format!("line-{n}"),
        }),
    )
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_pool!(db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).expect(sql)
}

async fn strings(db: &Db, sql: &'static str) -> Vec<String> {
    on_pool!(db, pool => sqlx::query_scalar::<_, String>(sql).fetch_all(pool).await).expect(sql)
}

/// The child: consumes as "order", relays the outbox, and produces until the source table holds
/// [`EVENTS`] rows; then keeps consuming until it is killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "run only as the child of the crash test"]
async fn child() {
    let Ok(url) = std::env::var(DB_ENV) else {
        return;
    };
    let rolled_back_path = std::env::var(ROLLED_BACK_ENV).expect("the rolled-back file");
    let db = Db::connect(&url, 5).await.expect("the database");
    let bus = match std::env::var(REDIS_URL_ENV) {
        Ok(redis_url) => {
            let prefix = std::env::var(REDIS_PREFIX_ENV).expect("a Redis key prefix");
            let redis = RedisHandle::open(&SecretUrl::new(redis_url), &prefix).expect("Redis");
            EventBus::redis(&redis).await.expect("the Redis bus")
        }
        Err(_) => {
            let Db::Sqlite(pool) = &db else {
                panic!("not a SQLite database");
            };
            EventBus::sqlite(pool.clone())
                .await
                .expect("the SQLite bus")
        }
    };
    let handler_db = db.clone();
    bus.subscribe(ORDER, names::PRINT_JOB_COMPLETED, move |event: Event| {
        let db = handler_db.clone();
        async move {
            let id = event.event_id.to_string();
            handle_once(&db, &event, ORDER, |tx| {
                Box::pin(async move {
                    on_tx!(tx, conn => {
                        sqlx::query("INSERT INTO crash_effects (event_id, handled_at) VALUES ($1, $2)")
                            .bind(&id)
                            .bind(Utc::now().to_rfc3339())
                            .execute(&mut *conn)
                            .await
                            .map(|r| r.rows_affected())
                    })?;
                    Ok::<(), HandlerError>(())
                })
            })
            .await
            .map(|_| ())
        }
    })
    .expect("order subscribes to print-job.completed");
    let workers = Workers::new();
    let bus = Arc::new(bus);
    bus.start(&workers).expect("the bus starts");
    let settings = RelaySettings {
        interval: Duration::from_millis(50),
        // A killed relay's claim comes back after this.
        lease: Duration::from_secs(3),
        ..RelaySettings::default()
    };
    let relay = OutboxRelay::new(db.clone(), bus.clone(), settings);
    let notifier = relay.notifier();
    relay.spawn(&workers);

    let mut rolled_back = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&rolled_back_path)
        .expect("the rolled-back file");
    let mut transactions: u64 = 0;
    while count(&db, "SELECT COUNT(*) FROM crash_source").await < EVENTS {
        transactions += 1;
        let event = event();
        let id = event.event_id.to_string();
        let mut tx = db.begin().await.expect("begin");
        on_tx!(&mut tx, conn => {
            sqlx::query("INSERT INTO crash_source (event_id) VALUES ($1)")
                .bind(&id)
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
        })
        .expect("insert into crash_source");
        enqueue(&mut tx, &event).await.expect("enqueue");
        if transactions.is_multiple_of(ROLLBACK_EVERY) {
            // Durable before the rollback, so the parent knows it even if the kill comes next.
            // One `write` call per line: `writeln!` may split the id and its newline over two,
            // and a kill between them glued the next child's id onto this one.
            rolled_back
                .write_all(format!("{id}\n").as_bytes())
                .expect("write the rolled-back id");
            rolled_back.sync_all().expect("sync the rolled-back file");
            tx.rollback().await.expect("rollback");
        } else {
            tx.commit().await.expect("commit");
            notifier.notify();
        }
        // Spreads the 1 000 events over a few seconds, so that the kills land mid-flow.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    std::future::pending::<()>().await;
}

struct Parent {
    dir: PathBuf,
    db_url: String,
    redis: Option<(String, String)>,
    log: PathBuf,
    rolled_back: PathBuf,
}

impl Parent {
    fn spawn_child(&self) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("the child log");
        let mut command = Command::new(std::env::current_exe().expect("the test binary"));
        command
            .args([
                "--exact",
                "events::crash_tests::child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(DB_ENV, &self.db_url)
            .env(ROLLED_BACK_ENV, &self.rolled_back)
            .env_remove(REDIS_URL_ENV)
            .env_remove(REDIS_PREFIX_ENV)
            .env("RUST_LOG", "off")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the child log"))
            .stderr(log)
            .kill_on_drop(true);
        if let Some((url, prefix)) = &self.redis {
            command
                .env(REDIS_URL_ENV, url)
                .env(REDIS_PREFIX_ENV, prefix);
        }
        command.spawn().expect("the child starts")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// SIGKILL, and waits for the exit. Fails if the child had already stopped on its own.
    async fn kill(&self, child: &mut Child) {
        if let Some(status) = child.try_wait().expect("the child's status") {
            panic!(
                "the child exited on its own ({status}):\n{}",
                self.log_tail()
            );
        }
        let pid = child.id().expect("a running child");
        let status = Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .await
            .expect("kill runs");
        assert!(status.success(), "kill -KILL {pid}");
        tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .expect("the killed child exits")
            .expect("its exit status");
    }
}

fn read_rolled_back(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn run(redis: bool) {
    let started = Instant::now();
    let database = TestDatabase::create(Backend::Sqlite).await;
    let db = Db::connect(&database.url, 2).await.expect("the database");
    db.migrate().await.expect("migrations");
    for sql in SCRATCH_TABLES {
        on_pool!(&db, pool => sqlx::query(sql).execute(pool).await.map(|r| r.rows_affected()))
            .expect(sql);
    }
    let redis = redis.then(|| {
        let mut config = Config::default();
        use_redis(&mut config);
        let url = config.redis.url.as_ref().expect("a Redis URL");
        (url.expose().to_owned(), config.redis.key_prefix.clone())
    });
    let dir = tempfile::tempdir().expect("a temporary directory");
    let parent = Parent {
        dir: dir.path().to_owned(),
        db_url: database.url.clone(),
        redis,
        log: dir.path().join("child.log"),
        rolled_back: dir.path().join("rolled-back.txt"),
    };

    // Kill children at random instants until the producers have committed every event.
    let mut kills = 0;
    // A child killed before it committed anything (a slow start on a loaded machine) gives the
    // next one more time, so the phase always ends.
    let mut grace = 0;
    let mut before = -1;
    loop {
        let produced = count(&db, "SELECT COUNT(*) FROM crash_source").await;
        if produced >= EVENTS {
            break;
        }
        grace = if produced == before { grace + 500 } else { 0 };
        before = produced;
        assert!(
            started.elapsed() < PRODUCE_TIMEOUT,
            "only {produced} events committed after {kills} kills:\n{}",
            parent.log_tail()
        );
        let mut child = parent.spawn_child();
        let pause = rand::rng().random_range(200..=900) + grace;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        parent.kill(&mut child).await;
        kills += 1;
    }
    let produced_in = started.elapsed();

    // One last child drains the outbox and the queue, jobs of killed workers included.
    let mut last = parent.spawn_child();
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    loop {
        let covered = count(
            &db,
            "SELECT COUNT(DISTINCT event_id) FROM crash_effects \
             WHERE event_id IN (SELECT event_id FROM crash_source)",
        )
        .await;
        let unsent = count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await;
        if covered >= EVENTS && unsent == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after {DRAIN_TIMEOUT:?} only {covered} of {EVENTS} events handled, {unsent} unsent \
             in the outbox ({kills} kills):\n{}",
            parent.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A moment for a redelivery to show, were one to have a second effect.
    tokio::time::sleep(Duration::from_millis(500)).await;
    parent.kill(&mut last).await;

    let source: HashSet<String> = strings(&db, "SELECT event_id FROM crash_source")
        .await
        .into_iter()
        .collect();
    let effects = strings(&db, "SELECT event_id FROM crash_effects").await;
    let handled: HashSet<String> = effects.iter().cloned().collect();
    assert_eq!(source.len() as i64, EVENTS);
    let missing: Vec<_> = source.difference(&handled).collect();
    let foreign: Vec<_> = handled.difference(&source).collect();
    assert!(
        missing.is_empty(),
        "committed but never handled: {missing:?}"
    );
    assert!(
        foreign.is_empty(),
        "handled but never committed: {foreign:?}"
    );
    assert_eq!(
        effects.len(),
        handled.len(),
        "some events were handled more than once in effect"
    );
    assert_eq!(
        count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await,
        0,
        "unsent rows left in the outbox"
    );

    let rolled_back = read_rolled_back(&parent.rolled_back);
    assert!(!rolled_back.is_empty(), "no transaction was rolled back");
    for id in &rolled_back {
        assert!(!source.contains(id), "rolled-back {id} in crash_source");
        assert!(!handled.contains(id), "rolled-back {id} was handled");
        let uuid: Uuid = id.parse().expect("a UUID");
        let in_outbox = on_pool!(&db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE event_id = $1")
                .bind(uuid)
                .fetch_one(pool)
                .await
        })
        .expect("outbox lookup");
        assert_eq!(in_outbox, 0, "rolled-back {id} in the outbox");
    }

    if let Some((url, prefix)) = &parent.redis {
        clean_redis(url, prefix).await;
    }
    eprintln!(
        "crash test ({}): {kills} kills, {EVENTS} events committed in {produced_in:?}, {} rolled \
         back, all handled once; {:?} in all",
        if parent.redis.is_some() {
            "Redis"
        } else {
            "SQLite"
        },
        rolled_back.len(),
        started.elapsed()
    );
}

async fn clean_redis(url: &str, prefix: &str) {
    let redis = RedisHandle::open(&SecretUrl::new(url), prefix).expect("Redis");
    let mut conn = redis.connection().await.expect("Redis");
    let keys: Vec<String> = ::redis::cmd("KEYS")
        .arg(redis.key("*"))
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    if !keys.is_empty() {
        let _: () = ::redis::cmd("DEL")
            .arg(keys)
            .query_async(&mut conn)
            .await
            .expect("DEL");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_every_committed_event_is_handled_once_on_sqlite() {
    run(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_every_committed_event_is_handled_once_on_redis() {
    run(true).await;
}
