//! Roles as separate processes, as they run in production.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::support::{INTERNAL_KEY, PgDatabase, Server, get_json};

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
    assert!(first.drain_log().iter().any(|l| l["message"] == "stopped"));

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
