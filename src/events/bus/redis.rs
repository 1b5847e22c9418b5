//! The bus on Redis (apalis-redis), every key under forma's key prefix.
//!
//! Workers are apalis-redis' own (fetch, acknowledgement, heartbeats, recovery of a dead worker's
//! jobs). Pushing is ours, one Lua script on apalis' key layout, for three reasons:
//! - apalis' push files every job in the scheduled set, due now, and each fetch moves the due ones
//!   to the waiting list first; ours appends to the waiting list directly;
//! - ours takes every queue of a batch in one atomic call: a batch lands everywhere or nowhere;
//! - ours publishes one wake-up per queue for the idle workers of every instance
//!   ([`super::wakeup`]).
//!
//! The waiting list keeps a queue's jobs in push order, which is the queue's FIFO; the ids come
//! from [`super::job_id`] so that they sort in that order too.

use std::collections::BTreeMap;
use std::sync::LazyLock;
use std::time::Duration;

use ::redis::Script;
use apalis::prelude::{BackendExt, WorkerBuilderExt};
use apalis_redis::{Config, ConnectionManager, RedisStorage};
use futures::StreamExt;

use super::wakeup::Wakeups;
use super::{
    BusError, HEARTBEAT, MAX_ATTEMPTS, MISSED_HEARTBEATS, QueueHandler, RESTART_DELAY, RunWorker,
    job_id, retry_policy, run_worker, spawn_worker, worker_name,
};
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;

/// Jobs a worker takes per fetch: more than it runs at once, because the round trips, not the
/// handlers, are the limit with small fetches (benches/bus.sh: about 19 000 events/s with 20 or 50
/// per fetch, 31 000 with 100). The price: a burst of fewer than this many events goes to one
/// instance, five at a time, while another instance of the same consumer may sit idle. A worker
/// that dies holding jobs gives them back after its heartbeat deadline.
const FETCH_BATCH: usize = 100;

/// Appends jobs to the waiting lists of one or more queues, in order, atomically, and wakes their
/// workers. The job's metadata is what apalis' fetch reads back (attempts, max_attempts, status).
///
/// KEYS: four per queue: its data hash, waiting list, signal list and metadata key prefix.
/// ARGV[1]: the wake-up channel; ARGV[2]: max attempts; then per queue, in KEYS order: the queue's
/// name, its job count n, and n pairs (id, payload).
static PUSH: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local channel, max_attempts, a = ARGV[1], ARGV[2], 3
for q = 0, #KEYS / 4 - 1 do
  local data, waiting, signal, meta = KEYS[q * 4 + 1], KEYS[q * 4 + 2], KEYS[q * 4 + 3], KEYS[q * 4 + 4]
  local queue, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    local id = ARGV[a]
    if redis.call('HSETNX', data, id, ARGV[a + 1]) == 1 then
      redis.call('HSET', meta .. ':' .. id, 'attempts', 0, 'max_attempts', max_attempts, 'status', 'Pending')
      redis.call('RPUSH', waiting, id)
    end
    a = a + 2
  end
  redis.call('DEL', signal)
  redis.call('LPUSH', signal, 1)
  redis.call('PUBLISH', channel, queue)
end
",
    )
});

#[derive(Clone)]
pub(super) struct RedisBus {
    pub(super) conn: ConnectionManager,
    handle: RedisHandle,
    pub(super) wakeups: Wakeups,
}

impl RedisBus {
    pub(super) async fn connect(redis: &RedisHandle) -> Result<Self, BusError> {
        let conn = redis
            .manager()
            .await
            .map_err(|e| BusError::Setup(e.to_string()))?;
        Ok(Self {
            conn,
            handle: redis.clone(),
            wakeups: Wakeups::default(),
        })
    }

    /// apalis derives all of a queue's keys (`{queue}:active`, `:dead`, …) from its name, so the
    /// prefix in the name keeps tests and deployments sharing a Redis apart.
    ///
    /// Two apalis defaults are turned off because they cost more than everything else together:
    /// `lock_tasks` runs an `LREM` over the whole waiting list for every job it starts (quadratic
    /// in the backlog: 4 500 events/s at 20 000 waiting, 28 000 without), to remove ids its own
    /// fetch already took off the list; `emit_events` publishes every job's every state change to
    /// channels nobody listens to. A fetched job is in its worker's in-flight set either way, which
    /// is what crash recovery reads.
    pub(super) fn config(&self, queue: &str) -> Config {
        Config::default()
            .queue(self.handle.key(&format!("bus:{queue}")))
            .batch_size(FETCH_BATCH)
            .heartbeat_interval(HEARTBEAT)
            .missed_heartbeats(MISSED_HEARTBEATS)
            .lock_tasks(false)
            .emit_events(false)
    }

