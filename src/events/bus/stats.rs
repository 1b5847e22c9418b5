//! What the queue dashboard shows (SPEC §5.4): per queue the waiting, active, completed, failed
//! and dead jobs, one job's payload, attempts and last error, and the retry of a dead job.
//!
//! The states, on both backends:
//! - `waiting`: pushed (or put back by a retry of a dead job), not yet taken by a worker;
//! - `active`: taken by a worker, its attempts running (the 1 s / 2 s retries happen in there);
//! - `completed`: handled;
//! - `failed`: an attempt failed and the storage holds it for a later attempt (rare: our retries
//!   run in the worker, so this is mostly a job put back after its worker died);
//! - `dead`: every attempt failed; kept (the newest 5000) until retried.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BusBackend, BusError, EventBus, subscriptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Waiting,
    Active,
    Completed,
    Failed,
    Dead,
}

impl JobState {
    pub const ALL: [JobState; 5] = [
        JobState::Waiting,
        JobState::Active,
        JobState::Completed,
        JobState::Failed,
        JobState::Dead,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Waiting => "waiting",
            JobState::Active => "active",
            JobState::Completed => "completed",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }
}

/// The job counts of one queue (one consumer's queue for one event type).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStats {
    pub queue: String,
    pub event_type: String,
    pub consumer: String,
    pub waiting: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
    pub dead: u64,
}

impl QueueStats {
    fn count(&self, state: JobState) -> u64 {
        match state {
            JobState::Waiting => self.waiting,
            JobState::Active => self.active,
            JobState::Completed => self.completed,
            JobState::Failed => self.failed,
            JobState::Dead => self.dead,
        }
    }
}

/// One job as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobView {
    pub id: String,
    /// The storage's own status (`Pending`, `Running`, `Done`, `Killed`, …).
    pub status: String,
    pub attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u64>,
    /// The event as published (JSON), or the raw bytes as a string if they are not JSON.
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub done_at: Option<DateTime<Utc>>,
}

/// Sets the gauges `queue_jobs{queue, state}` from `stats`.
pub fn record_metrics(stats: &[QueueStats]) {
    for queue in stats {
        for state in JobState::ALL {
            // Gauges are f64; job counts stay far below 2^53.
            #[allow(clippy::cast_precision_loss)]
            let value = queue.count(state) as f64;
            metrics::gauge!("queue_jobs", "queue" => queue.queue.clone(), "state" => state.as_str())
                .set(value);
        }
    }
}

impl EventBus {
    /// The counts of every queue of the subscription table, subscribed here or not: the
    /// dashboard of a gateway shows the queues of every service.
    pub async fn queues(&self) -> Result<Vec<QueueStats>, BusError> {
        let mut all = Vec::new();
        for (event_type, consumer) in subscriptions::queues() {
            let queue = subscriptions::queue_name(event_type, consumer);
            all.push(QueueStats {
                queue,
                event_type: event_type.to_owned(),
                consumer: consumer.to_owned(),
                ..QueueStats::default()
            });
        }
        match &self.backend {
            BusBackend::Sqlite(bus) => bus.stats(&mut all).await?,
            BusBackend::Postgres(bus) => bus.stats(&mut all).await?,
            BusBackend::Redis(bus) => bus.stats(&mut all).await?,
        }
        Ok(all)
    }

    /// Up to `limit` jobs of `queue` (e.g. `order.cancelled:print`) in `state`: waiting and active
    /// ones oldest first (the order they run in), the others most recently finished first.
    pub async fn jobs(
        &self,
        queue: &str,
        state: JobState,
        limit: usize,
    ) -> Result<Vec<JobView>, BusError> {
        known_queue(queue)?;
        match &self.backend {
            BusBackend::Sqlite(bus) => bus.jobs(queue, state, limit).await,
            BusBackend::Postgres(bus) => bus.jobs(queue, state, limit).await,
            BusBackend::Redis(bus) => bus.jobs(queue, state, limit).await,
        }
    }

    /// Puts the dead job `job_id` of `queue` back to waiting with its attempts reset. `false` if
    /// the queue holds no dead job of that id.
    pub async fn retry_dead(&self, queue: &str, job_id: &str) -> Result<bool, BusError> {
        known_queue(queue)?;
        match &self.backend {
            BusBackend::Sqlite(bus) => bus.retry_dead(queue, job_id).await,
            BusBackend::Postgres(bus) => bus.retry_dead(queue, job_id).await,
            BusBackend::Redis(bus) => bus.retry_dead(queue, job_id).await,
        }
    }
}

fn known_queue(queue: &str) -> Result<(), BusError> {
    let known = subscriptions::queues()
        .any(|(event_type, consumer)| subscriptions::queue_name(event_type, consumer) == queue);
    if known {
        Ok(())
    } else {
        Err(BusError::UnknownQueue(queue.to_owned()))
    }
}

/// The payload bytes as JSON, or as a string if they are not JSON.
pub(super) fn payload_json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// apalis stores a job's result as the JSON of a `Result` (`{"Err": "…"}` / `{"Ok": …}`): the
/// error's text, if the last attempt failed.
pub(super) fn last_error(result: Option<&str>) -> Option<String> {
    let raw = result?;
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(serde_json::Value::Object(map)) => match map.get("Err") {
            Some(serde_json::Value::String(text)) => Some(text.clone()),
            Some(other) => Some(other.to_string()),
            None => None,
        },
        Ok(serde_json::Value::Null) => None,
        _ => Some(raw.to_owned()),
    }
}

/// A Unix time in seconds as a date, if it is one.
pub(super) fn unix_time(seconds: Option<i64>) -> Option<DateTime<Utc>> {
    seconds.and_then(|s| DateTime::from_timestamp(s, 0))
}
