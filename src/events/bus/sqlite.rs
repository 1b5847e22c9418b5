//! The bus on our own SQLite file (apalis-sqlite's `Jobs` and `Workers` tables).

use apalis::prelude::{BackendExt, WorkerBuilderExt};
use apalis_core::task::builder::TaskBuilder;
use apalis_core::task::task_id::TaskId;
use apalis_sqlite::{Config, SqliteStorage};
use sqlx::SqlitePool;

use super::sql_trim::{self, TrimSql, state_trim};
use super::stats::{JobState, JobView, QueueStats, last_error, payload_json, unix_time};
use super::wakeup::Wakeups;
use super::{
    BusError, HEARTBEAT, MAX_ATTEMPTS, MISSED_HEARTBEATS, QueueHandler, RunWorker, job_id,
    retry_policy, run_worker, spawn_worker, worker_name,
};
use crate::infra::db::Db;
use crate::infra::workers::Workers;

/// Jobs a worker takes per fetch. Every fetch is a write (it locks the jobs under the worker's
/// name) and SQLite has one writer, so a fetch per job would queue the worker behind every
/// publisher; a large fetch would hold jobs that another worker could run.
const FETCH_BATCH: usize = 20;

/// A finished job is locked by nobody. apalis-sqlite leaves `lock_by` set on finished jobs, and
/// its acknowledgement (`UPDATE Jobs … FROM json_each(?) WHERE Jobs.id = … AND lock_by = ?`) is
/// planned as a walk of the `lock_by` index with the JSON re-read for every row: every job the
/// worker ever finished (until retention) times every job it acknowledges. That made the SQLite
/// bus quadratic, 214 events/s through a 20 000 backlog. With `lock_by` cleared as jobs finish,
/// the walk covers only the handful of jobs the worker holds. Crash recovery reads `lock_by` only
/// on `Queued` and `Running` jobs.
const UNLOCK_FINISHED: &str = "CREATE TRIGGER IF NOT EXISTS forma_jobs_unlock_finished \
    AFTER UPDATE OF status ON Jobs \
    WHEN NEW.lock_by IS NOT NULL AND NEW.status NOT IN ('Queued', 'Running') \
    BEGIN UPDATE Jobs SET lock_by = NULL WHERE rowid = NEW.rowid; END";

/// How each dashboard state reads in apalis-sqlite's columns: one definition for the counts, the
/// listings, the retry of a dead job and retention.
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
pub(super) struct SqliteBus {
    pool: SqlitePool,
    /// Workers of this process are woken by its own pushes (the relay runs in the process that
    /// owns the file).
    wakeups: Wakeups,
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
        sqlx::query(UNLOCK_FINISHED)
            .execute(&pool)
            .await
            .map_err(|e| BusError::Setup(format!("the Jobs trigger: {e}")))?;
        Ok(Self {
            pool,
            wakeups: Wakeups::default(),
        })
    }

    /// `lock_tasks` is off: it marks each started job `Running`, one more write per batch through
    /// the single writer, and nothing of ours reads the difference. A fetched job is `Queued`
    /// under its worker's name either way, which is what crash recovery looks for.
    fn config(queue: &str) -> Config {
        Config::default()
            .queue(queue)
            .batch_size(FETCH_BATCH)
            .lock_tasks(false)
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    /// Pushes every job of a batch in one transaction: all or none, in order, then wakes this
    /// process's workers of the queues that got jobs.
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
                .task_id(TaskId::from_ulid(job_id::next()))
                .max_attempts(MAX_ATTEMPTS)
                .build();
            apalis_sqlite::queries::push_tasks(&mut *tx, queue, &[task])
                .await
                .map_err(storage)?;
        }
        tx.commit()
            .await
            .map_err(|e| BusError::Storage(e.to_string()))?;
        let queues: std::collections::BTreeSet<&str> =
            jobs.iter().map(|(queue, _)| queue.as_str()).collect();
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
            let storage = SqliteStorage::<serde_json::Value>::new(&pool)
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
        spawn_worker(workers, "event-bus-sqlite", queue, run);
        Ok(())
    }

    /// Fills in the counts of `all` (the queues of the subscription table) in one query.
    pub(super) async fn stats(&self, all: &mut [QueueStats]) -> Result<(), BusError> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(concat!(
            "SELECT job_type, SUM(",
            state_sql!(waiting),
            "), SUM(",
            state_sql!(active),
            "), SUM(",
            state_sql!(completed),
            "), SUM(",
            state_sql!(failed),
            "), SUM(",
            state_sql!(dead),
            ") FROM Jobs GROUP BY job_type"
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
            i64,
            i64,
            Vec<u8>,
            Option<String>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<Row> = sqlx::query_as(concat!(
            "SELECT id, status, attempts, max_attempts, job, last_result, run_at, done_at \
             FROM Jobs WHERE job_type = $1 AND CASE $2 WHEN 'waiting' THEN ",
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
             ORDER BY CASE WHEN $2 IN ('waiting', 'active') THEN -priority ELSE 0 END, \
               CASE WHEN $2 IN ('waiting', 'active') THEN run_at \
               ELSE -COALESCE(done_at, run_at) END, \
               CASE WHEN $2 IN ('waiting', 'active') THEN id END, \
               CASE WHEN $2 IN ('waiting', 'active') THEN NULL ELSE -rowid END \
             LIMIT $3"
        ))
        .bind(queue)
        .bind(state.as_str())
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(storage)?;
        let count = |n: i64| u64::try_from(n).unwrap_or_default();
        Ok(rows
            .into_iter()
            .map(
                |(id, status, attempts, max_attempts, job, result, run_at, done_at)| JobView {
                    id,
                    status,
                    attempts: count(attempts),
                    max_attempts: Some(count(max_attempts)),
                    payload: payload_json(&job),
                    last_error: last_error(result.as_deref()),
                    run_at: unix_time(run_at),
                    done_at: unix_time(done_at),
                },
            )
            .collect())
    }

    /// Back to `Pending`, attempts 0, due now, and this process's workers woken: the next fetch
    /// of a worker of the queue takes it.
    pub(super) async fn retry_dead(&self, queue: &str, job_id: &str) -> Result<bool, BusError> {
        let done = sqlx::query(concat!(
            "UPDATE Jobs SET status = 'Pending', attempts = 0, run_at = strftime('%s', 'now'), \
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
        let db = Db::Sqlite(self.pool.clone());
        sql_trim::trim(&db, &TRIM_SQL, completed_keep, dead_keep).await
    }
}

/// Retention's SQL on `Jobs`.
const TRIM_SQL: TrimSql = TrimSql {
    queues: "SELECT DISTINCT job_type FROM Jobs",
    completed: state_trim!("Jobs", "rowid", state_sql!(completed)),
    dead: state_trim!("Jobs", "rowid", state_sql!(dead)),
};

fn storage(e: sqlx::Error) -> BusError {
    BusError::Storage(e.to_string())
}
