//! The event bus (SPEC §8.1): apalis queues on the SQLite file (embedded default, durable across
//! restarts) or on Redis (several instances), chosen once at start-up.
//!
//! Fan-out is done by the publisher: every event is pushed once into the queue of every subscribing
//! service ([`subscriptions`]), so each service sees every event while replicas of one service
//! compete for the jobs of its queue. Delivery is at-least-once: handlers must be idempotent
//! ([`super::idempotency::handle_once`]).
//!
//! A queue hands its jobs out in push order ([`job_id`]), up to [`CONCURRENCY`] at a time per
//! instance. Idle workers do not poll every few milliseconds: a push wakes them ([`wakeup`]).
//!
//! Retries run inside the worker (tower's retry layer: 3 attempts, 1 s then 2 s apart). The last
//! failure is returned as apalis' `AbortError`, which both backends record as `Killed`: on Redis
//! that is the only way into the dead set (any other failure is rescheduled until a hard-coded 25
//! attempts), on SQLite it keeps the job from being picked again.

mod handler;
mod job_id;
mod postgres;
mod redis;
mod redis_admin;
mod sql_trim;
mod sqlite;
mod stats;
pub mod subscriptions;
mod upkeep;
mod wakeup;

pub use stats::{JobState, JobView, QueueStats, record_metrics};
#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::layers::retry::backoff::{ExponentialBackoff, ExponentialBackoffMaker, MakeBackoff};
use apalis::layers::retry::{BackoffRetryPolicy, HasherRng, RetryPolicy};
use apalis::prelude::WorkerError;
use async_trait::async_trait;
use futures::future::BoxFuture;
use sqlx::SqlitePool;

use super::catalog::Event;
use super::publish::{EventPublisher, PublishError};
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;
use handler::{QueueHandler, task_fn};

/// What a handler returns when it could not handle an event; the job is retried, then kept as dead.
pub type HandlerError = Box<dyn std::error::Error + Send + Sync + 'static>;

type Handler = Arc<dyn Fn(Event) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;

/// SPEC §8.1: handlers running at once per queue per instance.
pub const CONCURRENCY: usize = 5;
/// SPEC §8.1: attempts per event, the first included.
pub const MAX_ATTEMPTS: usize = 3;
/// The first wait between attempts; it doubles each time (1 s, 2 s, 4 s).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(4);
/// A worker that misses `MISSED_HEARTBEATS` beats is presumed dead and its in-flight jobs are put
/// back in the queue (crash recovery): 5 s × 3 = 15 s rather than apalis' default 60 s.
const HEARTBEAT: Duration = Duration::from_secs(5);
const MISSED_HEARTBEATS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("consumer {consumer} has no queue for {event_type}: add it to the subscription table")]
    NotSubscribed {
        event_type: String,
        consumer: String,
    },
    #[error("no queue {0} in the subscription table")]
    UnknownQueue(String),
    #[error("event bus setup failed: {0}")]
    Setup(String),
    #[error("event bus storage: {0}")]
    Storage(String),
}

/// The Redis side is boxed: its connection manager is large and there is one bus per process.
#[derive(Clone)]
enum BusBackend {
    Sqlite(sqlite::SqliteBus),
    Postgres(postgres::PostgresBus),
    Redis(Box<redis::RedisBus>),
}

struct Subscription {
    event_type: &'static str,
    consumer: &'static str,
    handler: Handler,
}

/// The bus: publish (through [`EventPublisher`]) and consume by event type.
pub struct EventBus {
    backend: BusBackend,
    /// Registered before [`EventBus::start`]; a lock only because the bus is shared (`Arc`) by
    /// then, never contended.
    subscriptions: std::sync::Mutex<Vec<Subscription>>,
    /// The database the handlers write to: a handler that fails while it does not answer waits
    /// for it within its attempt ([`crate::events::outage`]). Set by [`open`].
    outage_db: Option<crate::infra::db::Db>,
}

