//! SPEC §10 ingestion benchmark: signed Shopify `orders/create` webhooks per second, sustained,
//! through `forma serve --role all`, each producing its order, its lines, its print jobs and its
//! events, nothing lost; beside the floor: the same rows written by a plain SQL loop (one
//! transaction per order) on the same kind of database, in the same run.
//!
//! Run by `benches/ingest.sh`, or alone:
//!
//!   cargo bench --bench ingest
//!   N=5000 CONCURRENCY=32 BACKENDS=sqlite cargo bench --bench ingest
//!
//! Settings (environment): N (4000 orders), CONCURRENCY (16 webhooks in flight), BACKENDS
//! (sqlite,postgres), POSTGRES_URL (postgres://postgres@127.0.0.1:5432/postgres, where a database
//! of this run's own is created and dropped), REDIS_URL (redis://127.0.0.1:6379; the PostgreSQL run
//! uses it for its bus, under a key prefix of its own), TIMEOUT (300 s per run). Everything talks
//! to 127.0.0.1, and the SQLite files live in a temporary directory.
//!
//! Prints one line per run:
//!   RESULT backend=sqlite side=forma orders=… seconds=… orders_per_s=… jobs=… events=…
//!   RESULT backend=sqlite side=floor orders=… seconds=… orders_per_s=…

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use forma::infra::db::{Db, Tx};
use forma::simulators::shopify::{self, Delivery, Line};
use forma::{identity, on_pool, on_tx};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use uuid::Uuid;

const SHOP: &str = "bench.myshopify.com";
const SECRET: &str = "bench-shopify-secret";
const PASSWORD: &str = "bench-admin-password";
/// Jobs per order: a cube (one print) and a plate of two files (one print each).
const JOBS_PER_ORDER: i64 = 3;

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
    concurrency: usize,
    timeout: Duration,
    postgres: String,
    redis: String,
}

/// A database of this run's own.
struct Database {
    url: String,
    drop: Option<(String, String)>,
    _dir: Option<tempfile::TempDir>,
}

impl Database {
    async fn create(backend: &str, settings: &Settings) -> Self {
        if backend == "sqlite" {
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
        if let Some((admin, name)) = &self.drop {
            if let Ok(mut conn) = sqlx::PgConnection::connect(admin).await {
                let sql =
                    sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                let _ = sqlx::Executor::execute(&mut conn, sql).await;
            }
        }
    }
}

fn lines() -> [Line; 2] {
    [
        Line {
            id: 1,
            sku: "CUBE".into(),
            name: "Cube".into(),
            quantity: 1,
            price: "4.50".into(),
        },
        Line {
            id: 2,
            sku: "PLATE".into(),
            name: "Plate".into(),
            quantity: 1,
            price: "12.00".into(),
        },
    ]
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_pool!(db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).unwrap_or(-1)
}

/// Starts `forma serve --role all` on `database` and returns it with its address.
async fn start_forma(database: &Database, settings: &Settings, backend: &str) -> (Child, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_forma"));
    command
        .args(["serve", "--role", "all", "--port", "0"])
        .env("DATABASE_URL", &database.url)
        .env("FORMA_ADMIN_PASSWORD", PASSWORD)
        .env("FORMA_SHOPIFY__WEBHOOK_SECRET", SECRET)
        .env("FORMA_SHOPIFY__SHOP_DOMAIN", SHOP)
        .env("FORMA_RATE_LIMIT__WEBHOOKS", "0")
        .env("FORMA_LOG__FORMAT", "json")
        .env("FORMA_LOG__LEVEL", "warn,forma::server=info")
        .env_remove("REDIS_URL")
        .kill_on_drop(true)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if backend == "postgres" {
        command.env("REDIS_URL", &settings.redis).env(
            "FORMA_REDIS__KEY_PREFIX",
            format!("forma-bench-{}:", Uuid::new_v4().simple()),
        );
    }
    let mut child = command.spawn().expect("forma starts");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let _ = tx.send(line);
        }
    });
    let addr = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = rx.recv().await {
            let value: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if value["message"] == "listening" {
                return value["addr"].as_str().map(str::to_owned);
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .expect("forma reports where it listens");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while rx.recv().await.is_some() {} });
    (child, format!("http://{addr}"))
}

