//! Analytics benchmark (SPEC §6.5, §10): the queries behind `GET /api/v1/analytics/overview` and
//! `GET /api/v1/analytics/orders-timeseries` on a tenant with 100 000 orders over a year (with
//! their lines, print jobs and event log, and a second tenant beside it), on SQLite and on
//! PostgreSQL. Each figure is the median of several runs, also given as a ratio to the reference
//! measured in the same run on the same database: a plain `SELECT count(*) FROM orders`, a full
//! scan. The query plans are printed after the timings.
//!
//!   cargo bench --bench analytics
//!   N=20000 RUNS=5 BACKENDS=sqlite cargo bench --bench analytics
//!
//! Settings (environment): N (100000 orders of the measured tenant; the other tenant gets a tenth
//! of that), RUNS (7 timed runs after one warm-up), BACKENDS (sqlite,postgres), POSTGRES_URL (else
//! FORMA_TEST_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres: a database of this
//! run's own is created there and dropped), TIMEOUT (600 s per backend). The SQLite file lives in
//! a temporary directory.
//!
//! Prints one line per query and period:
//!   RESULT backend=sqlite query=overview period=30d median_ms=… reference_ms=… ratio=… ratio_to_full_scan=…
//!
//! (the second reference: every order of the table grouped by status and currency, no index).

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use forma::clients::print::InProcessPrintClient;
use forma::identity::tenants;
use forma::infra::db::{Backend, Db, Tx};
use forma::order::analytics::{Interval, Period, repository};
use forma::print::PrintCore;
use forma::{on_pool, on_tx};
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        _ => default,
    }
}

struct Settings {
    n: usize,
    runs: usize,
    timeout: Duration,
    postgres: String,
}

/// A database of this run's own.
struct Database {
    url: String,
    drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    async fn create(backend: Backend, settings: &Settings) -> Self {
        if backend == Backend::Sqlite {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let url = format!("sqlite://{}", dir.path().join("forma.db").display());
            return Self {
                url,
                drop: None,
                _dir: Some(dir),
            };
        }
        use sqlx::Connection;
        let name = format!("forma_bench_{}", Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(&settings.postgres)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", settings.postgres));
        sqlx::Executor::execute(
            &mut conn,
            sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")),
        )
        .await
        .expect("CREATE DATABASE");
        let mut url = url::Url::parse(&settings.postgres).expect("a PostgreSQL URL");
        url.set_path(&name);
        Self {
            url: url.to_string(),
            drop: Some((settings.postgres.clone(), name)),
            _dir: None,
        }
    }

    async fn drop_now(self) {
        use sqlx::Connection;
        if let Some((admin, name)) = &self.drop
            && let Ok(mut conn) = sqlx::PgConnection::connect(admin).await
        {
            let sql = sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
            let _ = sqlx::Executor::execute(&mut conn, sql).await;
        }
    }
}

/// A column value of a generated row.
enum Value {
    Id(Uuid),
    Text(String),
    Int(i64),
    At(DateTime<Utc>),
}

/// Rows for one table, written a few thousand per statement.
struct Table {
    name: &'static str,
    columns: &'static [&'static str],
    rows: Vec<Vec<Value>>,
}

