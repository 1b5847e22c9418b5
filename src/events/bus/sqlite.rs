//! The bus on our own SQLite file (apalis-sqlite's `Jobs` and `Workers` tables).

use apalis::prelude::{BackendExt, WorkerBuilder, WorkerBuilderExt, WorkerError};
use apalis_core::task::builder::TaskBuilder;
use apalis_sqlite::{Config, SqliteStorage};
use sqlx::SqlitePool;

use super::{
    BusError, CONCURRENCY, HEARTBEAT, Handler, MAX_ATTEMPTS, MISSED_HEARTBEATS, POLL_INTERVAL,
    retry_policy, task_fn, worker_name,
};
use crate::infra::workers::Workers;

pub(super) struct SqliteBus {
    pool: SqlitePool,
}

impl SqliteBus {
    /// Creates apalis' tables. Its `SqliteStorage::setup()` is deliberately not called: besides the
    /// migrations it sets `PRAGMA synchronous = OFF` on a pooled connection, after which an
    /// acknowledged event could vanish on power loss. Our pool already runs WAL with
    /// `synchronous = NORMAL`. apalis records its migrations in `_sqlx_migrations`, ours in
    /// `forma_migrations`, so the two migrators do not see each other's versions.
    pub(super) async fn setup(pool: SqlitePool) -> Result<Self, BusError> {
        SqliteStorage::migrations()
            .run(&pool)
            .await
            .map_err(|e| BusError::Setup(format!("apalis-sqlite migrations: {e}")))?;
        Ok(Self { pool })
    }

    fn config(queue: &str) -> Config {
        Config::default()
            .queue(queue)
            .batch_size(CONCURRENCY)
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    /// Pushes every job of a batch in one transaction: all or none, in order.
    pub(super) async fn push(&self, jobs: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        let storage = |e: apalis_sqlite::Error| BusError::Storage(e.to_string());
        let mut tx = self
            .pool
            .begin()
            .await
            .map_err(|e| BusError::Storage(e.to_string()))?;
        for (queue, payload) in jobs {
            // max_attempts must match the worker's retries: apalis-sqlite re-picks a `Failed` job
            // at once, with no backoff, while attempts < max_attempts (default 25).
            let task = TaskBuilder::new(payload.clone())
                .max_attempts(MAX_ATTEMPTS)
                .build();
            apalis_sqlite::queries::push_tasks(&mut *tx, queue, &[task])
                .await
                .map_err(storage)?;
        }
        tx.commit()
            .await
            .map_err(|e| BusError::Storage(e.to_string()))
    }

    pub(super) fn start(
        &self,
        workers: &Workers,
        queue: &str,
        handler: Handler,
    ) -> Result<(), BusError> {
        let storage = SqliteStorage::<serde_json::Value>::new(&self.pool)
            .with_config(Self::config(queue))
            .poll_with_interval(POLL_INTERVAL);
        let worker = WorkerBuilder::new(worker_name(queue))
            .backend(storage)
            .concurrency(CONCURRENCY)
            .retry(retry_policy()?)
            .build(task_fn(handler));
        let queue = queue.to_owned();
        workers.spawn("event-bus-sqlite", move |token| async move {
            let stop = async move {
                token.cancelled().await;
                Ok::<(), WorkerError>(())
            };
            if let Err(error) = worker.run_until(stop).await {
                tracing::error!(%queue, %error, "event bus worker stopped with an error");
            }
        });
        Ok(())
    }

    /// Dead = killed on its last attempt, or failed with no attempt left.
    pub(super) async fn dead_jobs(&self, queue: &str) -> Result<u64, BusError> {
        let count: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM Jobs WHERE job_type = $1 \
             AND (status = 'Killed' OR (status = 'Failed' AND attempts >= max_attempts))",
        )
        .bind(queue)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| BusError::Storage(e.to_string()))?;
        Ok(u64::try_from(count).unwrap_or_default())
    }
}