async fn forma_side(backend: &str, settings: &Settings) -> (f64, i64, i64, i64) {
    let database = Database::create(backend, settings).await;
    let (mut child, base) = start_forma(&database, settings, backend).await;
    let http = forma::infra::tls::http_client()
        .cookie_store(true)
        .build()
        .expect("a client");
    let login = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(login.status(), 200, "login");
    for (sku, files) in [
        (
            "CUBE",
            json!([{"fileId": "cube", "fileName": "cube.gcode"}]),
        ),
        (
            "PLATE",
            json!([{"fileId": "plate", "fileName": "plate.gcode"}, {"fileId": "feet", "fileName": "feet.gcode"}]),
        ),
    ] {
        let created = http
            .post(format!("{base}/api/v1/product-mappings"))
            .json(&json!({"sku": sku, "productName": sku, "printFiles": files}))
            .send()
            .await
            .expect("a mapping");
        assert_eq!(created.status(), 201);
    }
    let deliveries: Vec<Delivery> = (0..settings.n)
        .map(|i| {
            let document =
                shopify::order_document(9_000_000 + i as u64, 100_000 + i as u64, &lines());
            Delivery::new("orders/create", SHOP, &document)
        })
        .collect();
    let deliveries = Arc::new(deliveries);
    let next = Arc::new(AtomicUsize::new(0));
    let url = format!("{base}/api/v1/webhooks/shopify");
    let db = Db::connect(&database.url, 2).await.expect("the database");

    let started = Instant::now();
    let senders: Vec<_> = (0..settings.concurrency)
        .map(|_| {
            let (deliveries, next, url) = (deliveries.clone(), next.clone(), url.clone());
            let http = forma::infra::tls::http_client().build().expect("a client");
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(delivery) = deliveries.get(i) else {
                        break;
                    };
                    // Shopify retries what got no 200; so does this sender.
                    loop {
                        match delivery.send(&http, &url, SECRET.as_bytes()).await {
                            Ok(response) if response.status() == 200 => break,
                            Ok(response) => eprintln!("a webhook answered {}", response.status()),
                            Err(e) => eprintln!("a webhook failed: {e}"),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.expect("a sender");
    }
    let acknowledged = started.elapsed();
    let expected_jobs = settings.n as i64 * JOBS_PER_ORDER;
    while count(&db, "SELECT COUNT(*) FROM print_jobs").await < expected_jobs {
        assert!(
            started.elapsed() < settings.timeout,
            "the print jobs were not all planned in time"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    eprintln!(
        "· {backend}: {} webhooks acknowledged in {:.2} s, every job planned after {seconds:.2} s",
        settings.n,
        acknowledged.as_secs_f64()
    );
    let orders = count(&db, "SELECT COUNT(*) FROM orders").await;
    let jobs = count(&db, "SELECT COUNT(*) FROM print_jobs").await;
    let events = count(
        &db,
        "SELECT COUNT(*) FROM outbox WHERE event_type = 'order.created'",
    )
    .await;
    let _ = child.kill().await;
    db.close().await;
    database.drop_now().await;
    (seconds, orders, jobs, events)
}

/// The floor: the rows one order makes, written by a plain loop, one transaction per order.
async fn floor_side(backend: &str, settings: &Settings) -> f64 {
    let database = Database::create(backend, settings).await;
    let db = Db::connect(&database.url, 2).await.expect("the database");
    db.migrate().await.expect("migrations");
    let tenant = identity::tenants::ensure(&db, "default", "Default")
        .await
        .expect("a tenant")
        .id;
    let started = Instant::now();
    for i in 0..settings.n {
        let mut tx = db.begin().await.expect("a transaction");
        write_order(&mut tx, tenant, i).await.expect("the rows");
        tx.commit().await.expect("a commit");
    }
    let seconds = started.elapsed().as_secs_f64();
    db.close().await;
    database.drop_now().await;
    seconds
}

async fn write_order(tx: &mut Tx, tenant: Uuid, i: usize) -> Result<(), sqlx::Error> {
    let now = Utc::now();
    let order = Uuid::now_v7();
    let document = shopify::order_document(9_000_000 + i as u64, 100_000 + i as u64, &lines());
    on_tx!(tx, conn => {
        sqlx::query("INSERT INTO shopify_webhooks (id, tenant_id, webhook_id, topic, event_id, received_at) VALUES ($1, $2, $3, 'orders/create', $4, $5)")
            .bind(Uuid::now_v7()).bind(tenant).bind(Uuid::new_v4().to_string()).bind(Uuid::new_v4().to_string()).bind(now)
            .execute(&mut *conn).await?;
        sqlx::query("INSERT INTO orders (id, tenant_id, shopify_order_id, order_number, customer_name, customer_email, shipping_address, status, total_price, currency, jobs_version, created_at, updated_at) VALUES ($1, $2, $3, $4, 'Ada', 'ada@example.com', $5, 'PROCESSING', '16.50', 'EUR', 0, $6, $6)")
            .bind(order).bind(tenant).bind(document["id"].to_string()).bind(format!("#{}", 100_000 + i)).bind(document["shipping_address"].to_string()).bind(now)
            .execute(&mut *conn).await?;
        sqlx::query("INSERT INTO event_log (id, tenant_id, order_id, event_type, severity, message, details, created_at) VALUES ($1, $2, $3, 'order.created', 'info', 'Order received from Shopify', '{}', $4)")
            .bind(Uuid::now_v7()).bind(tenant).bind(order).bind(now)
            .execute(&mut *conn).await?;
        sqlx::query("INSERT INTO outbox (event_id, event_type, payload, created_at, attempts) VALUES ($1, 'order.created', $2, $3, 0)")
            .bind(Uuid::new_v4()).bind(json!({"orderId": order, "lineItems": []}).to_string()).bind(now)
            .execute(&mut *conn).await?;
        for (position, files) in [(0_i64, 1_i64), (1, 2)] {
            let line = Uuid::now_v7();
            sqlx::query("INSERT INTO line_items (id, tenant_id, order_id, position, shopify_line_item_id, sku, product_name, quantity, unit_price, status, print_files, plan_generation, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, 'SKU', 'Product', 1, '4.50', 'PENDING', '[]', 1, $6, $6)")
                .bind(line).bind(tenant).bind(order).bind(position).bind(position.to_string()).bind(now)
                .execute(&mut *conn).await?;
            for file in 0..files {
                sqlx::query("INSERT INTO print_jobs (id, tenant_id, order_id, line_item_id, generation, file_index, sequence, file_id, file_name, purpose, status, attempts, version, created_at, updated_at) VALUES ($1, $2, $3, $4, 1, $5, 1, 'f', 'f.gcode', 'ORDER', 'QUEUED', 1, 1, $6, $6)")
                    .bind(Uuid::now_v7()).bind(tenant).bind(order).bind(line).bind(file).bind(now)
                    .execute(&mut *conn).await?;
            }
        }
        Ok::<(), sqlx::Error>(())
    })
}

fn main() {
    // `cargo bench` passes `--bench`. Test runners that list or run every target (`cargo nextest
    // run --all-targets` asks with `--list`) must not start a minutes-long benchmark: without
    // `--bench`, there is nothing to run.
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
    forma::infra::tls::install_crypto_provider();
    // This benchmark takes its settings from the environment.
    let settings = Settings {
        n: env_or("N", 4000),
        concurrency: env_or("CONCURRENCY", 16),
        timeout: Duration::from_secs(env_or("TIMEOUT", 300)),
        postgres: env_or(
            "POSTGRES_URL",
            "postgres://postgres@127.0.0.1:5432/postgres".to_owned(),
        ),
        redis: env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned()),
    };
    let backends: String = env_or("BACKENDS", "sqlite,postgres".to_owned());
    for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
        assert!(
            matches!(backend, "sqlite" | "postgres"),
            "unknown backend {backend}"
        );
        let floor = floor_side(backend, &settings).await;
        let (seconds, orders, jobs, events) = forma_side(backend, &settings).await;
        let n = settings.n as f64;
        println!(
            "RESULT backend={backend} side=floor orders={} seconds={floor:.3} orders_per_s={:.0}",
            settings.n,
            n / floor
        );
        println!(
            "RESULT backend={backend} side=forma orders={orders} seconds={seconds:.3} orders_per_s={:.0} jobs={jobs} events={events} expected_jobs={}",
            n / seconds,
            settings.n as i64 * JOBS_PER_ORDER
        );
    }
}