/// The bus of a running process (SPEC §2): on Redis when it is configured, else on the SQL
/// database itself (the SQLite file, or PostgreSQL). Every configuration has one.
pub async fn open(
    db: &crate::infra::db::Db,
    redis: Option<&RedisHandle>,
) -> Result<EventBus, BusError> {
    let mut bus = match (redis, db) {
        (Some(redis), _) => EventBus::redis(redis).await,
        (None, crate::infra::db::Db::Sqlite(pool)) => EventBus::sqlite(pool.clone()).await,
        (None, crate::infra::db::Db::Postgres(pool)) => EventBus::postgres(pool.clone()).await,
    }?;
    bus.outage_db = Some(db.clone());
    Ok(bus)
}

impl EventBus {
    /// The embedded bus: jobs live in the `Jobs` table of our own SQLite file, so a job can be
    /// pushed in the transaction of the change that causes it.
    pub async fn sqlite(pool: SqlitePool) -> Result<Self, BusError> {
        Ok(Self::with_backend(BusBackend::Sqlite(
            sqlite::SqliteBus::setup(pool).await?,
        )))
    }

    /// The bus on PostgreSQL, for a deployment without Redis.
    pub async fn postgres(pool: sqlx::PgPool) -> Result<Self, BusError> {
        Ok(Self::with_backend(BusBackend::Postgres(
            postgres::PostgresBus::setup(pool).await?,
        )))
    }

    /// The distributed bus, on the shared Redis under forma's key prefix.
    pub async fn redis(redis: &RedisHandle) -> Result<Self, BusError> {
        Ok(Self::with_backend(BusBackend::Redis(Box::new(
            redis::RedisBus::connect(redis).await?,
        ))))
    }

    fn with_backend(backend: BusBackend) -> Self {
        Self {
            backend,
            subscriptions: std::sync::Mutex::new(Vec::new()),
            outage_db: None,
        }
    }

    /// Registers `handler` as `consumer`'s handler of `event_type`. Only pairs of the static
    /// subscription table are accepted: a queue nobody publishes to would silently stay empty.
    pub fn subscribe<F, Fut>(
        &self,
        consumer: &'static str,
        event_type: &'static str,
        handler: F,
    ) -> Result<(), BusError>
    where
        F: Fn(Event) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        if !subscriptions::is_subscribed(event_type, consumer) {
            return Err(BusError::NotSubscribed {
                event_type: event_type.to_owned(),
                consumer: consumer.to_owned(),
            });
        }
        let handler: Handler = Arc::new(move |event| Box::pin(handler(event)));
        self.subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Subscription {
                event_type,
                consumer,
                handler,
            });
        Ok(())
    }

    /// Runs one worker per subscribed queue until `workers` shuts down. Workers stop gracefully:
    /// apalis writes completions in the background and a job whose completion was not written
    /// would run again.
    pub fn start(&self, workers: &Workers) -> Result<(), BusError> {
        let subscriptions = self
            .subscriptions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !subscriptions.is_empty() {
            match &self.backend {
                BusBackend::Redis(bus) => bus.spawn_wakeup_listener(workers),
                BusBackend::Postgres(bus) => bus.spawn_wakeup_listener(workers),
                BusBackend::Sqlite(_) => {}
            }
        }
        for sub in subscriptions.iter() {
            let queue = subscriptions::queue_name(sub.event_type, sub.consumer);
            let handler = QueueHandler::new(&queue, sub.handler.clone(), self.outage_db.clone());
            match &self.backend {
                BusBackend::Sqlite(bus) => bus.start(workers, &queue, handler)?,
                BusBackend::Postgres(bus) => bus.start(workers, &queue, handler)?,
                BusBackend::Redis(bus) => bus.start(workers, &queue, handler)?,
            }
        }
        Ok(())
    }
}

