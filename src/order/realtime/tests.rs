//! Socket.IO as a browser meets it: the real `socket.io-client` 4.x (tests/socketio, installed by
//! scripts/test) connects through the gateway with a session cookie, over websocket only and over
//! long-polling only, and hears of an order created by a Shopify webhook; in role `all` on SQLite,
//! and split (two gateways, two order services) on PostgreSQL with the Redis adapter.

use std::time::Duration;

use serde_json::{Value, json};

use crate::config::Role;
use crate::identity::roles::UserRole;
use crate::identity::{password, tenants, users};
use crate::infra::db::Backend;
use crate::order::flow_tests::{
    APP_SECRET, Deployment, SHOP, SP_TOKEN, deliver, deliver_signed, get_json, line,
};
use crate::order::shopify::tokens;
use crate::simulators::shopify::{self, Delivery};
use crate::testing::{ADMIN_PASSWORD, TestApp, eventually};

use super::test_client::{CONNECTING, Client, Transport};

/// How soon every client of the tenant must hear of a new order (SPEC §6.6 through §10's budget).
const WITHIN: Duration = Duration::from_secs(2);

/// A new session of `email` on `gateway`: the `forma.sid` cookie's value.
async fn session(gateway: &TestApp, email: &str, password: &str) -> String {
    gateway.login(email, password).await.1
}

/// The shop of the other tenant, whose orders only the outsider hears of.
const OTHER_SHOP: &str = "other-tenant.myshopify.com";

/// A user of a tenant of its own, with a shop of its own, who must never hear of the default
/// tenant's orders.
async fn outsider(gateway: &TestApp) -> (&'static str, &'static str) {
    const EMAIL: &str = "ops@other-tenant.example";
    const PASSWORD: &str = "other-tenant-password";
    let db = &gateway.ctx.db;
    let tenant = tenants::ensure(db, "other-tenant", "Other tenant")
        .await
        .unwrap();
    let shop = tokens::Installation {
        tenant_id: tenant.id,
        domain: OTHER_SHOP,
        sealed_token: b"never opened here",
        scopes: "read_orders",
    };
    tokens::connect(db, &shop).await.unwrap().expect("the shop");
    let new = users::NewUser {
        tenant_id: tenant.id,
        email: EMAIL.to_owned(),
        name: "Other ops".to_owned(),
        password_hash: password::hash(PASSWORD).await.unwrap(),
        roles: vec![UserRole::Operator],
        is_super_admin: false,
    };
    users::create(db, &new)
        .await
        .unwrap()
        .expect("a new address");
    (EMAIL, PASSWORD)
}

