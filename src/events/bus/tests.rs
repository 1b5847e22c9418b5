//! The bus against a real SQLite file, a real PostgreSQL (own database per test) and a real Redis
//! (own key prefix per test), every backend running the same scenarios.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::subscriptions::consumers::{PRINT, SHIPPING};
use super::{EventBus, HandlerError, QueueStats};
use crate::config::Config;
use crate::events::catalog::{Event, EventPayload, OrderCancelled, names};
use crate::events::publish::EventPublisher;
use crate::infra::db::{Backend, Db};
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;
use crate::testing::{TestDatabase, use_redis};

#[derive(Clone, Copy)]
pub(super) enum Kind {
    Sqlite,
    Postgres,
    Redis,
}

/// One backend shared by every bus of a test, as several instances share one deployment.
pub(super) struct Fixture {
    pub(super) sqlite: Option<TestDatabase>,
    pub(super) postgres: Option<TestDatabase>,
    pub(super) redis: Option<RedisHandle>,
    pub(super) workers: Workers,
}

impl Fixture {
    pub(super) async fn new(kind: Kind) -> Self {
        match kind {
            Kind::Sqlite => Self {
                sqlite: Some(TestDatabase::create(Backend::Sqlite).await),
                postgres: None,
                redis: None,
                workers: Workers::new(),
            },
            Kind::Postgres => Self {
                sqlite: None,
                postgres: Some(TestDatabase::create(Backend::Postgres).await),
                redis: None,
                workers: Workers::new(),
            },
            Kind::Redis => {
                let mut config = Config::default();
                use_redis(&mut config);
                let url = config.redis.url.as_ref().expect("a Redis URL");
                let handle =
                    RedisHandle::open(url, &config.redis.key_prefix).expect("a Redis handle");
                Self {
                    sqlite: None,
                    postgres: None,
                    redis: Some(handle),
                    workers: Workers::new(),
                }
            }
        }
    }

    /// A new bus instance; each SQL instance gets its own pool, like a separate process.
    pub(super) async fn bus(&self) -> EventBus {
        if let Some(db) = &self.sqlite {
            let Db::Sqlite(pool) = Db::connect(&db.url, 5).await.expect("SQLite") else {
                panic!("not a SQLite URL");
            };
            EventBus::sqlite(pool).await.expect("the SQLite bus")
        } else if let Some(db) = &self.postgres {
            let Db::Postgres(pool) = Db::connect(&db.url, 10).await.expect("PostgreSQL") else {
                panic!("not a PostgreSQL URL");
            };
            EventBus::postgres(pool).await.expect("the PostgreSQL bus")
        } else {
            let redis = self.redis.as_ref().expect("Redis");
            EventBus::redis(redis).await.expect("the Redis bus")
        }
    }

    /// A new bus instance whose print service records the `order.cancelled` events it handles;
    /// its workers are not started yet.
    pub(super) async fn print_recorder(&self) -> (EventBus, Seen) {
        let bus = self.bus().await;
        let seen = Seen::default();
        bus.subscribe(PRINT, names::ORDER_CANCELLED, recorder(&seen))
            .expect("print subscribes");
        (bus, seen)
    }

    pub(super) async fn stop(self) {
        assert!(self.workers.shutdown(Duration::from_secs(10)).await);
        if let Some(redis) = &self.redis {
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
    }
}

pub(super) fn cancelled(n: usize) -> Event {
    Event::new(
        "order-service",
        "tenant-1",
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: format!("order-{n}"),
        }),
    )
}

pub(super) type Seen = Arc<Mutex<Vec<Uuid>>>;

pub(super) fn recorder(
    seen: &Seen,
) -> impl Fn(Event) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
    let seen = seen.clone();
    move |event: Event| {
        seen.lock().expect("lock").push(event.event_id);
        std::future::ready(Ok(()))
    }
}