    /// The channel on which pushes announce a queue's new jobs (the message is the queue's name).
    pub(super) fn wakeup_channel(&self) -> String {
        self.handle.key("bus:wakeup")
    }

    /// One script call for the whole batch, keeping its order within each queue.
    pub(super) async fn push(&self, jobs: &[(String, Vec<u8>)]) -> Result<(), BusError> {
        let mut by_queue: BTreeMap<&str, Vec<&[u8]>> = BTreeMap::new();
        for (queue, payload) in jobs {
            by_queue.entry(queue.as_str()).or_default().push(payload);
        }
        let mut invocation = PUSH.prepare_invoke();
        invocation.arg(self.wakeup_channel()).arg(MAX_ATTEMPTS);
        for (queue, payloads) in by_queue {
            let config = self.config(queue);
            invocation
                .key(config.job_data_hash())
                .key(config.active_jobs_list())
                .key(config.signal_list())
                .key(config.job_meta_hash())
                .arg(queue)
                .arg(payloads.len());
            for payload in payloads {
                invocation.arg(job_id::next().to_string()).arg(payload);
            }
        }
        let mut conn = self.conn.clone();
        invocation
            .invoke_async::<()>(&mut conn)
            .await
            .map_err(|e| BusError::Storage(e.to_string()))
    }

    pub(super) fn start(
        &self,
        workers: &Workers,
        queue: &str,
        handler: QueueHandler,
    ) -> Result<(), BusError> {
        let (conn, config) = (self.conn.clone(), self.config(queue));
        let policy = retry_policy()?;
        let (wakeups, queue_name) = (self.wakeups.clone(), queue.to_owned());
        let run: RunWorker = Box::new(move |stop| {
            let storage = RedisStorage::<serde_json::Value>::new(conn.clone())
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
        spawn_worker(workers, "event-bus-redis", queue, run);
        Ok(())
    }

    /// Passes the wake-ups published by every instance's pushes to this instance's workers, until
    /// `workers` shuts down. A subscription lost with Redis is opened again after a pause; every
    /// worker is woken once it is back, for what was pushed meanwhile.
    pub(super) fn spawn_wakeup_listener(&self, workers: &Workers) {
        let (handle, channel, wakeups) = (
            self.handle.clone(),
            self.wakeup_channel(),
            self.wakeups.clone(),
        );
        workers.spawn("event-bus-wakeups", move |token| async move {
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    ended = listen(&handle, &channel, &wakeups) => match ended {
                        Ok(()) => tracing::debug!("event bus wake-ups: subscription ended"),
                        Err(error) => tracing::debug!(%error, "event bus wake-ups: no subscription"),
                    },
                }
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(RESTART_DELAY) => {}
                }
            }
        });
    }
}

/// How long connecting and subscribing may take before the listener gives up and tries again.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Subscribes to `channel` and wakes the queue named by each message, until the connection ends.
async fn listen(handle: &RedisHandle, channel: &str, wakeups: &Wakeups) -> Result<(), BusError> {
    let subscribe = async {
        let mut pubsub = handle
            .pubsub()
            .await
            .map_err(|e| BusError::Storage(e.to_string()))?;
        pubsub
            .subscribe(channel)
            .await
            .map_err(|e| BusError::Storage(e.to_string()))?;
        Ok::<_, BusError>(pubsub)
    };
    let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe)
        .await
        .map_err(|_| {
            BusError::Storage(format!("no subscription within {SUBSCRIBE_TIMEOUT:?}"))
        })??;
    // Jobs pushed while nobody listened announced themselves to no one.
    wakeups.notify_all();
    let mut messages = pubsub.into_on_message();
    while let Some(message) = messages.next().await {
        if let Ok(queue) = message.get_payload::<String>() {
            wakeups.notify(&queue);
        }
    }
    Ok(())
}