/// No session, a forged cookie and a signed-out session are each refused with `connect_error`.
async fn strangers_are_refused(gateway: &TestApp) {
    let base = gateway.url("");
    let signed_out = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let response = crate::testing::client()
        .post(gateway.url("/api/v1/auth/logout"))
        .header("cookie", format!("forma.sid={signed_out}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let cases = [
        ("no session over websocket", Transport::Websocket, None),
        ("no session over polling", Transport::Polling, None),
        (
            "a forged cookie",
            Transport::Polling,
            Some("forged-session-id"),
        ),
        (
            "a signed-out session over websocket",
            Transport::Websocket,
            Some(signed_out.as_str()),
        ),
        (
            "a signed-out session over polling",
            Transport::Polling,
            Some(signed_out.as_str()),
        ),
    ];
    for (name, transport, cookie) in cases {
        let mut client = Client::start(name, &base, transport, cookie).await;
        let outcome = client.outcome().await;
        assert_eq!(outcome["type"], "connect_error", "{name}: {outcome}");
    }
}

/// Every client of the tenant hears `order:created` with the order as the API lists it; the
/// other tenant's client hears nothing of it: the first event it hears is of its own tenant's
/// next order (which the tenant's clients do not hear).
async fn everyone_of_the_tenant_hears_of_a_new_order(
    deployment: &Deployment,
    mut clients: Vec<Client>,
    mut outsider: Client,
    number: u64,
) {
    let document = shopify::order_document(6_100_000 + number, number, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(
        deployment.gateway(1),
        &Delivery::new("orders/create", SHOP, &document),
    )
    .await;
    assert_eq!(status, 200);
    let mut created = Vec::new();
    for client in &mut clients {
        let name = client.name.clone();
        let event = client
            .wait_for(WITHIN, |v| {
                v["type"] == "event" && v["event"] == "order:created"
            })
            .await
            .unwrap_or_else(|| panic!("{name}: no order:created within {WITHIN:?}"));
        assert_eq!(
            event["data"]["orderNumber"],
            format!("#{number}"),
            "{name}: {event}"
        );
        assert!(event["data"]["tenantId"].is_string(), "{name}: {event}");
        created.push(event["data"]["id"].clone());
    }
    assert!(
        created.windows(2).all(|w| w[0] == w[1]),
        "one order: {created:?}"
    );

    let own = number + 1;
    let document = shopify::order_document(6_100_000 + own, own, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver_signed(
        deployment.gateway(0),
        &Delivery::new("orders/create", OTHER_SHOP, &document),
        APP_SECRET,
    )
    .await;
    assert_eq!(status, 200);
    outsider
        .wait_for(WITHIN, |v| {
            v["type"] == "event" && v["data"]["orderNumber"] == format!("#{own}")
        })
        .await
        .expect("the outsider hears of its own tenant's order");
    let heard = outsider.events();
    assert_eq!(heard[0]["event"], "order:created", "{heard:?}");
    assert_eq!(
        heard[0]["data"]["orderNumber"],
        format!("#{own}"),
        "another tenant's order reached the outsider: {heard:?}"
    );
    for client in &mut clients {
        let foreign = client
            .events()
            .into_iter()
            .find(|e| e["data"]["orderNumber"] == format!("#{own}"));
        assert_eq!(
            foreign, None,
            "{} heard of another tenant's order",
            client.name
        );
    }
}

#[tokio::test]
async fn a_tenants_clients_hear_of_a_new_order_in_role_all() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let base = gateway.url("");
    strangers_are_refused(gateway).await;
    let (email, password) = outsider(gateway).await;
    let outsider_session = session(gateway, email, password).await;
    let mut clients = Vec::new();
    for transport in [Transport::Websocket, Transport::Polling] {
        let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
        let name = format!("admin over {}", transport.as_str());
        clients.push(
            Client::start(&name, &base, transport, Some(&cookie))
                .await
                .connected()
                .await,
        );
    }
    let token = gateway.admin_tokens().await.0;
    clients.push(
        Client::with_bearer(
            "admin with a bearer token",
            &base,
            Transport::Websocket,
            &token,
        )
        .await
        .connected()
        .await,
    );
    let outsider = Client::start(
        "outsider",
        &base,
        Transport::Websocket,
        Some(&outsider_session),
    )
    .await
    .connected()
    .await;
    assert_connections_counted(gateway, 4).await;
    everyone_of_the_tenant_hears_of_a_new_order(&deployment, clients, outsider, 6101).await;
}

#[tokio::test]
async fn a_tenants_clients_on_every_gateway_hear_of_a_new_order_split() {
    let deployment = Deployment::split().await;
    strangers_are_refused(deployment.gateway(0)).await;
    let (email, password) = outsider(deployment.gateway(0)).await;
    let orders = deployment.gateway(0).ctx.config.order_urls();
    assert_eq!(orders.len(), 2);
    let mut clients = Vec::new();
    for g in 0..2 {
        let gateway = deployment.gateway(g);
        let base = gateway.url("");
        // Polling sessions on both order instances behind this gateway: each socket's handshake
        // and polls must stay on its instance, whichever that is.
        let mut placed = [false, false];
        while placed != [true, true] {
            let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
            let instance = crate::gateway::proxy::pinned_instance(&cookie, &orders);
            if placed[instance] {
                continue;
            }
            placed[instance] = true;
            let name = format!("polling on gateway {g}, order {instance}");
            clients.push(Client::start(&name, &base, Transport::Polling, Some(&cookie)).await);
        }
        let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
        let name = format!("websocket on gateway {g}");
        clients.push(Client::start(&name, &base, Transport::Websocket, Some(&cookie)).await);
    }
    let gateway = deployment.gateway(1);
    let cookie = session(gateway, "admin@localhost", ADMIN_PASSWORD).await;
    let mut upgrading = Client::start(
        "polling upgrading to websocket on gateway 1",
        &gateway.url(""),
        Transport::Upgrading,
        Some(&cookie),
    )
    .await
    .connected()
    .await;
    let upgrade = upgrading
        .wait_for(CONNECTING, |v| v["type"] == "upgrade")
        .await
        .expect("the client upgrades to websocket through the gateway");
    assert_eq!(upgrade["transport"], "websocket");
    let mut connected = vec![upgrading];
    for client in clients {
        connected.push(client.connected().await);
    }
    let outsider_session = session(deployment.gateway(1), email, password).await;
    let base = deployment.gateway(1).url("");
    let outsider = Client::start(
        "outsider",
        &base,
        Transport::Polling,
        Some(&outsider_session),
    )
    .await
    .connected()
    .await;
    assert_connections_counted(deployment.gateway(0), 8).await;
    everyone_of_the_tenant_hears_of_a_new_order(&deployment, connected, outsider, 6102).await;
}

/// The order service itself admits no socket without a context the gateway signed.
#[tokio::test]
async fn the_order_service_refuses_a_socket_without_a_signed_context() {
    let order = TestApp::spawn(Role::Order, Backend::Sqlite).await;
    let mut client = Client::start("direct", &order.url(""), Transport::Polling, None).await;
    let outcome = client.outcome().await;
    assert_eq!(outcome["type"], "connect_error", "{outcome}");
    assert_eq!(outcome["message"], "Unauthorized");
}

/// `/metrics` counts connected sockets per namespace.
async fn assert_connections_counted(app: &TestApp, at_least: u64) {
    eventually("the connections are counted", CONNECTING, || async {
        let count = app
            .metric("socketio_connections{namespace=\"/events\"}")
            .await?;
        (count >= at_least as f64).then_some(())
    })
    .await;
}

/// A mapped order gets print jobs: the tenant hears `printjob:created` with the job as the API
/// returns it, for that order.
#[tokio::test]
async fn print_jobs_reach_the_tenant_as_they_are_created_in_role_all() {
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let (admin, cookie) = gateway.login("admin@localhost", ADMIN_PASSWORD).await;
    crate::order::flow_tests::map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let mut client = Client::start(
        "admin",
        &gateway.url(""),
        Transport::Websocket,
        Some(&cookie),
    )
    .await
    .connected()
    .await;
    let document = shopify::order_document(6_200_001, 6201, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    assert_eq!(status, 200);
    let created = client
        .wait_for(WITHIN, |v| v["event"] == "order:created")
        .await
        .expect("order:created");
    let job = client
        .wait_for(WITHIN, |v| v["event"] == "printjob:created")
        .await
        .expect("printjob:created");
    assert_eq!(job["data"]["orderId"], created["data"]["id"], "{job}");
    assert!(
        job["data"]["id"].is_string() && job["data"]["status"].is_string(),
        "{job}"
    );
}

/// Graceful shutdown waits for in-flight requests, and an idle long-poll is one until the next
/// ping (25 s): the server closes its sockets as shutdown begins, so the poll is answered with
/// the close packet and the server stops long before the poll would have ended.
#[tokio::test]
async fn an_idle_long_poll_does_not_hold_graceful_shutdown() {
    /// Far below the ping interval, far above a prompt stop on a busy machine.
    const PROMPTLY: Duration = Duration::from_secs(10);
    // A grace longer than the poll: only closing its socket can end the poll in time.
    let app = TestApp::spawn_with(Role::All, Backend::Sqlite, |config| {
        config.server.shutdown_timeout_secs = 120;
        // The poll's identity stays cached: see below.
        config.session.cache_ms = 600_000;
    })
    .await;
    let cookie = format!(
        "forma.sid={}",
        session(&app, "admin@localhost", ADMIN_PASSWORD).await
    );
    let client = crate::testing::client();
    let polling = app.url("/socket.io/?EIO=4&transport=polling");
    let open = client
        .get(&polling)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let handshake: Value = serde_json::from_str(open.strip_prefix('0').expect("an open packet"))
        .unwrap_or_else(|e| panic!("{open}: {e}"));
    let sid = handshake["sid"].as_str().expect("a session id").to_owned();
    let session_url = format!("{polling}&sid={sid}");
    let joined = client
        .post(&session_url)
        .header("cookie", &cookie)
        .body("40/events,")
        .send()
        .await
        .unwrap();
    assert_eq!(joined.status(), 200);
    // engine.io pings as a session opens, so the polls carry that ping before, with or after the
    // namespace's connect packet; after both, nothing is due for a ping interval.
    let mut received = Vec::new();
    let seen =
        |received: &[String], packet: &dyn Fn(&str) -> bool| received.iter().any(|p| packet(p));
    while !seen(&received, &|p| p.starts_with("40/events,")) || !seen(&received, &|p| p == "2") {
        assert!(
            received.len() < 8,
            "no connect packet or ping: {received:?}"
        );
        let payload = client
            .get(&session_url)
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        received.extend(payload.split('\u{1e}').map(str::to_owned));
    }

    // The idle poll: nothing is due until the next ping.
    let (addr, request) = (
        app.addr,
        format!(
            "GET /socket.io/?EIO=4&transport=polling&sid={sid} HTTP/1.1\r\nHost: {}\r\n\
             Cookie: {cookie}\r\nConnection: close\r\n\r\n",
            app.addr
        ),
    );
    let idle = tokio::spawn(async move { crate::testing::raw_http(addr, &request).await });
    // Connections are served on threads of their own, so the poll may still be on its way in
    // when shutdown begins (and then rightly be answered 503). It is counted in flight once the
    // server reads it; from there its identity is a cache hit, so nothing stands between it and
    // the Socket.IO server that could let shutdown begin first.
    eventually(
        "the idle poll is in flight",
        Duration::from_secs(10),
        || async {
            let metrics = client
                .get(app.url("/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            // This scrape is one request in flight; the poll is the other.
            metrics
                .lines()
                .any(|line| line == "http_requests_in_flight 2")
                .then_some(())
        },
    )
    .await;
    let ready = client.get(app.url("/health/live")).send().await.unwrap();
    assert!(ready.status().is_success());
    assert!(!idle.is_finished(), "the poll is held while nothing is due");

    tokio::time::timeout(PROMPTLY, app.stop())
        .await
        .expect("the server stops promptly despite the idle long-poll")
        .expect("the server stops cleanly");
    let answer = tokio::time::timeout(PROMPTLY, idle)
        .await
        .expect("the poll is answered")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.ends_with("\r\n\r\n1"),
        "the close packet answers the poll: {answer}"
    );
}

/// A print job's failure reaches the browser once: the print side tells it as it happens, and the
/// order side, which hears it again from the bus, does not tell it a second time.
#[tokio::test]
async fn a_print_jobs_failure_reaches_the_browser_once() {
    const SETTLES: Duration = Duration::from_secs(60);
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let (admin, cookie) = gateway.login("admin@localhost", ADMIN_PASSWORD).await;
    let files = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    crate::order::flow_tests::map(&admin, gateway, "CUBE", files).await;
    let base = gateway.url("");
    let client = Client::start("admin", &base, Transport::Websocket, Some(&cookie));
    let mut client = client.await.connected().await;
    let document = shopify::order_document(6_200_002, 6202, &[line(1, "CUBE", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    let item = eventually("the farm has the job", SETTLES, || async {
        deployment.farm.items().into_iter().next()
    })
    .await;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");
    let farm = deployment
        .farm
        .report(item.id, "job.failed", &hook, SP_TOKEN);
    assert_eq!(farm.await.unwrap(), 200);
    eventually(
        "the order side heard the failure from the bus",
        SETTLES,
        || async {
            let queues = get_json(&admin, &gateway.url("/api/v1/admin/queues")).await;
            queues
                .as_array()?
                .iter()
                .any(|q| {
                    q["queue"] == "print-job.failed:order" && q["completed"].as_u64() >= Some(1)
                })
                .then_some(())
        },
    )
    .await;

    // An event told after that, on the same socket: whatever was told before it has arrived.
    let marker = shopify::order_document(6_200_003, 6203, &[line(1, "CUBE", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &marker)).await;
    let told = client.wait_for(SETTLES, |v| {
        v["event"] == "order:created" && v["data"]["orderNumber"] == "#6203"
    });
    told.await.expect("the later order:created");
    let events = client.events();
    let count = |wanted: &dyn Fn(&Value) -> bool| events.iter().filter(|v| wanted(v)).count();
    let failed = count(&|v| v["event"] == "printjob:failed");
    let notified =
        count(&|v| v["event"] == "notification" && v["data"]["kind"] == "print_job_failed");
    assert_eq!((failed, notified), (1, 1), "{events:#?}");
}

/// An order line without a product mapping is told live too (SPEC §6.2: it raises a
/// notification), after the order it belongs to.
#[tokio::test]
async fn a_line_without_a_mapping_reaches_the_browser_as_a_notification() {
    const SETTLES: Duration = Duration::from_secs(60);
    let deployment = Deployment::all().await;
    let gateway = deployment.gateway(0);
    let (_, cookie) = gateway.login("admin@localhost", ADMIN_PASSWORD).await;
    let base = gateway.url("");
    let client = Client::start("admin", &base, Transport::Websocket, Some(&cookie));
    let mut client = client.await.connected().await;
    let document = shopify::order_document(6_200_004, 6204, &[line(1, "MYSTERY", 1)]);
    deliver(gateway, &Delivery::new("orders/create", SHOP, &document)).await;
    let told = client.wait_for(SETTLES, |v| {
        v["event"] == "notification" && v["data"]["kind"] == "unmapped_sku"
    });
    let told = told.await.expect("the notification");
    assert_eq!(told["data"]["severity"], "warning", "{told}");
    assert_eq!(
        told["data"]["message"], "No active product mapping for SKU MYSTERY",
        "{told}"
    );
    let events = client.events();
    let created = events.iter().position(|v| v["event"] == "order:created");
    let notified = events.iter().position(|v| v["event"] == "notification");
    assert!(created < notified && created.is_some(), "{events:#?}");
    assert_eq!(
        events[created.unwrap_or_default()]["data"]["id"],
        told["data"]["orderId"],
        "{events:#?}"
    );
}

/// Redis hangs, then restarts, under two replicas (role `all`, one database), on a Redis of the
/// test's own. While it hangs, a replica's own sockets still hear of its orders in time. Once it
/// is back, an order arriving at one replica reaches a socket on the other again, without a
/// restart of either: the adapter's link reconnects and listens again.
#[tokio::test]
async fn news_crosses_replicas_again_once_redis_has_restarted() {
    use crate::config::SecretUrl;
    use crate::testing::{TestDatabase, free_port, redis_server};
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut redis = redis_server(port, dir.path()).await;
    // The replicas reach Redis through a relay that can freeze their connections.
    let relay = Relay::start(port).await;
    let database = std::sync::Arc::new(TestDatabase::create(Backend::Postgres).await);
    let shared = |c: &mut crate::config::Config| {
        crate::order::flow_tests::integrations(c, None);
        c.redis.url = Some(SecretUrl::new(format!("redis://127.0.0.1:{}", relay.port)));
        c.redis.key_prefix = "socketio-restart:".to_owned();
    };
    let first = TestApp::spawn_on(Role::All, database.clone(), shared).await;
    let second = TestApp::spawn_on(Role::All, database, shared).await;
    let token = second.admin_tokens().await.0;
    let mut client = Client::with_bearer(
        "on the second",
        &second.url(""),
        Transport::Websocket,
        &token,
    )
    .await
    .connected()
    .await;
    // An order of the first replica, which the client hears of within `within`.
    let mut number = 6_300;
    let mut heard_within = async |at: &TestApp, within: Duration| {
        number += 1;
        let document = shopify::order_document(6_300_000 + number, number, &[line(1, "CUBE", 1)]);
        let (status, _) = deliver(at, &Delivery::new("orders/create", SHOP, &document)).await;
        assert_eq!(status, 200);
        client
            .wait_for(within, |v| {
                v["event"] == "order:created" && v["data"]["orderNumber"] == format!("#{number}")
            })
            .await
            .is_some()
    };
    // The first tries may come before both adapters run.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !heard_within(&first, WITHIN).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas never heard each other"
        );
    }

    // Redis stops answering (its process is stopped: connections stay open, nothing comes back).
    // A replica's own sockets still hear of its orders in time: an emit does not wait on Redis.
    let pid = redis.id().expect("redis runs").to_string();
    let signal = |name: &'static str| {
        let pid = pid.clone();
        async move {
            let sent = tokio::process::Command::new("kill")
                .args([name, &pid])
                .status()
                .await
                .unwrap();
            assert!(sent.success());
        }
    };
    signal("-STOP").await;
    let heard = heard_within(&second, WITHIN).await;
    signal("-CONT").await;
    assert!(
        heard,
        "a socket did not hear of its own replica's order in time while Redis hung"
    );

    // Redis restarts.
    redis.kill().await.unwrap();
    let _redis = redis_server(port, dir.path()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !heard_within(&first, WITHIN).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas never heard each other again"
        );
    }

    // Every connection to Redis goes silent for good, both ends open (a link that died without
    // a word): the adapters' watchdogs replace their links, and the replicas hear each other
    // again.
    relay.freeze();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !heard_within(&first, WITHIN).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the replicas never heard each other through new links"
        );
    }
}

/// A TCP relay to Redis on `target`: each connection is passed through as it is, until
/// [`Relay::freeze`], after which no byte passes on the connections open then, and both their
/// ends stay open. Connections opened later pass as before.
struct Relay {
    port: u16,
    opened: std::sync::Arc<std::sync::atomic::AtomicU64>,
    frozen_up_to: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Relay {
    async fn start(target: u16) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let opened = Arc::new(AtomicU64::new(0));
        let frozen_up_to = Arc::new(AtomicU64::new(0));
        let (counter, frozen) = (opened.clone(), frozen_up_to.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let id = counter.fetch_add(1, Ordering::SeqCst) + 1;
                let frozen = frozen.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                    else {
                        return;
                    };
                    let pass =
                        |mut from: tokio::net::tcp::OwnedReadHalf,
                         mut to: tokio::net::tcp::OwnedWriteHalf| {
                            let frozen = frozen.clone();
                            async move {
                                let mut buffer = vec![0_u8; 16 * 1024];
                                loop {
                                    let read = match from.read(&mut buffer).await {
                                        Ok(0) | Err(_) => return,
                                        Ok(read) => read,
                                    };
                                    if frozen.load(Ordering::SeqCst) >= id {
                                        std::future::pending::<()>().await;
                                    }
                                    if to.write_all(&buffer[..read]).await.is_err() {
                                        return;
                                    }
                                }
                            }
                        };
                    let (client_reads, client_writes) = client.into_split();
                    let (server_reads, server_writes) = server.into_split();
                    tokio::select! {
                        () = pass(client_reads, server_writes) => {}
                        () = pass(server_reads, client_writes) => {}
                    }
                });
            }
        });
        Self {
            port,
            opened,
            frozen_up_to,
        }
    }

    /// Freezes every connection opened so far.
    fn freeze(&self) {
        use std::sync::atomic::Ordering;
        let opened = self.opened.load(Ordering::SeqCst);
        self.frozen_up_to.store(opened, Ordering::SeqCst);
    }
}
