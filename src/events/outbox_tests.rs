//! The outbox and its relay on both databases.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::Notify;
use uuid::Uuid;

use super::{OutboxRelay, RelayError, RelaySettings, backlog, delete_sent_before, enqueue};
use crate::each_database;
use crate::events::bridge::ORDER_SERVICE;
use crate::events::catalog::{Event, EventPayload, OrderCancelled};
use crate::events::publish::{EventPublisher, PublishError};
use crate::infra::db::{Backend, Db};
use crate::infra::workers::Workers;
use crate::on_pool;
use crate::testing::TestDatabase;

async fn database(backend: Backend) -> (TestDatabase, Db) {
    let database = TestDatabase::create(backend).await;
    let db = Db::connect(&database.url, 5).await.unwrap();
    db.migrate().await.unwrap();
    (database, db)
}

/// A publisher for the relay's own contract, not a bus: it records the ids of the events the
/// relay handed over, in order, and refuses everything while `failing` is set.
#[derive(Default)]
struct RecordingPublisher {
    ids: Mutex<Vec<Uuid>>,
    failing: AtomicBool,
}

impl RecordingPublisher {
    fn ids(&self) -> Vec<Uuid> {
        self.ids.lock().unwrap().clone()
    }
}

#[async_trait]
impl EventPublisher for RecordingPublisher {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(PublishError::new("the test bus is down"));
        }
        // A real bus answers over the network; yielding lets a second relay run meanwhile.
        tokio::task::yield_now().await;
        self.ids
            .lock()
            .unwrap()
            .extend(events.iter().map(|e| e.event_id));
        Ok(())
    }
}

/// A publisher that never answers, standing in for a relay that dies mid-publish; `entered`
/// tells the test that the batch has been claimed and handed over.
#[derive(Default)]
struct HangingPublisher {
    entered: Notify,
}

#[async_trait]
impl EventPublisher for HangingPublisher {
    async fn publish(&self, _events: &[Event]) -> Result<(), PublishError> {
        self.entered.notify_one();
        std::future::pending().await
    }
}

fn event(n: usize) -> Event {
    let payload = EventPayload::OrderCancelled(OrderCancelled {
        order_id: format!("order-{n}"),
    });
    Event::new(ORDER_SERVICE, "tenant-1", payload)
}

/// Enqueues `count` events in one committed transaction; returns their ids in order.
async fn enqueue_committed(db: &Db, count: usize) -> Vec<Uuid> {
    let mut tx = db.begin().await.unwrap();
    let mut ids = Vec::new();
    for n in 0..count {
        let event = event(n);
        enqueue(&mut tx, &event).await.unwrap();
        ids.push(event.event_id);
    }
    tx.commit().await.unwrap();
    ids
}

fn relay(db: &Db, publisher: Arc<dyn EventPublisher>) -> OutboxRelay {
    OutboxRelay::new(db.clone(), publisher, RelaySettings::default())
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_pool!(db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).unwrap()
}

each_database! {
    async fn an_event_enqueued_in_a_committed_transaction_is_published_once_and_marked_sent(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let relay = relay(&db, publisher.clone());
        let event = event(1);
        let mut tx = db.begin().await.unwrap();
        enqueue(&mut tx, &event).await.unwrap();
        tx.commit().await.unwrap();

        assert_eq!(relay.relay_once().await.unwrap(), 1);
        assert_eq!(relay.relay_once().await.unwrap(), 0, "a sent event is not published again");
        assert_eq!(publisher.ids(), vec![event.event_id]);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL").await, 1);
        let stored = on_pool!(&db, pool => {
            sqlx::query_scalar::<_, String>("SELECT payload FROM outbox").fetch_one(pool).await
        })
        .unwrap();
        let stored: Event = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored, event, "the row holds the event's catalog JSON");
    }
}

each_database! {
    async fn an_event_enqueued_in_a_rolled_back_transaction_is_never_published(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let relay = relay(&db, publisher.clone());
        let mut tx = db.begin().await.unwrap();
        enqueue(&mut tx, &event(1)).await.unwrap();
        tx.rollback().await.unwrap();

        assert_eq!(relay.relay_once().await.unwrap(), 0);
        assert!(publisher.ids().is_empty());
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox").await, 0);
    }
}

each_database! {
    async fn events_are_published_in_commit_order(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let relay = relay(&db, publisher.clone());
        let mut expected = enqueue_committed(&db, 1).await;
        expected.extend(enqueue_committed(&db, 3).await);
        expected.extend(enqueue_committed(&db, 1).await);

        assert_eq!(relay.relay_once().await.unwrap(), 5);
        assert_eq!(publisher.ids(), expected);
    }
}