/// Waits until `done` holds, or fails the test after `timeout`.
pub(super) async fn eventually(timeout: Duration, what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

macro_rules! on_every_backend {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() {
                super::$name(super::Kind::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() {
                super::$name(super::Kind::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn redis() {
                super::$name(super::Kind::Redis).await
            }
        }
    };
}

/// Waits (bounded) until the counts of `queue` satisfy `done`.
pub(super) async fn until_stats(
    bus: &EventBus,
    queue: &str,
    what: &str,
    done: impl Fn(&QueueStats) -> bool,
) -> QueueStats {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let stats = stats_of(bus, queue).await;
        if done(&stats) {
            return stats;
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) async fn stats_of(bus: &EventBus, queue: &str) -> QueueStats {
    let all = bus.queues().await.expect("queue statistics");
    all.into_iter()
        .find(|s| s.queue == queue)
        .expect("the queue is listed")
}

/// Waits until `queue` has completed `n` jobs and holds none waiting or running: every handler
/// call of those jobs has returned (a job is acknowledged after its handler), and none can come
/// back. Waiting on that, not on a fixed pause, is what lets a test count calls exactly.
pub(super) async fn until_settled(bus: &EventBus, queue: &str, n: u64) {
    until_stats(bus, queue, "the queue to settle", |s| {
        s.completed == n && s.waiting == 0 && s.active == 0
    })
    .await;
}

fn print_queue() -> String {
    super::subscriptions::queue_name(names::ORDER_CANCELLED, PRINT)
}

on_every_backend!(every_subscriber_of_order_cancelled_receives_it_once);
async fn every_subscriber_of_order_cancelled_receives_it_once(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let (print, shipping) = (Seen::default(), Seen::default());
    bus.subscribe(PRINT, names::ORDER_CANCELLED, recorder(&print))
        .expect("print subscribes");
    bus.subscribe(SHIPPING, names::ORDER_CANCELLED, recorder(&shipping))
        .expect("shipping subscribes");
    bus.start(&fixture.workers).expect("workers start");

    let event = cancelled(1);
    bus.publish(std::slice::from_ref(&event))
        .await
        .expect("published");

    until_settled(&bus, &print_queue(), 1).await;
    let shipping_queue = super::subscriptions::queue_name(names::ORDER_CANCELLED, SHIPPING);
    until_settled(&bus, &shipping_queue, 1).await;
    assert_eq!(*print.lock().expect("lock"), vec![event.event_id]);
    assert_eq!(*shipping.lock().expect("lock"), vec![event.event_id]);
    fixture.stop().await;
}

on_every_backend!(two_instances_of_one_consumer_process_each_event_once_between_them);
async fn two_instances_of_one_consumer_process_each_event_once_between_them(kind: Kind) {
    const N: usize = 50;
    let fixture = Fixture::new(kind).await;
    let seen = Seen::default();
    let mut first = fixture.bus().await;
    let mut second = fixture.bus().await;
    for bus in [&mut first, &mut second] {
        bus.subscribe(PRINT, names::ORDER_CANCELLED, recorder(&seen))
            .expect("print subscribes");
        bus.start(&fixture.workers).expect("workers start");
    }

    let events: Vec<Event> = (0..N).map(cancelled).collect();
    first.publish(&events).await.expect("published");

    until_settled(&first, &print_queue(), N as u64).await;
    let mut handled = seen.lock().expect("lock").clone();
    assert_eq!(handled.len(), N, "an event was handled twice");
    handled.sort();
    let mut published: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    published.sort();
    assert_eq!(handled, published);
    fixture.stop().await;
}

type Calls = Arc<Mutex<Vec<Instant>>>;

/// A handler that fails its first `failures` calls, recording when each call happened.
fn flaky(
    calls: &Calls,
    failures: usize,
) -> impl Fn(Event) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
    let calls = calls.clone();
    move |_event: Event| {
        let mut calls = calls.lock().expect("lock");
        calls.push(Instant::now());
        std::future::ready(if calls.len() <= failures {
            Err("the print service is unavailable".into())
        } else {
            Ok(())
        })
    }
}

on_every_backend!(a_handler_that_fails_twice_is_called_three_times_one_then_two_seconds_apart);
async fn a_handler_that_fails_twice_is_called_three_times_one_then_two_seconds_apart(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let calls = Calls::default();
    bus.subscribe(PRINT, names::ORDER_CANCELLED, flaky(&calls, 2))
        .expect("print subscribes");
    bus.start(&fixture.workers).expect("workers start");
    bus.publish(&[cancelled(1)]).await.expect("published");

    until_settled(&bus, &print_queue(), 1).await;
    let calls = calls.lock().expect("lock").clone();
    assert_eq!(calls.len(), 3, "the handler succeeded on its third call");
    // The backoff has no jitter: a retry never comes before its delay. How much later it comes
    // depends on the machine, so only the lower bound is asserted.
    let gaps: Vec<Duration> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        gaps[0] >= super::FIRST_BACKOFF && gaps[1] >= 2 * super::FIRST_BACKOFF,
        "gaps {gaps:?}"
    );
    assert_eq!(dead_in_print_queue(&bus).await, 0);
    fixture.stop().await;
}

on_every_backend!(a_handler_that_always_fails_is_called_three_times_and_its_job_ends_dead);
async fn a_handler_that_always_fails_is_called_three_times_and_its_job_ends_dead(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let calls = Calls::default();
    bus.subscribe(PRINT, names::ORDER_CANCELLED, flaky(&calls, usize::MAX))
        .expect("print subscribes");
    bus.start(&fixture.workers).expect("workers start");
    bus.publish(&[cancelled(1)]).await.expect("published");

    // Dead is final: the job is stored so after its last attempt returned, and no worker takes a
    // dead job again (a fourth call would need it back in the queue).
    until_stats(&bus, &print_queue(), "the job to end dead", |s| {
        s.dead == 1 && s.waiting == 0 && s.active == 0
    })
    .await;
    assert_eq!(calls.lock().expect("lock").len(), 3);
    let dead = bus
        .jobs(&print_queue(), super::JobState::Dead, 10)
        .await
        .expect("dead jobs");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].attempts, 3, "{:?}", dead[0]);
    fixture.stop().await;
}

