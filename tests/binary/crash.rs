//! Kill -9 while Shopify orders flow (SPEC §6.3, §8.1): the real binary is killed at random
//! instants while 500 `orders/create` webhooks arrive, and restarted where it was, as a process
//! supervisor would. Shopify's part is played as Shopify plays it: a delivery that got no 200 is
//! sent again, with the same delivery id. Afterwards every acknowledged webhook has exactly one
//! order, exactly one `order.created` event and exactly its print jobs, none twice. Run on SQLite
//! (the bus in the same file) and on PostgreSQL without Redis (the bus on PostgreSQL).

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use forma::simulators::shopify::{self, Delivery, Line};
use rand::Rng;
use serde_json::json;

use crate::support::{PgDatabase, Server, client};

const ORDERS: u64 = 500;
const SENDERS: usize = 8;
const SHOP: &str = "crash-test.myshopify.com";
const SECRET: &str = "crash-test-shopify-secret";
const PASSWORD: &str = "crash-test-admin-password";
/// Bounds of the whole run: delivering everything, then the planning catching up.
const DELIVER_WITHIN: Duration = Duration::from_secs(180);
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

fn quantity(n: u64) -> u32 {
    1 + (n % 3) as u32
}

/// The database the run is checked in afterwards.
enum Store {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Store {
    async fn count(&self, sql: &'static str) -> i64 {
        match self {
            Store::Sqlite(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
            Store::Postgres(pool) => sqlx::query_scalar(sql).fetch_one(pool).await.unwrap(),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_process_while_webhooks_flow_loses_and_doubles_nothing_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let db_path = dir.path().join("forma.db");
    let url = format!("sqlite://{}", db_path.display());
    let options = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db_path)
        .read_only(true);
    killed_while_webhooks_flow(dir.path(), url, || async move {
        Store::Sqlite(sqlx::SqlitePool::connect_with(options).await.unwrap())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_process_while_webhooks_flow_loses_and_doubles_nothing_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let database = PgDatabase::create().await;
    let url = database.url.clone();
    killed_while_webhooks_flow(dir.path(), url.clone(), || async move {
        Store::Postgres(sqlx::PgPool::connect(&url).await.unwrap())
    })
    .await;
    database.drop_now().await;
}

async fn killed_while_webhooks_flow<F, Fut>(dir: &std::path::Path, database_url: String, store: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Store>,
{
    let env = HashMap::from([
        ("FORMA_DATABASE__URL", database_url),
        ("FORMA_ADMIN_PASSWORD", PASSWORD.to_owned()),
        ("FORMA_SHOPIFY__WEBHOOK_SECRET", SECRET.to_owned()),
        ("FORMA_SHOPIFY__SHOP_DOMAIN", SHOP.to_owned()),
        // Shopify's deliveries come from few addresses; this run is all of them.
        ("FORMA_RATE_LIMIT__WEBHOOKS", "0".to_owned()),
    ]);
    let mut server = Server::start(dir, "all", &env).await;
    let port = server.port();
    let base = server.addr.clone();

    // One product: a cube, one print per unit.
    let _ = client(); // installs the TLS provider reqwest needs before any builder
    let admin = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = admin
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": "admin@localhost", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let mapping = admin
        .post(format!("{base}/api/v1/product-mappings"))
        .json(&json!({"sku": "CUBE", "productName": "Cube", "printFiles": [{"fileId": "f", "fileName": "cube.gcode"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(mapping.status(), 201);

    let pending: Arc<Mutex<VecDeque<(u64, Delivery)>>> = Arc::new(Mutex::new(
        (0..ORDERS)
            .map(|n| {
                let lines = [Line {
                    id: 1,
                    sku: "CUBE".into(),
                    name: "Cube".into(),
                    quantity: quantity(n),
                    price: "5.00".into(),
                }];
                let document = shopify::order_document(1_000_000 + n, 10_000 + n, &lines);
                (n, Delivery::new("orders/create", SHOP, &document))
            })
            .collect(),
    ));
    let acknowledged: Arc<Mutex<HashSet<u64>>> = Arc::default();
    let url = format!("http://127.0.0.1:{port}/api/v1/webhooks/shopify");
    let started = Instant::now();
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            let (pending, acknowledged, url) = (pending.clone(), acknowledged.clone(), url.clone());
            tokio::spawn(async move {
                let http = client();
                while started.elapsed() < DELIVER_WITHIN {
                    let next = pending.lock().unwrap().pop_front();
                    let Some((n, delivery)) = next else { break };
                    match delivery.send(&http, &url, SECRET.as_bytes()).await {
                        Ok(response) if response.status() == 200 => {
                            acknowledged.lock().unwrap().insert(n);
                        }
                        // Killed mid-request or not up yet: Shopify sends it again later.
                        _ => {
                            pending.lock().unwrap().push_back((n, delivery));
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
            })
        })
        .collect();

    let mut kills = 0;
    while acknowledged.lock().unwrap().len() < ORDERS as usize && started.elapsed() < DELIVER_WITHIN
    {
        let pause = rand::rng().random_range(150..600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        if acknowledged.lock().unwrap().len() >= ORDERS as usize {
            break;
        }
        server.signal("KILL").await;
        server.wait(Duration::from_secs(10)).await;
        kills += 1;
        server = Server::start_on(dir, "all", &env, port).await;
    }
    for sender in senders {
        sender.await.unwrap();
    }
    assert_eq!(
        acknowledged.lock().unwrap().len(),
        ORDERS as usize,
        "every delivery was acknowledged in time ({kills} kills)"
    );
    assert!(
        kills >= 3,
        "the run was killed {kills} times: too few to mean anything"
    );

    // A last restart, then the print side catches up (jobs held by a killed worker come back
    // once its heartbeat expires).
    server.signal("KILL").await;
    server.wait(Duration::from_secs(10)).await;
    let _server = Server::start_on(dir, "all", &env, port).await;
    let expected_jobs: i64 = (0..ORDERS).map(|n| i64::from(quantity(n))).sum();
    let store = store().await;
    let count = |sql: &'static str| store.count(sql);
    let deadline = Instant::now() + DRAIN_WITHIN;
    while count("SELECT COUNT(*) FROM print_jobs").await < expected_jobs {
        assert!(
            Instant::now() < deadline,
            "the print jobs were not all planned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(count("SELECT COUNT(*) FROM orders").await, ORDERS as i64);
    assert_eq!(
        count("SELECT COUNT(DISTINCT shopify_order_id) FROM orders").await,
        ORDERS as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM line_items").await,
        ORDERS as i64
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM outbox WHERE event_type = 'order.created'").await,
        ORDERS as i64,
        "one order.created per order"
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM print_jobs").await,
        expected_jobs,
        "no job twice"
    );
    let wrong = count(
        "SELECT COUNT(*) FROM line_items l WHERE l.quantity <> \
         (SELECT COUNT(*) FROM print_jobs j WHERE j.line_item_id = l.id)",
    )
    .await;
    assert_eq!(wrong, 0, "every line has exactly its jobs");
}