#[async_trait]
impl EventPublisher for EventBus {
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError> {
        let mut jobs = Vec::new();
        for event in events {
            let payload = serde_json::to_vec(event)
                .map_err(|e| PublishError::with_source("cannot encode an event", e))?;
            for consumer in subscriptions::subscribers(event.event_type()) {
                jobs.push((
                    subscriptions::queue_name(event.event_type(), consumer),
                    payload.clone(),
                ));
            }
        }
        if jobs.is_empty() {
            return Ok(());
        }
        match &self.backend {
            BusBackend::Sqlite(bus) => bus.push(&jobs).await,
            BusBackend::Postgres(bus) => bus.push(&jobs).await,
            BusBackend::Redis(bus) => bus.push(&jobs).await,
        }
        .map_err(|e| PublishError::with_source("the queue did not accept the events", e))
    }
}

/// 3 attempts, waiting 1 s then 2 s. `retries(n)` means n + 1 attempts.
fn retry_policy() -> Result<BackoffRetryPolicy<ExponentialBackoff>, BusError> {
    let backoff = ExponentialBackoffMaker::new(FIRST_BACKOFF, MAX_BACKOFF, 0.0, HasherRng::new())
        .map_err(|e| BusError::Setup(e.to_string()))?
        .make_backoff();
    Ok(RetryPolicy::retries(MAX_ATTEMPTS - 1).with_backoff(backoff))
}

/// How long a worker that stopped on a storage error (Redis restarting, SQLite busy) waits before
/// it registers again.
const RESTART_DELAY: Duration = Duration::from_secs(1);

/// Builds the apalis worker of one queue on `$storage` and runs it until `$stop`: a macro because
/// the worker's type spells out every layer and each backend's own bounds.
macro_rules! run_worker {
    ($name:expr, $storage:expr, $policy:expr, $handler:expr, $stop:expr) => {
        ::apalis::prelude::WorkerBuilder::new($name)
            .backend($storage)
            .concurrency($crate::events::bus::CONCURRENCY)
            .retry($policy)
            .build($crate::events::bus::task_fn($handler))
            .run_until($stop)
    };
}
use run_worker;

/// What a backend hands to [`spawn_worker`]: builds its apalis worker and runs it until `stop`.
type RunWorker = Box<
    dyn Fn(
            BoxFuture<'static, Result<(), WorkerError>>,
        ) -> BoxFuture<'static, Result<(), WorkerError>>
        + Send
        + Sync,
>;

/// Runs the worker built by `run` until `workers` shuts down, stopping it gracefully (apalis
/// writes completions in the background: a job whose completion was not written would run again).
///
/// An apalis worker ends for good at the first storage error (a failed heartbeat or poll, e.g.
/// while Redis restarts: apalis issue #492). It is then built again under the same name after
/// [`RESTART_DELAY`], until registration succeeds: apalis refuses the name while its last
/// heartbeat is recent, then re-registers it and puts the jobs it held back in the queue.
fn spawn_worker(workers: &Workers, label: &'static str, queue: &str, run: RunWorker) {
    let queue = queue.to_owned();
    workers.spawn(label, move |token| async move {
        loop {
            let stop_token = token.clone();
            let stop: BoxFuture<'static, Result<(), WorkerError>> = Box::pin(async move {
                stop_token.cancelled().await;
                Ok(())
            });
            match run(stop).await {
                Ok(()) => break,
                Err(_) if token.is_cancelled() => break,
                Err(error) => {
                    tracing::warn!(%queue, %error, "event bus worker stopped; restarting it");
                    tokio::select! {
                        () = token.cancelled() => break,
                        () = tokio::time::sleep(RESTART_DELAY) => {}
                    }
                }
            }
        }
    });
}

/// A name no other running worker has: apalis refuses to register a worker whose name was seen
/// within the last heartbeat, and replicas of one consumer share a queue. Each run of a worker
/// (a restart after its storage failed included) takes a new one: the jobs the previous run held
/// are then orphans of a worker whose heartbeat stopped, and go back to the queue, where under the
/// old name the restarted worker would have kept them held and never run them.
fn worker_name(queue: &str) -> String {
    format!("{queue}@{}", uuid::Uuid::new_v4().simple())
}