impl Table {
    fn new(name: &'static str, columns: &'static [&'static str]) -> Self {
        Self {
            name,
            columns,
            rows: Vec::new(),
        }
    }

    async fn write(&mut self, tx: &mut Tx) {
        // A few thousand parameters per statement: far below SQLite's limit of 32 766, and binding
        // costs grow faster than linearly with their number.
        let per_statement = 2_000 / self.columns.len();
        for chunk in self.rows.chunks(per_statement) {
            let width = self.columns.len();
            let values = (0..chunk.len())
                .map(|r| {
                    let cells = (1..=width)
                        .map(|c| format!("${}", r * width + c))
                        .collect::<Vec<_>>();
                    format!("({})", cells.join(", "))
                })
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!(
                "INSERT INTO {} ({}) VALUES {values}",
                self.name,
                self.columns.join(", ")
            );
            on_tx!(tx, conn => {
                let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                for value in chunk.iter().flatten() {
                    query = match value {
                        Value::Id(v) => query.bind(*v),
                        Value::Text(v) => query.bind(v.as_str()),
                        Value::Int(v) => query.bind(*v),
                        Value::At(v) => query.bind(*v),
                    };
                }
                query.execute(&mut *conn).await.map(drop)
            })
            .unwrap_or_else(|e| panic!("writing {}: {e}", self.name));
        }
        self.rows.clear();
    }
}

/// splitmix64: the same data set on every run and both databases.
struct Random(u64);

impl Random {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % below
    }
}

/// How far an order got, by share of orders (per cent), with its lines' and jobs' statuses.
const OUTCOMES: &[(u64, &str, &str, &str)] = &[
    (60, "FULFILLED", "COMPLETED", "COMPLETED"),
    (8, "SHIPPED", "COMPLETED", "COMPLETED"),
    (5, "READY_FOR_FULFILLMENT", "COMPLETED", "COMPLETED"),
    (10, "PROCESSING", "PRINTING", "PRINTING"),
    (8, "PENDING", "PENDING", "QUEUED"),
    (3, "PARTIALLY_COMPLETED", "FAILED", "FAILED"),
    (3, "FAILED", "FAILED", "FAILED"),
    (3, "CANCELLED", "CANCELLED", "CANCELLED"),
];
/// The order statuses a fulfilled order went through, in order.
const PATH: &[&str] = &[
    "PENDING",
    "PROCESSING",
    "READY_FOR_FULFILLMENT",
    "SHIPPED",
    "FULFILLED",
];

