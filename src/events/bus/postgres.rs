//! The bus on PostgreSQL (apalis-postgres's `apalis.jobs` and `apalis.workers` tables): what a
//! deployment on PostgreSQL without Redis runs (SPEC §2), with the delivery contract of the other
//! two backends.
//!
//! Pushes run in one transaction and announce their queues with `pg_notify` on
//! [`WAKEUP_CHANNEL`], delivered at commit to every instance's listener, which wakes its idle
//! workers of those queues (as Redis's pub/sub does for the Redis bus). A lost wake-up costs a
//! poll interval, never a job.

use std::collections::BTreeSet;

use apalis::prelude::{BackendExt, WorkerBuilderExt};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_postgres::{Config, PostgresStorage};
use chrono::{DateTime, Utc};
use sqlx::PgPool;

use super::sql_trim::{self, TrimSql, state_trim};
use super::stats::{JobState, JobView, QueueStats, last_error, payload_json};
use super::wakeup::Wakeups;
use super::{
    BusError, HEARTBEAT, MAX_ATTEMPTS, MISSED_HEARTBEATS, QueueHandler, RESTART_DELAY, RunWorker,
    job_id, retry_policy, run_worker, spawn_worker, worker_name,
};
use crate::infra::db::Db;
use crate::infra::workers::Workers;

/// The notification channel of this bus's pushes; the payload is the queue's name.
const WAKEUP_CHANNEL: &str = "forma_bus_wakeup";

/// Jobs a worker takes per fetch (as on SQLite: a fetch is a write).
const FETCH_BATCH: usize = 20;

/// How each dashboard state reads in apalis-postgres's columns (the same statuses as apalis-sqlite).
macro_rules! state_sql {
    (waiting) => {
        "status = 'Pending'"
    };
    (active) => {
        "status IN ('Queued', 'Running')"
    };
    (completed) => {
        "status = 'Done'"
    };
    (failed) => {
        "(status = 'Failed' AND attempts < max_attempts)"
    };
    (dead) => {
        "(status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))"
    };
}

#[derive(Clone)]
pub(super) struct PostgresBus {
    pool: PgPool,
    wakeups: Wakeups,
}

impl PostgresBus {
    /// Runs apalis-postgres's migrations (its own `apalis` schema and migration table; ours are in
    /// `forma_migrations`). They create the `hstore` and `pgcrypto` extensions: the database role
    /// needs the right to, once.
    pub(super) async fn setup(pool: PgPool) -> Result<Self, BusError> {
        PostgresStorage::setup(&pool)
            .await
            .map_err(|e| BusError::Setup(format!("apalis-postgres migrations: {e}")))?;
        Ok(Self {
            pool,
            wakeups: Wakeups::default(),
        })
    }

    /// `lock_tasks` off, as on the other backends: a fetched job is `Queued` under its worker's
    /// name either way, which is what crash recovery looks for.
    fn config(queue: &str) -> Config {
        Config::default()
            .queue(queue)
            .batch_size(FETCH_BATCH)
            .lock_tasks(false)
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    /// Pushes every job of a batch in one transaction (all or none, in order) and announces the
    /// queues that got jobs, to this instance's workers at once and to the others at commit.
    pub(super) async fn push(&self, jobs: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        let mut tx = self.pool.begin().await.map_err(storage)?;
        for (queue, payload) in jobs {
            // max_attempts must match the worker's retries, as on SQLite.
            let task = TaskBuilder::new(payload.clone())
                .task_id(TaskId::from_ulid(job_id::next()))
                .max_attempts(MAX_ATTEMPTS)
                .build();
            apalis_postgres::queries::push_tasks(&mut *tx, queue, vec![task])
                .await
                .map_err(|e| BusError::Storage(e.to_string()))?;
        }
        let queues: BTreeSet<&str> = jobs.iter().map(|(queue, _)| queue.as_str()).collect();
        for queue in &queues {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WAKEUP_CHANNEL)
                .bind(*queue)
                .execute(&mut *tx)
                .await
                .map_err(storage)?;
        }
        tx.commit().await.map_err(storage)?;
        for queue in queues {
            self.wakeups.notify(queue);
        }
        Ok(())
    }

    pub(super) fn start(
        &self,
        workers: &Workers,
        queue: &str,
        handler: QueueHandler,
    ) -> Result<(), BusError> {
        let (pool, config) = (self.pool.clone(), Self::config(queue));
        let policy = retry_policy()?;
        let (wakeups, queue_name) = (self.wakeups.clone(), queue.to_owned());
        let run: RunWorker = Box::new(move |stop| {
            let storage = PostgresStorage::<serde_json::Value>::new(&pool)
                .with_config(config.clone())
                .poll_with_strategy(wakeups.strategy(&queue_name));
            Box::pin(run_worker!(
                worker_name(&queue_name),
                storage,
                policy.clone(),
                handler.clone(),
                stop
            ))
        });
        spawn_worker(workers, "event-bus-postgres", queue, run);
        Ok(())
    }

