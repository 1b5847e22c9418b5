//! A Redis restart in the middle of a flow (apalis issue #492, "consumer not registered"): on a
//! Redis server of the test's own (never the shared one), persisted to an append-only file.

use std::collections::HashSet;

use tokio::process::{Child, Command};

use super::*;
use crate::config::SecretUrl;
use crate::testing::{free_port, redis_server};

/// SIGTERM (Redis then writes its append-only file and exits), and waits for the exit.
async fn stop_server(mut child: Child) {
    let pid = child.id().expect("a running server");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await
        .expect("kill runs");
    assert!(status.success());
    tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("redis-server exits within 10 s")
        .expect("its exit status");
}

fn distinct(seen: &Seen) -> HashSet<Uuid> {
    seen.lock().expect("lock").iter().copied().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn delivery_resumes_after_a_redis_restart_in_the_middle_of_a_flow() {
    let dir = tempfile::tempdir().expect("a directory");
    let port = free_port();
    let server = redis_server(port, dir.path()).await;
    let url = SecretUrl::new(format!("redis://127.0.0.1:{port}"));
    let handle = RedisHandle::open(&url, "forma_restart:").expect("a Redis handle");
    let workers = Workers::new();
    let bus = EventBus::redis(&handle).await.expect("the Redis bus");
    let seen = Seen::default();
    bus.subscribe(PRINT, names::ORDER_CANCELLED, recorder(&seen))
        .expect("print subscribes");
    bus.start(&workers).expect("workers start");

    let before: Vec<Event> = (0..20).map(cancelled).collect();
    bus.publish(&before).await.expect("published");
    eventually(Duration::from_secs(10), "a first event", || {
        !seen.lock().expect("lock").is_empty()
    })
    .await;
    stop_server(server).await;

    let after: Vec<Event> = (20..40).map(cancelled).collect();
    assert!(
        bus.publish(&after).await.is_err(),
        "nothing accepts events while Redis is down"
    );
    // Down for longer than a heartbeat (5 s): the workers' polls and heartbeat fail meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _server = redis_server(port, dir.path()).await;
    // The outbox relay would offer the batch again until Redis takes it; so does the test.
    let deadline = Instant::now() + Duration::from_secs(20);
    while let Err(error) = bus.publish(&after).await {
        assert!(Instant::now() < deadline, "Redis never came back: {error}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let all: HashSet<Uuid> = before.iter().chain(&after).map(|e| e.event_id).collect();
    let deadline = Instant::now() + Duration::from_secs(20);
    while !distinct(&seen).is_superset(&all) {
        let missing = all.difference(&distinct(&seen)).count();
        assert!(
            Instant::now() < deadline,
            "{missing} of 40 events were never handled after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(workers.shutdown(Duration::from_secs(10)).await);
}