/// Writes `n` orders of `tenant_id`, spread over the year before `now`, with 1–3 lines each,
/// one print job per line, and the event log of what happened to them.
async fn seed(db: &Db, tenant_id: Uuid, n: usize, now: DateTime<Utc>, random: &mut Random) {
    let mut orders = Table::new(
        "orders",
        &[
            "id",
            "tenant_id",
            "shopify_order_id",
            "order_number",
            "status",
            "total_price",
            "currency",
            "created_at",
            "updated_at",
        ],
    );
    let mut lines = Table::new(
        "line_items",
        &[
            "id",
            "tenant_id",
            "order_id",
            "position",
            "shopify_line_item_id",
            "sku",
            "product_name",
            "quantity",
            "unit_price",
            "status",
            "created_at",
            "updated_at",
        ],
    );
    let mut jobs = Table::new(
        "print_jobs",
        &[
            "id",
            "tenant_id",
            "order_id",
            "line_item_id",
            "file_id",
            "file_name",
            "status",
            "created_at",
            "updated_at",
        ],
    );
    let mut log = Table::new(
        "event_log",
        &[
            "id",
            "tenant_id",
            "order_id",
            "event_type",
            "severity",
            "message",
            "details",
            "created_at",
        ],
    );
    let year = TimeDelta::days(365);
    for i in 0..n {
        let id = Uuid::new_v4();
        let created = now - year * i as i32 / n as i32 - TimeDelta::seconds(random.next(60) as i64);
        let mut roll = random.next(100);
        let &(_, status, line_status, job_status) = OUTCOMES
            .iter()
            .find(|(share, ..)| {
                let hit = roll < *share;
                roll = roll.saturating_sub(*share);
                hit
            })
            .unwrap_or(&OUTCOMES[0]);
        let currency = match random.next(20) {
            0..16 => "EUR",
            16..19 => "USD",
            _ => "GBP",
        };
        let total = format!("{}.{:02}", 5 + random.next(200), random.next(100));
        orders.rows.push(vec![
            Value::Id(id),
            Value::Id(tenant_id),
            Value::Text(format!("{tenant_id}-{i}")),
            Value::Text(format!("#{i}")),
            Value::Text(status.into()),
            Value::Text(total),
            Value::Text(currency.into()),
            Value::At(created),
            Value::At(created),
        ]);
        for position in 0..1 + random.next(3) as i64 {
            let line_id = Uuid::new_v4();
            // A few SKUs sell far more than the rest.
            let rank = random.next(50);
            let sku = format!("SKU-{:03}", rank * rank / 50);
            lines.rows.push(vec![
                Value::Id(line_id),
                Value::Id(tenant_id),
                Value::Id(id),
                Value::Int(position),
                Value::Text(position.to_string()),
                Value::Text(sku.clone()),
                Value::Text(sku),
                Value::Int(1 + random.next(4) as i64),
                Value::Text("9.95".into()),
                Value::Text(line_status.into()),
                Value::At(created),
                Value::At(created),
            ]);
            let job_created = created + TimeDelta::minutes(1);
            jobs.rows.push(vec![
                Value::Id(Uuid::new_v4()),
                Value::Id(tenant_id),
                Value::Id(id),
                Value::Id(line_id),
                Value::Text("file".into()),
                Value::Text("file.gcode".into()),
                Value::Text(job_status.into()),
                Value::At(job_created),
                Value::At(job_created),
            ]);
            for (from, to) in [("QUEUED", "PRINTING"), ("PRINTING", job_status)] {
                if job_status == "QUEUED" || from == to {
                    continue;
                }
                log.rows.push(vec![
                    Value::Id(Uuid::new_v4()),
                    Value::Id(tenant_id),
                    Value::Id(id),
                    Value::Text("print_job.status_changed".into()),
                    Value::Text("info".into()),
                    Value::Text(format!("Print job {from} → {to}")),
                    Value::Text(format!(
                        r#"{{"previousStatus":"{from}","newStatus":"{to}"}}"#
                    )),
                    Value::At(job_created + TimeDelta::minutes(30)),
                ]);
            }
        }
        let mut at = created;
        let reached = PATH.iter().position(|s| *s == status).unwrap_or(0);
        for step in PATH.windows(2).take(reached) {
            at += TimeDelta::minutes(10 + random.next(48 * 60) as i64);
            log.rows.push(vec![
                Value::Id(Uuid::new_v4()),
                Value::Id(tenant_id),
                Value::Id(id),
                Value::Text("order.status_changed".into()),
                Value::Text("info".into()),
                Value::Text(format!("Order {} → {}", step[0], step[1])),
                Value::Text(format!(
                    r#"{{"previousStatus":"{}","newStatus":"{}"}}"#,
                    step[0], step[1]
                )),
                Value::At(at),
            ]);
        }
        if orders.rows.len() >= 2000 || i + 1 == n {
            let mut tx = db.begin().await.expect("a transaction");
            for table in [&mut orders, &mut lines, &mut jobs, &mut log] {
                table.write(&mut tx).await;
            }
            tx.commit().await.expect("the commit");
        }
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The median milliseconds of `runs` runs of `work`, after one warm-up run.
async fn time<F, Fut>(runs: usize, mut work: F) -> f64
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    work().await;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let started = Instant::now();
        work().await;
        samples.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    median(samples)
}

/// One analytics statement with the parameters it takes, its rows fetched and dropped.
async fn run_statement(db: &Db, sql: &str, tenant_id: Uuid, period: Period) {
    on_pool!(db, pool => {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .bind(tenant_id)
            .bind(period.from)
            .bind(period.to);
        if sql.contains("$4") {
            query = query.bind(forma::order::analytics::TOP_SKUS);
        }
        query.fetch_all(pool).await.map(drop)
    })
    .expect("the statement runs");
}

/// Every statement behind the overview and the series: the order side's, and the print
/// service's count of jobs by status.
fn statements(backend: Backend) -> Vec<(&'static str, String)> {
    let print_jobs = (
        "print jobs by status",
        forma::print::jobs::repository::COUNTS_BY_STATUS.to_owned(),
    );
    let mut statements = repository::statements(backend);
    statements.push(print_jobs);
    statements
}

async fn print_plans(db: &Db, tenant_id: Uuid, period: Period, label: &str) {
    for (name, sql) in statements(db.backend()) {
        println!(
            "PLAN backend={} period={label} query={name}",
            db.backend().as_str()
        );
        let lines: Vec<String> = match db {
            Db::Sqlite(pool) => {
                let explain = format!("EXPLAIN QUERY PLAN {sql}");
                let mut query =
                    sqlx::query_as::<_, (i64, i64, i64, String)>(sqlx::AssertSqlSafe(explain))
                        .bind(tenant_id)
                        .bind(period.from)
                        .bind(period.to);
                if sql.contains("$4") {
                    query = query.bind(forma::order::analytics::TOP_SKUS);
                }
                let rows = query.fetch_all(pool).await.expect("a query plan");
                // Indent each step under its parent.
                let mut depth = std::collections::HashMap::new();
                rows.into_iter()
                    .map(|(id, parent, _, detail)| {
                        let d = depth.get(&parent).map_or(0, |d| d + 1);
                        depth.insert(id, d);
                        format!("{}{detail}", "  ".repeat(d))
                    })
                    .collect()
            }
            Db::Postgres(pool) => {
                let explain = format!("EXPLAIN (ANALYZE, COSTS OFF) {sql}");
                let mut query = sqlx::query_scalar::<_, String>(sqlx::AssertSqlSafe(explain))
                    .bind(tenant_id)
                    .bind(period.from)
                    .bind(period.to);
                if sql.contains("$4") {
                    query = query.bind(forma::order::analytics::TOP_SKUS);
                }
                query.fetch_all(pool).await.expect("a query plan")
            }
        };
        for line in lines {
            println!("    {line}");
        }
    }
}

async fn run_backend(backend: Backend, settings: &Settings) {
    let database = Database::create(backend, settings).await;
    let db = Db::connect(&database.url, 4).await.expect("the database");
    db.migrate().await.expect("the migrations");
    let ours = tenants::ensure(&db, "bench", "Bench")
        .await
        .expect("a tenant");
    let theirs = tenants::ensure(&db, "other", "Other")
        .await
        .expect("a tenant");
    let now = Utc::now();
    let mut random = Random(7);
    let started = Instant::now();
    seed(&db, ours.id, settings.n, now, &mut random).await;
    seed(&db, theirs.id, settings.n / 10, now, &mut random).await;
    if backend == Backend::Postgres {
        // What autovacuum would have done by now: statistics and the visibility map.
        on_pool!(&db, pool => sqlx::query("VACUUM ANALYZE").execute(pool).await.map(drop))
            .expect("VACUUM ANALYZE");
    }
    let count = |sql: &'static str| {
        let db = db.clone();
        async move {
            on_pool!(&db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await)
                .expect("a count")
        }
    };
    println!(
        "SEEDED backend={} orders={} line_items={} print_jobs={} event_log={} seconds={:.1}",
        backend.as_str(),
        count("SELECT count(*) FROM orders").await,
        count("SELECT count(*) FROM line_items").await,
        count("SELECT count(*) FROM print_jobs").await,
        count("SELECT count(*) FROM event_log").await,
        started.elapsed().as_secs_f64()
    );

    let reference = time(settings.runs, || async {
        count("SELECT count(*) FROM orders").await;
    })
    .await;
    // A second reference: what the orders query does with no index to help, a full scan of the
    // table grouping every row.
    let scan = time(settings.runs, || async {
        on_pool!(&db, pool => sqlx::query(
            "SELECT status, currency, COUNT(*), SUM(length(total_price)) FROM orders \
             GROUP BY status, currency",
        )
        .fetch_all(pool)
        .await
        .map(drop))
        .expect("the full scan");
    })
    .await;
    println!(
        "REFERENCE backend={} count_ms={reference:.2} full_scan_group_by_ms={scan:.2}",
        backend.as_str()
    );
    // The print service in this process, as in role `all`: the overview asks it for its jobs.
    let print = InProcessPrintClient::new(PrintCore::detached(db.clone()));
    let periods = [("30d", TimeDelta::days(30)), ("365d", TimeDelta::days(366))];
    for (label, span) in periods {
        let period = Period {
            from: now - span,
            to: now,
        };
        let overview = repository::overview(&db, &print, ours.id, period)
            .await
            .expect("the overview");
        println!(
            "CHECK backend={} period={label} orders={} fulfilled={} average_hours={:?} jobs={} success_rate={:?} top_sku={:?} revenue={:?}",
            backend.as_str(),
            overview.orders.total,
            overview.fulfillment.fulfilled_orders,
            overview.fulfillment.average_hours,
            overview.print_jobs.total,
            overview.print_jobs.success_rate,
            overview.top_skus.first().map(|s| (&s.sku, s.quantity)),
            overview
                .revenue
                .iter()
                .map(|r| format!("{} {}", r.amount, r.currency))
                .collect::<Vec<_>>(),
        );
        let mut results = vec![(
            "overview",
            time(settings.runs, || async {
                repository::overview(&db, &print, ours.id, period)
                    .await
                    .expect("the overview");
            })
            .await,
        )];
        for (name, interval) in [
            ("timeseries-day", Interval::Day),
            ("timeseries-week", Interval::Week),
        ] {
            let ms = time(settings.runs, || async {
                repository::timeseries(&db, ours.id, period, interval)
                    .await
                    .expect("the time series");
            })
            .await;
            results.push((name, ms));
        }
        // Each query of the overview and the series alone, to see where the time goes.
        for (name, sql) in statements(backend) {
            let ms = time(settings.runs, || async {
                run_statement(&db, &sql, ours.id, period).await;
            })
            .await;
            results.push((name, ms));
        }
        for (name, ms) in results {
            let name = name.replace(' ', "-");
            println!(
                "RESULT backend={} query={name} period={label} median_ms={ms:.2} reference_ms={reference:.2} ratio={:.2} ratio_to_full_scan={:.2}",
                backend.as_str(),
                ms / reference,
                ms / scan
            );
        }
    }
    print_plans(
        &db,
        ours.id,
        Period {
            from: now - TimeDelta::days(30),
            to: now,
        },
        "30d",
    )
    .await;
    print_plans(
        &db,
        ours.id,
        Period {
            from: now - TimeDelta::days(366),
            to: now,
        },
        "365d",
    )
    .await;
    db.close().await;
    database.drop_now().await;
}

fn main() {
    // `cargo bench` passes `--bench`; test runners listing every target must not start a
    // minutes-long benchmark (see benches/ingest.rs).
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime")
        .block_on(run());
}

async fn run() {
    let settings = Settings {
        n: env_or("N", 100_000),
        runs: env_or("RUNS", 7).max(1),
        timeout: Duration::from_secs(env_or("TIMEOUT", 600)),
        postgres: env_or(
            "POSTGRES_URL",
            env_or(
                "FORMA_TEST_POSTGRES_URL",
                "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
            ),
        ),
    };
    println!(
        "SETTINGS n={} runs={} timeout_s={}",
        settings.n,
        settings.runs,
        settings.timeout.as_secs()
    );
    let backends: String = env_or("BACKENDS", "sqlite,postgres".to_owned());
    for name in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        let backend = match name {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => panic!("unknown backend {other}"),
        };
        if tokio::time::timeout(settings.timeout, run_backend(backend, &settings))
            .await
            .is_err()
        {
            println!(
                "TIMEOUT backend={name} after {} s",
                settings.timeout.as_secs()
            );
        }
    }
}