on_every_backend!(a_handler_that_panics_fails_its_attempts_and_the_queue_goes_on);
/// A panic in a handler is a failed attempt: its job ends dead after its attempts, and the queue's
/// worker, in whose task the handler runs, goes on with the next event.
async fn a_handler_that_panics_fails_its_attempts_and_the_queue_goes_on(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let poison = cancelled(1);
    let poison_id = poison.event_id;
    let seen = Seen::default();
    let handled = seen.clone();
    bus.subscribe(PRINT, names::ORDER_CANCELLED, move |event: Event| {
        assert_ne!(event.event_id, poison_id, "a poison event");
        handled.lock().expect("lock").push(event.event_id);
        std::future::ready(Ok::<(), HandlerError>(()))
    })
    .expect("print subscribes");
    bus.start(&fixture.workers).expect("workers start");
    bus.publish(&[poison]).await.expect("published");
    until_stats(&bus, &print_queue(), "the poison to end dead", |s| {
        s.dead == 1 && s.waiting == 0 && s.active == 0
    })
    .await;
    let next = cancelled(2);
    let next_id = next.event_id;
    bus.publish(&[next]).await.expect("published");
    eventually(Duration::from_secs(15), "the next event", || {
        seen.lock().expect("lock").contains(&next_id)
    })
    .await;
    fixture.stop().await;
}

#[path = "dashboard_tests.rs"]
mod dashboard;
#[path = "delivery_tests.rs"]
mod delivery;
#[path = "restart_tests.rs"]
mod restart;

/// The dead jobs of the print queue of `order.cancelled`, as the dashboard counts them.
async fn dead_in_print_queue(bus: &EventBus) -> u64 {
    let queue = super::subscriptions::queue_name(names::ORDER_CANCELLED, PRINT);
    let stats = bus.queues().await.expect("queue statistics");
    stats
        .iter()
        .find(|q| q.queue == queue)
        .map(|q| q.dead)
        .expect("the print queue is listed")
}
