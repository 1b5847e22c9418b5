//! The bus on Redis (apalis-redis), every key under forma's key prefix.

use std::collections::BTreeMap;

use apalis::prelude::{BackendExt, WorkerBuilderExt};
use apalis_core::task::builder::TaskBuilder;
use apalis_redis::{Config, ConnectionManager, RedisStorage};

use super::{
    BusError, HEARTBEAT, Handler, MAX_ATTEMPTS, MISSED_HEARTBEATS, REDIS_FETCH_BATCH,
    REDIS_POLL_INTERVAL, RunWorker, retry_policy, run_worker, spawn_worker, worker_name,
};
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;

#[derive(Clone)]
pub(super) struct RedisBus {
    pub(super) conn: ConnectionManager,
    handle: RedisHandle,
}

impl RedisBus {
    pub(super) async fn connect(redis: &RedisHandle) -> Result<Self, BusError> {
        let conn = redis
            .connection()
            .await
            .map_err(|e| BusError::Setup(e.to_string()))?;
        Ok(Self {
            conn,
            handle: redis.clone(),
        })
    }

    /// apalis derives all of a queue's keys (`{queue}:active`, `:dead`, …) from its name, so the
    /// prefix in the name keeps tests and deployments sharing a Redis apart.
    pub(super) fn config(&self, queue: &str) -> Config {
        Config::default()
            .queue(self.handle.key(&format!("bus:{queue}")))
            .batch_size(REDIS_FETCH_BATCH)
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
    }

    /// One script call per queue, keeping the batch's order within each queue. Redis cannot make
    /// the queues atomic together: if a later queue fails, the relay offers the batch again and
    /// the earlier queues get duplicates, which consumers drop by `eventId`.
    pub(super) async fn push(&self, jobs: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        let mut by_queue: BTreeMap<&str, Vec<_>> = BTreeMap::new();
        for (queue, payload) in jobs {
            by_queue.entry(queue.as_str()).or_default().push(
                TaskBuilder::new(payload.clone())
                    .max_attempts(MAX_ATTEMPTS)
                    .build(),
            );
        }
        let mut conn = self.conn.clone();
        for (queue, tasks) in by_queue {
            apalis_redis::queries::push_tasks(&mut conn, &self.config(queue), &tasks)
                .await
                .map_err(|e| BusError::Storage(e.to_string()))?;
        }
        Ok(())
    }

    pub(super) fn start(
        &self,
        workers: &Workers,
        queue: &str,
        handler: Handler,
    ) -> Result<(), BusError> {
        let (conn, config) = (self.conn.clone(), self.config(queue));
        let (policy, name) = (retry_policy()?, worker_name(queue));
        let run: RunWorker = Box::new(move |stop| {
            let storage = RedisStorage::<serde_json::Value>::new(conn.clone())
                .with_config(config.clone())
                .poll_with_interval(REDIS_POLL_INTERVAL);
            Box::pin(run_worker!(
                name.clone(),
                storage,
                policy.clone(),
                handler.clone(),
                stop
            ))
        });
        spawn_worker(workers, "event-bus-redis", queue, run);
        Ok(())
    }
}
