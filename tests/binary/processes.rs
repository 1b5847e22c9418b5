//! Roles as separate processes, as they run in production.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{INTERNAL_KEY, PgDatabase, Server, client, get_json, redis_env};

#[tokio::test]
async fn all_role_starts_on_embedded_defaults_and_creates_the_admin_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut first = Server::start(dir.path(), "all", &HashMap::new()).await;
    let (status, health) = get_json(&format!("{}/health", first.addr)).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["checks"]["database"]["status"], "ok");
    assert!(dir.path().join("data/forma.db").exists());
    let created = first
        .startup_lines
        .iter()
        .find(|l| l["email"] == "admin@localhost");
    let password = created
        .and_then(|l| l["password"].as_str())
        .expect("the password is logged");
    assert!(password.len() >= 16);
    first.signal("TERM").await;
    assert!(
        first.wait(Duration::from_secs(15)).await,
        "SIGTERM is a clean exit"
    );
    let log = first.log_to_end(Duration::from_secs(15)).await;
    assert!(log.iter().any(|l| l["message"] == "stopped"), "{log:#?}");

    let second = Server::start(dir.path(), "all", &HashMap::new()).await;
    assert!(
        !second
            .startup_lines
            .iter()
            .any(|l| l["email"] == "admin@localhost"),
        "an existing database gets no second admin"
    );
}

#[tokio::test]
async fn split_roles_on_postgresql_see_each_other_and_the_order_service_going_down() {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let common = HashMap::from([
        ("DATABASE_URL", database.url.clone()),
        ("FORMA_INTERNAL__KEY", INTERNAL_KEY.to_owned()),
        ("FORMA_ADMIN_PASSWORD", "split-admin-password".to_owned()),
    ]);
    let mut order = Server::start(dir.path(), "order", &common).await;
    let mut gateway_env = common.clone();
    gateway_env.insert("FORMA_SERVICES__ORDER_URL", order.addr.clone());
    let mut gateway = Server::start(dir.path(), "gateway", &gateway_env).await;

    let (status, health) = get_json(&format!("{}/health", gateway.addr)).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["checks"]["order"]["status"], "ok");
    assert_eq!(health["checks"]["database"]["status"], "ok");
    let (status, _) = get_json(&format!("{}/health", order.addr)).await;
    assert_eq!(status, 200);

    order.signal("KILL").await;
    order.wait(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, health) = get_json(&format!("{}/health", gateway.addr)).await;
        if status == 503 {
            assert_eq!(health["status"], "down");
            assert_eq!(health["checks"]["order"]["status"], "down");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still up after the order service died: {health}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    gateway.signal("TERM").await;
    assert!(gateway.wait(Duration::from_secs(15)).await);
    database.drop_now().await;
}

