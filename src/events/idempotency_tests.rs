//! Idempotent handling on both databases.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use uuid::Uuid;

use super::{Outcome, first_time, forget_expired, forget_processed_before, handle_once};
use crate::each_database;
use crate::events::bridge::ORDER_SERVICE;
use crate::events::catalog::{Event, EventPayload, ShipmentCreated};
use crate::infra::db::{Backend, Db, DbError, Tx};
use crate::testing::TestDatabase;
use crate::{on_pool, on_tx};

const FULFILLMENT: &str = "order.fulfillment";
const NOTIFICATIONS: &str = "order.notifications";

/// A migrated database with a scratch table standing in for a handler's own writes.
async fn database(backend: Backend) -> (TestDatabase, Db) {
    let database = TestDatabase::create(backend).await;
    let db = Db::connect(&database.url, 5).await.unwrap();
    db.migrate().await.unwrap();
    on_pool!(&db, pool => {
        sqlx::query("CREATE TABLE handled (event_id TEXT NOT NULL, consumer TEXT NOT NULL)")
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })
    .unwrap();
    (database, db)
}

fn event() -> Event {
    let payload = EventPayload::ShipmentCreated(ShipmentCreated {
        shipment_id: Uuid::new_v4().to_string(),
        order_id: Uuid::new_v4().to_string(),
        tracking_number: None,
        tracking_url: None,
        carrier: None,
    });
    Event::new(ORDER_SERVICE, Uuid::new_v4().to_string(), payload)
}

/// The handler's write: one row in the scratch table.
async fn record(tx: &mut Tx, event_id: Uuid, consumer: &str) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query("INSERT INTO handled (event_id, consumer) VALUES ($1, $2)")
            .bind(event_id.to_string())
            .bind(consumer)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

async fn count(db: &Db, sql: &'static str) -> i64 {
    on_pool!(db, pool => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await).unwrap()
}

#[derive(Debug, thiserror::Error)]
enum HandlerError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("the handler refused the event")]
    Refused,
}

each_database! {
    async fn first_time_is_true_only_for_the_first_record_of_an_event_and_consumer(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let id = Uuid::new_v4();
        let mut tx = db.begin().await.unwrap();
        assert!(first_time(&mut tx, id, FULFILLMENT).await.unwrap());
        assert!(!first_time(&mut tx, id, FULFILLMENT).await.unwrap());
        assert!(first_time(&mut tx, id, NOTIFICATIONS).await.unwrap());
        tx.commit().await.unwrap();
    }
}

each_database! {
    async fn the_same_event_runs_a_consumers_writes_once_while_another_consumer_handles_it_too(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let event = event();
        let id = event.event_id;
        for (consumer, expected) in [
            (FULFILLMENT, Outcome::Handled),
            (FULFILLMENT, Outcome::Duplicate),
            (NOTIFICATIONS, Outcome::Handled),
            (NOTIFICATIONS, Outcome::Duplicate),
        ] {
            let outcome = handle_once(&db, &event, consumer, |tx| {
                Box::pin(async move { record(tx, id, consumer).await })
            })
            .await
            .unwrap();
            assert_eq!(outcome, expected, "{consumer}");
        }
        assert_eq!(count(&db, "SELECT COUNT(*) FROM handled").await, 2);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM processed_events").await, 2);
    }
}

each_database! {
    async fn a_handler_error_rolls_back_its_writes_and_the_dedupe_record_so_a_retry_runs(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let event = event();
        let id = event.event_id;
        let failed = handle_once(&db, &event, FULFILLMENT, |tx| {
            Box::pin(async move {
                record(tx, id, FULFILLMENT).await?;
                Err::<(), _>(HandlerError::Refused)
            })
        })
        .await;
        assert!(matches!(failed, Err(HandlerError::Refused)), "{failed:?}");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM handled").await, 0, "the write is undone");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM processed_events").await, 0);

        let retried = handle_once(&db, &event, FULFILLMENT, |tx| {
            Box::pin(async move { Ok::<_, HandlerError>(record(tx, id, FULFILLMENT).await?) })
        })
        .await
        .unwrap();
        assert_eq!(retried, Outcome::Handled);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM handled").await, 1);
    }
}

each_database! {
    async fn concurrent_deliveries_of_one_event_run_the_handler_once(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let event = event();
        let deliveries = (0..4).map(|_| {
            let (db, event) = (db.clone(), event.clone());
            tokio::spawn(async move {
                let id = event.event_id;
                handle_once(&db, &event, FULFILLMENT, |tx| {
                    Box::pin(async move {
                        record(tx, id, FULFILLMENT).await?;
                        // Keep the transaction open so the deliveries overlap.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, DbError>(())
                    })
                })
                .await
            })
        });
        let mut outcomes = Vec::new();
        for delivery in futures::future::join_all(deliveries).await {
            outcomes.push(delivery.unwrap().unwrap());
        }
        assert_eq!(outcomes.iter().filter(|o| **o == Outcome::Handled).count(), 1, "{outcomes:?}");
        assert_eq!(count(&db, "SELECT COUNT(*) FROM handled").await, 1);
    }
}

each_database! {
    async fn dedupe_records_past_retention_are_forgotten(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let mut tx = db.begin().await.unwrap();
        for _ in 0..5 {
            first_time(&mut tx, Uuid::new_v4(), FULFILLMENT).await.unwrap();
            first_time(&mut tx, Uuid::new_v4(), NOTIFICATIONS).await.unwrap();
        }
        tx.commit().await.unwrap();

        assert_eq!(forget_expired(&db, &Default::default()).await.unwrap(), 0, "a week has not passed");
        // A statement deletes at most its batch, so other writers get their turn in between.
        let later = Utc::now() + TimeDelta::seconds(1);
        let mut deleted = Vec::new();
        for _ in 0..4 {
            deleted.push(forget_processed_before(&db, later, 4).await.unwrap());
        }
        assert_eq!(deleted, [4, 4, 2, 0]);
        assert_eq!(count(&db, "SELECT COUNT(*) FROM processed_events").await, 0);
    }
}