each_database! {
    async fn two_relays_publish_each_of_500_events_exactly_once_in_total(backend: Backend) {
        let (guard, db) = database(backend).await;
        let mut expected = Vec::new();
        for _ in 0..50 {
            expected.extend(enqueue_committed(&db, 10).await);
        }
        let publisher = Arc::new(RecordingPublisher::default());
        // Two pools, as two replicas would have; small batches so the relays take turns often.
        let settings = RelaySettings { batch_size: 25, ..RelaySettings::default() };
        let runs = (0..2).map(|_| {
            let publisher = publisher.clone();
            let settings = settings.clone();
            let url = guard.url.clone();
            tokio::spawn(async move {
                let db = Db::connect(&url, 3).await.unwrap();
                let relay = OutboxRelay::new(db.clone(), publisher, settings);
                loop {
                    let published = relay.relay_once().await.unwrap();
                    if published == 0 {
                        if backlog(&db).await.unwrap().pending == 0 {
                            break;
                        }
                        // The rest is claimed by the other relay.
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
        });
        for run in futures::future::join_all(runs).await {
            run.unwrap();
        }

        let published = publisher.ids();
        let distinct: HashSet<Uuid> = published.iter().copied().collect();
        assert_eq!(published.len(), 500, "no event is published twice");
        assert_eq!(distinct, expected.into_iter().collect::<HashSet<_>>());
    }
}

each_database! {
    async fn a_failing_publisher_leaves_rows_unsent_and_they_go_out_once_it_recovers(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let publisher = Arc::new(RecordingPublisher::default());
        let relay = relay(&db, publisher.clone());
        let expected = enqueue_committed(&db, 3).await;
        publisher.failing.store(true, Ordering::SeqCst);

        let error = relay.relay_once().await.unwrap_err();
        assert!(matches!(error, RelayError::Publish(_)), "{error}");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 3);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE claimed_by IS NULL").await, 3, "released at once");
        assert_eq!(count(&db, "SELECT CAST(MIN(attempts) AS BIGINT) FROM outbox").await, 1);

        publisher.failing.store(false, Ordering::SeqCst);
        assert_eq!(relay.relay_once().await.unwrap(), 3);
        assert_eq!(publisher.ids(), expected);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 0);
        assert_eq!(count(&db, "SELECT CAST(MIN(attempts) AS BIGINT) FROM outbox").await, 2);
    }
}

each_database! {
    async fn a_batch_held_by_a_dead_relay_is_taken_over_by_another(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let expected = enqueue_committed(&db, 2).await;
        let lease = Duration::from_secs(2);
        let hanging = Arc::new(HangingPublisher::default());
        let first = OutboxRelay::new(
            db.clone(),
            hanging.clone(),
            RelaySettings { lease, ..RelaySettings::default() },
        );
        let publisher = Arc::new(RecordingPublisher::default());
        let second = relay(&db, publisher.clone());

        let dying = tokio::spawn(async move { first.relay_once().await });
        hanging.entered.notified().await;
        // PostgreSQL: the rows are locked and skipped; SQLite: they are under lease.
        assert_eq!(second.relay_once().await.unwrap(), 0, "a held batch is not published twice");

        dying.abort();
        assert!(dying.await.unwrap_err().is_cancelled());
        if backend == Backend::Sqlite {
            // The lease outlives its holder; only its expiry frees the batch.
            assert_eq!(second.relay_once().await.unwrap(), 0);
            tokio::time::sleep(lease).await;
        }
        // PostgreSQL frees the rows once the dead relay's transaction is rolled back.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while publisher.ids().len() < 2 && tokio::time::Instant::now() < deadline {
            second.relay_once().await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(publisher.ids(), expected);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 0);
    }
}

each_database! {
    async fn outbox_lag_seconds_is_above_zero_while_rows_wait(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let nothing = backlog(&db).await.unwrap();
        assert_eq!((nothing.pending, nothing.lag), (0, Duration::ZERO));

        enqueue_committed(&db, 2).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
        let waiting = backlog(&db).await.unwrap();
        assert_eq!(waiting.pending, 2);
        assert!(waiting.lag >= Duration::from_millis(20), "{:?}", waiting.lag);

        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || waiting.record());
        let rendered = handle.render();
        let gauge = |name: &str| -> f64 {
            let line = rendered.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(gauge("outbox_lag_seconds") > 0.0, "{rendered}");
        assert_eq!(gauge("outbox_pending"), 2.0);

        relay(&db, Arc::new(RecordingPublisher::default())).relay_once().await.unwrap();
        let drained = backlog(&db).await.unwrap();
        assert_eq!((drained.pending, drained.lag), (0, Duration::ZERO));
    }
}

each_database! {
    async fn sent_rows_are_deleted_in_batches_once_past_retention_and_unsent_ones_never(backend: Backend) {
        let (_guard, db) = database(backend).await;
        enqueue_committed(&db, 5).await;
        relay(&db, Arc::new(RecordingPublisher::default())).relay_once().await.unwrap();
        enqueue_committed(&db, 1).await;

        let past = Utc::now() - chrono::TimeDelta::hours(1);
        assert_eq!(delete_sent_before(&db, past, 2).await.unwrap(), 0, "still within retention");
        let later = Utc::now() + chrono::TimeDelta::seconds(1);
        assert_eq!(delete_sent_before(&db, later, 2).await.unwrap(), 2);
        assert_eq!(delete_sent_before(&db, later, 2).await.unwrap(), 2);
        assert_eq!(delete_sent_before(&db, later, 2).await.unwrap(), 1);
        assert_eq!(delete_sent_before(&db, later, 2).await.unwrap(), 0);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL").await, 1);
    }
}

each_database! {
    async fn a_running_relay_publishes_at_once_when_notified(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let publisher = Arc::new(RecordingPublisher::default());
        // An interval far longer than the test: only the notification can explain a publish.
        let settings = RelaySettings { interval: Duration::from_secs(60), ..RelaySettings::default() };
        let relay = OutboxRelay::new(db.clone(), publisher.clone(), settings);
        let notifier = relay.notifier();
        let workers = Workers::new();
        // The first pass publishes what was there at the start; seeing it published means the
        // relay is past that pass, on its way to its 60 s pause (a notification given before
        // it gets there is kept for it).
        let mut expected = enqueue_committed(&db, 1).await;
        relay.spawn(&workers);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while publisher.ids().is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the first pass never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        expected.extend(enqueue_committed(&db, 1).await);
        notifier.notify();
        while publisher.ids().len() < 2 {
            assert!(tokio::time::Instant::now() < deadline, "the notification woke nothing");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(publisher.ids(), expected);
        assert!(workers.shutdown(Duration::from_secs(5)).await, "the relay stops on shutdown");
    }
}