/// Two gateway replicas and one order service, as in production: PostgreSQL and Redis shared.
#[tokio::test]
async fn gateway_replicas_share_sessions_and_a_dead_order_service_opens_then_closes_the_breaker() {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = HashMap::from([
        ("DATABASE_URL", database.url.clone()),
        ("FORMA_INTERNAL__KEY", INTERNAL_KEY.to_owned()),
        ("FORMA_ADMIN_PASSWORD", "replica-admin-password".to_owned()),
    ]);
    env.extend(redis_env());
    let mut order = Server::start(dir.path(), "order", &env).await;
    let order_port = order.port();
    env.insert("FORMA_SERVICES__ORDER_URL", order.addr.clone());
    env.insert("FORMA_PROXY__BREAKER_OPEN_SECS", "2".to_owned());
    let a = Server::start(dir.path(), "gateway", &env).await;
    let b = Server::start(dir.path(), "gateway", &env).await;

    // Signed in on A, the same cookie works on B.
    let http = client();
    let login = http
        .post(format!("{}/api/v1/auth/login", a.addr))
        .json(&json!({"email": "admin@localhost", "password": "replica-admin-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let get = |base: &str, path: &str| {
        http.get(format!("{base}{path}"))
            .header("cookie", cookie.clone())
            .send()
    };
    assert_eq!(
        get(&b.addr, "/api/v1/auth/me").await.unwrap().status(),
        200,
        "session shared via Redis"
    );
    // Through the gateway to the order service over HTTP, with a signed user context.
    assert_eq!(
        get(&a.addr, "/api/v1/audit-logs").await.unwrap().status(),
        200
    );

    order.signal("KILL").await;
    order.wait(Duration::from_secs(10)).await;
    let mut saw_502 = false;
    let mut open = None;
    for _ in 0..30 {
        let response = get(&a.addr, "/api/v1/audit-logs").await.unwrap();
        match response.status().as_u16() {
            502 => saw_502 = true,
            503 => {
                open = Some(response);
                break;
            }
            other => panic!("unexpected {other} while the order service is down"),
        }
    }
    assert!(
        saw_502,
        "connection failures are 502s before the breaker opens"
    );
    let open = open.expect("the breaker opened");
    assert!(open.headers().contains_key("retry-after"));
    let (_, health) = get_json(&format!("{}/health", a.addr)).await;
    assert_eq!(health["checks"]["order"]["circuit"], "open", "{health}");

    // The order service comes back where it was; after the open period a trial closes the breaker.
    let _order = Server::start_on(dir.path(), "order", &env, order_port).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = get(&a.addr, "/api/v1/audit-logs").await.unwrap().status();
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the breaker did not close: last {status}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, health) = get_json(&format!("{}/health", a.addr)).await;
        if health["checks"]["order"]["circuit"] == "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    database.drop_now().await;
}

/// A limit of 10 per IP across two replicas means 10, not 20.
#[tokio::test]
async fn gateway_replicas_share_one_rate_limit_through_redis() {
    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = HashMap::from([
        ("DATABASE_URL", database.url.clone()),
        ("FORMA_INTERNAL__KEY", INTERNAL_KEY.to_owned()),
        ("FORMA_RATE_LIMIT__PER_IP", "10".to_owned()),
    ]);
    env.extend(redis_env());
    let a = Server::start(dir.path(), "gateway", &env).await;
    let b = Server::start(dir.path(), "gateway", &env).await;
    let http = client();
    let mut limited = 0;
    for i in 0..16 {
        let base = if i % 2 == 0 { &a.addr } else { &b.addr };
        let response = http
            .get(format!("{base}/api/v1/orders"))
            .send()
            .await
            .unwrap();
        match response.status().as_u16() {
            401 => {}
            429 => {
                limited += 1;
                assert!(response.headers().contains_key("retry-after"));
                assert_eq!(response.headers()["ratelimit-limit"], "10");
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert_eq!(limited, 6, "16 requests against one shared budget of 10");
    database.drop_now().await;
}

/// `http_requests_in_flight` as the server's `/metrics` reports it.
async fn in_flight_requests(base: &str) -> f64 {
    let text = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("http_requests_in_flight "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// SIGTERM stops new work, but a request already being received is answered before the exit.
#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits_cleanly() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let env = HashMap::from([("FORMA_ADMIN_PASSWORD", "graceful-admin-password".to_owned())]);
    let mut server = Server::start(dir.path(), "all", &env).await;

    // The body arrives in two parts; the handler is still reading it when the signal comes.
    let (rest_tx, rest_rx) = tokio::sync::oneshot::channel::<()>();
    let first = br#"{"email": "admin@localhost", "#.to_vec();
    let rest = br#""password": "graceful-admin-password"}"#.to_vec();
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(first) }).chain(
        futures::stream::once(async move {
            let _ = rest_rx.await;
            Ok(rest)
        }),
    );
    let login = client()
        .post(format!("{}/api/v1/auth/login", server.addr))
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(body))
        .send();
    let in_flight = tokio::spawn(login);
    // The sign-in is being handled once the server counts two requests in flight: it and the
    // scrape that asks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_flight_requests(&server.addr).await < 2.0 {
        assert!(
            Instant::now() < deadline,
            "the sign-in never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    server.signal("TERM").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !server.drain_log().iter().any(|l| {
        l["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("shutting down"))
    }) {
        assert!(
            Instant::now() < deadline,
            "the server never began its shutdown"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = rest_tx.send(());
    let response = in_flight
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(response.status(), 200);
    assert!(
        server.wait(Duration::from_secs(15)).await,
        "a clean exit after the request"
    );
}

/// SPEC §9's deployment: two gateways and two order services as separate processes on one
/// PostgreSQL and one Redis. An order that Shopify sends to either gateway is planned by either
/// order service and visible through both gateways; losing one order service loses nothing.
#[tokio::test]
async fn two_gateways_and_two_order_services_share_the_work_and_survive_one_order_service() {
    use forma::simulators::shopify::{self, Delivery, Line};

    let database = PgDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let mut env = HashMap::from([
        ("DATABASE_URL", database.url.clone()),
        ("FORMA_INTERNAL__KEY", INTERNAL_KEY.to_owned()),
        ("FORMA_ADMIN_PASSWORD", "fleet-admin-password".to_owned()),
        (
            "FORMA_SHOPIFY__WEBHOOK_SECRET",
            "fleet-shopify-secret".to_owned(),
        ),
        (
            "FORMA_SHOPIFY__SHOP_DOMAIN",
            "fleet.myshopify.com".to_owned(),
        ),
        ("FORMA_PROXY__HEALTH_CHECK_INTERVAL_MS", "200".to_owned()),
    ]);
    env.extend(redis_env());
    let mut first_order = Server::start(dir.path(), "order", &env).await;
    let second_order = Server::start(dir.path(), "order", &env).await;
    env.insert(
        "FORMA_SERVICES__ORDER_URL",
        format!("{},{}", first_order.addr, second_order.addr),
    );
    let a = Server::start(dir.path(), "gateway", &env).await;
    let b = Server::start(dir.path(), "gateway", &env).await;

    let _ = client();
    let admin = reqwest::Client::builder()
        .cookie_store(true)
        .build()
        .unwrap();
    let login = admin
        .post(format!("{}/api/v1/auth/login", a.addr))
        .json(&json!({"email": "admin@localhost", "password": "fleet-admin-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let mapping = admin
        .post(format!("{}/api/v1/product-mappings", a.addr))
        .json(&json!({"sku": "CUBE", "productName": "Cube", "printFiles": [{"fileId": "f", "fileName": "cube.gcode", "unitsPerPrint": 2}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(mapping.status(), 201);

    let send = |gateway: &str, id: u64| {
        let url = format!("{gateway}/api/v1/webhooks/shopify");
        async move {
            let lines = [Line {
                id: 1,
                sku: "CUBE".into(),
                name: "Cube".into(),
                quantity: 3,
                price: "2.00".into(),
            }];
            let delivery = Delivery::new(
                "orders/create",
                "fleet.myshopify.com",
                &shopify::order_document(id, id, &lines),
            );
            delivery
                .send(&client(), &url, b"fleet-shopify-secret")
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    for id in 1..=4 {
        let gateway = if id % 2 == 0 { &a.addr } else { &b.addr };
        assert_eq!(send(gateway, id).await, 200);
    }
    let jobs_through = |gateway: String| {
        let admin = admin.clone();
        async move {
            let page: serde_json::Value = admin
                .get(format!("{gateway}/api/v1/print-jobs?pageSize=100"))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            page["total"].as_u64().unwrap_or_default()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    // 3 units at 2 per print: 2 jobs an order.
    while jobs_through(a.addr.clone()).await < 8 {
        assert!(Instant::now() < deadline, "the jobs were not planned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let orders: serde_json::Value = admin
        .get(format!("{}/api/v1/orders", b.addr))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(orders["total"], 4, "{orders}");

    // One order service dies: the gateways route around it, webhooks still land, plans still run.
    first_order.signal("KILL").await;
    first_order.wait(Duration::from_secs(10)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0;
    let mut id = 100;
    while delivered < 2 {
        assert!(
            Instant::now() < deadline,
            "webhooks failed with one order service left"
        );
        if send(&a.addr, id).await == 200 {
            delivered += 1;
            id += 1;
        } else {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    while jobs_through(b.addr.clone()).await < 12 {
        assert!(
            Instant::now() < deadline,
            "the last orders were not planned"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(second_order);
    database.drop_now().await;
}