    /// Listens to [`WAKEUP_CHANNEL`] on a connection of its own until shutdown, reconnecting after
    /// a lost connection.
    pub(super) fn spawn_wakeup_listener(&self, workers: &Workers) {
        let (pool, wakeups) = (self.pool.clone(), self.wakeups.clone());
        workers.spawn("event-bus-wakeups", move |token| async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    ended = listen(&pool, &wakeups) => {
                        tracing::debug!(error = ?ended.err(), "event bus wake-ups: listener ended");
                    }
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(RESTART_DELAY) => {}
                }
            }
        });
    }

    /// Fills in the counts of `all` (the queues of the subscription table) in one query.
    pub(super) async fn stats(&self, all: &mut [QueueStats]) -> Result<(), BusError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(concat!(
            "SELECT job_type, COUNT(*) FILTER (WHERE ",
            state_sql!(waiting),
            "), COUNT(*) FILTER (WHERE ",
            state_sql!(active),
            "), COUNT(*) FILTER (WHERE ",
            state_sql!(completed),
            "), COUNT(*) FILTER (WHERE ",
            state_sql!(failed),
            "), COUNT(*) FILTER (WHERE ",
            state_sql!(dead),
            ") FROM apalis.jobs GROUP BY job_type"
        ))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        for (queue, waiting, active, completed, failed, dead) in rows {
            if let Some(stats) = all.iter_mut().find(|s| s.queue == queue) {
                stats.waiting = count(waiting);
                stats.active = count(active);
                stats.completed = count(completed);
                stats.failed = count(failed);
                stats.dead = count(dead);
            }
        }
        Ok(())
    }

    pub(super) async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobView>, BusError> {
        type Row = (
            String,
            String,
            i32,
            i32,
            Vec<u8>,
            Option<serde_json::Value>,
            Option<DateTime<Utc>>,
            Option<DateTime<Utc>>,
        );
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT id, status, attempts, max_attempts, job, last_result, run_at, done_at \
             FROM apalis.jobs WHERE job_type = $1 AND CASE $2 WHEN 'waiting' THEN ",
            state_sql!(waiting),
            " WHEN 'active' THEN ",
            state_sql!(active),
            " WHEN 'completed' THEN ",
            state_sql!(completed),
            " WHEN 'failed' THEN ",
            state_sql!(failed),
            " ELSE ",
            state_sql!(dead),
            " END \
             ORDER BY CASE WHEN $2 IN ('waiting', 'active') THEN id END ASC, \
               CASE WHEN $2 IN ('waiting', 'active') THEN NULL ELSE id END DESC \
             LIMIT $3"
        ))
        .bind(queue)
        .bind(state.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        let count = |n: i32| u64::try_from(n).unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(
                |(id, status, attempts, max_attempts, job, result, run_at, done_at)| JobView {
                    id,
                    status,
                    attempts: count(attempts),
                    max_attempts: Some(count(max_attempts)),
                    payload: payload_json(&job),
                    last_error: last_error(result.map(|r| r.to_string()).as_deref()),
                    run_at,
                    done_at,
                },
            )
            .collect())
    }

    /// Back to `Pending`, attempts 0, due now, and every instance's workers of the queue woken.
    pub(super) async fn retry_dead(&self, queue: &str, job_id: &str) -> Result<bool, BusError> {
        let done = sqlx::query(concat!(
            "UPDATE apalis.jobs SET status = 'Pending', attempts = 0, run_at = now(), \
             done_at = NULL, lock_by = NULL, lock_at = NULL, last_result = NULL \
             WHERE id = $1 AND job_type = $2 AND ",
            state_sql!(dead)
        ))
        .bind(job_id)
        .bind(queue)
        .execute(&self.pool)
        .await
        .map_err(storage)?;
        let retried = done.rows_affected() == 1;
        if retried {
            let _ = sqlx::query("SELECT pg_notify($1, $2)")
                .bind(WAKEUP_CHANNEL)
                .bind(queue)
                .execute(&self.pool)
                .await;
            self.wakeups.notify(queue);
        }
        Ok(retried)
    }

    /// Retention ([`sql_trim`](super::sql_trim)) on this backend's table.
    pub(super) async fn trim(
        &self,
        completed_keep: usize,
        dead_keep: usize,
    ) -> Result<u64, BusError> {
        let db = Db::Postgres(self.pool.clone());
        sql_trim::trim(&db, &TRIM_SQL, completed_keep, dead_keep).await
    }
}

/// Retention's SQL on `apalis.jobs`.
const TRIM_SQL: TrimSql = TrimSql {
    queues: "SELECT DISTINCT job_type FROM apalis.jobs",
    completed: state_trim!("apalis.jobs", "id", state_sql!(completed)),
    dead: state_trim!("apalis.jobs", "id", state_sql!(dead)),
};

/// Wakes the queue named by each notification on [`WAKEUP_CHANNEL`] until the connection ends.
async fn listen(pool: &PgPool, wakeups: &Wakeups) -> Result<(), BusError> {
    let mut listener = sqlx::postgres::PgListener::connect_with(pool)
        .await
        .map_err(storage)?;
    listener.listen(WAKEUP_CHANNEL).await.map_err(storage)?;
    // A reconnect may have missed notifications: look once, now.
    wakeups.notify_all();
    loop {
        let notification = listener.recv().await.map_err(storage)?;
        wakeups.notify(notification.payload());
    }
}

fn storage(e: sqlx::Error) -> BusError {
    BusError::Storage(e.to_string())
}
