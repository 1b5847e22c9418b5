//! Our SQL (SQLite, PostgreSQL) and Lua (Redis) read and write apalis' private storage directly:
//! the trigger, the dashboard's counts and listings, the retry of a dead job, retention, our push
//! script. The
//! crates are pinned to exact versions for that reason (Cargo.toml); this test states the layout we
//! rely on and fails, naming what moved, the day an upgrade changes it.

use std::collections::BTreeSet;

use redis::AsyncCommands;

use super::stats::JobState;
use super::subscriptions::{consumers::PRINT, queue_name};
use super::tests::{Fixture, Kind};
use crate::events::catalog::{Event, EventPayload, OrderCancelled, names};
use crate::events::publish::EventPublisher;
use crate::infra::db::Db;

fn event() -> Event {
    Event::new(
        "order-service",
        uuid::Uuid::new_v4().to_string(),
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: uuid::Uuid::new_v4().to_string(),
        }),
    )
}

#[tokio::test]
async fn apalis_sqlite_keeps_the_jobs_table_our_sql_reads() {
    let fixture = Fixture::new(Kind::Sqlite).await;
    let bus = fixture.bus().await;
    let db = Db::connect(&fixture.sqlite.as_ref().unwrap().url, 1)
        .await
        .unwrap();
    let Db::Sqlite(pool) = &db else {
        unreachable!()
    };
    let columns: BTreeSet<String> =
        sqlx::query_scalar("SELECT name FROM pragma_table_info('Jobs')")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for column in [
        "id",
        "job_type",
        "status",
        "attempts",
        "max_attempts",
        "job",
        "last_result",
        "run_at",
        "done_at",
        "lock_by",
    ] {
        assert!(
            columns.contains(column),
            "apalis-sqlite's Jobs table lost `{column}`: {columns:?}"
        );
    }
    let triggers: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'Jobs'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        triggers.contains(&"forma_jobs_unlock_finished".to_owned()),
        "{triggers:?}"
    );

    bus.publish(&[event()]).await.unwrap();
    let queue = queue_name(names::ORDER_CANCELLED, PRINT);
    let (job_type, status): (String, String) =
        sqlx::query_as("SELECT job_type, status FROM Jobs WHERE job_type = $1")
            .bind(&queue)
            .fetch_one(pool)
            .await
            .expect("a pushed job is a row of Jobs named by its queue");
    assert_eq!(
        (job_type.as_str(), status.as_str()),
        (queue.as_str(), "Pending")
    );
    let waiting = bus.jobs(&queue, JobState::Waiting, 10).await.unwrap();
    assert_eq!(waiting.len(), 1, "the dashboard's SQL finds it waiting");
}

#[tokio::test]
async fn apalis_postgres_keeps_the_jobs_table_our_sql_reads() {
    let fixture = Fixture::new(Kind::Postgres).await;
    let bus = fixture.bus().await;
    let db = Db::connect(&fixture.postgres.as_ref().unwrap().url, 1)
        .await
        .unwrap();
    let Db::Postgres(pool) = &db else {
        unreachable!()
    };
    let columns: BTreeSet<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = 'apalis' AND table_name = 'jobs'",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    for column in [
        ("id", "text"),
        ("job_type", "text"),
        ("status", "text"),
        ("attempts", "integer"),
        ("max_attempts", "integer"),
        ("job", "bytea"),
        ("last_result", "jsonb"),
        ("run_at", "timestamp with time zone"),
        ("done_at", "timestamp with time zone"),
        ("lock_at", "timestamp with time zone"),
        ("lock_by", "text"),
    ] {
        let column = (column.0.to_owned(), column.1.to_owned());
        assert!(
            columns.contains(&column),
            "apalis-postgres's apalis.jobs lost or changed `{column:?}`: {columns:?}"
        );
    }

    bus.publish(&[event()]).await.unwrap();
    let queue = queue_name(names::ORDER_CANCELLED, PRINT);
    let (job_type, status): (String, String) =
        sqlx::query_as("SELECT job_type, status FROM apalis.jobs WHERE job_type = $1")
            .bind(&queue)
            .fetch_one(pool)
            .await
            .expect("a pushed job is a row of apalis.jobs named by its queue");
    assert_eq!(
        (job_type.as_str(), status.as_str()),
        (queue.as_str(), "Pending")
    );
    let waiting = bus.jobs(&queue, JobState::Waiting, 10).await.unwrap();
    assert_eq!(waiting.len(), 1, "the dashboard's SQL finds it waiting");
}

#[tokio::test]
async fn apalis_redis_keeps_the_keys_our_lua_reads() {
    let fixture = Fixture::new(Kind::Redis).await;
    let bus = fixture.bus().await;
    let redis = fixture.redis.as_ref().unwrap();
    bus.publish(&[event()]).await.unwrap();
    let queue = redis.key(&format!(
        "bus:{}",
        queue_name(names::ORDER_CANCELLED, PRINT)
    ));
    let mut conn = redis.connection().await.unwrap();
    let waiting: Vec<String> = conn.lrange(format!("{queue}:active"), 0, -1).await.unwrap();
    assert_eq!(
        waiting.len(),
        1,
        "a pushed job's id waits in `{{queue}}:active`"
    );
    let id = &waiting[0];
    let payload: Option<Vec<u8>> = conn.hget(format!("{queue}:data"), id).await.unwrap();
    assert!(
        payload.is_some(),
        "its payload is in the `{{queue}}:data` hash"
    );
    let meta_type: String = redis::cmd("TYPE")
        .arg(format!("{queue}:meta:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        meta_type, "hash",
        "its state is the `{{queue}}:meta:{{id}}` hash"
    );
    let stats = bus.queues().await.unwrap();
    let print = stats
        .iter()
        .find(|q| q.queue == queue_name(names::ORDER_CANCELLED, PRINT))
        .unwrap();
    assert_eq!(print.waiting, 1, "the dashboard's Lua counts it");
    let _: () = redis::cmd("EVAL")
        .arg("for _, k in ipairs(redis.call('KEYS', ARGV[1])) do redis.call('DEL', k) end")
        .arg(0)
        .arg(format!("{}*", redis.key("")))
        .query_async(&mut conn)
        .await
        .unwrap();
}
