//! The apalis task function around a subscriber's handler: decoding the event, turning the last
//! failed attempt into a dead job, and the per-queue counters of `/metrics` (SPEC §5.4). The
//! `queue_jobs` gauges count what the storage holds, which retention trims; these count what this
//! instance did since it started.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use apalis_core::error::{AbortError, BoxDynError};
use apalis_core::task::attempt::Attempt;
use futures::FutureExt;
use futures::future::BoxFuture;
use metrics::{Counter, Histogram};

use super::{Handler, MAX_ATTEMPTS};
use crate::events::catalog::Event;
use crate::events::outage::ride_out;
use crate::infra::db::Db;

/// A subscriber's handler and the metrics of its queue, resolved once per worker.
#[derive(Clone)]
pub(super) struct QueueHandler {
    handler: Handler,
    /// Rides out an outage of this database ([`crate::events::outage::ride_out`]).
    outage_db: Option<Db>,
    /// `queue_jobs_completed_total`: events handled.
    completed: Counter,
    /// `queue_job_attempts_failed_total`: attempts that failed, the retried ones included.
    failed_attempts: Counter,
    /// `queue_jobs_dead_total`: events whose every attempt failed, or that could not be read.
    dead: Counter,
    /// `queue_job_duration_seconds`: how long one attempt took.
    duration: Histogram,
}

impl QueueHandler {
    pub(super) fn new(queue: &str, handler: Handler, outage_db: Option<Db>) -> Self {
        let label = || ("queue", queue.to_owned());
        Self {
            handler,
            outage_db,
            completed: metrics::counter!("queue_jobs_completed_total", &[label()]),
            failed_attempts: metrics::counter!("queue_job_attempts_failed_total", &[label()]),
            dead: metrics::counter!("queue_jobs_dead_total", &[label()]),
            duration: metrics::histogram!("queue_job_duration_seconds", &[label()]),
        }
    }

    async fn run(&self, payload: serde_json::Value, attempt: Attempt) -> Result<(), BoxDynError> {
        // An undecodable payload stays undecodable: no retry can help.
        let event: Event = match serde_json::from_value(payload) {
            Ok(event) => event,
            Err(e) => {
                self.dead.increment(1);
                return Err(Box::new(AbortError::new(e)));
            }
        };
        let started = Instant::now();
        let handled = async {
            match &self.outage_db {
                Some(db) => ride_out(db, || (self.handler)(event.clone())).await,
                None => (self.handler)(event).await,
            }
        };
        // apalis polls a job inside its worker's own task: a panic there would end the worker,
        // and the queue with it, for good. A panicking handler is a failed attempt instead, so a
        // job that always panics goes dead after its attempts like any other.
        let result = match AssertUnwindSafe(handled).catch_unwind().await {
            Ok(result) => result,
            Err(panic) => {
                let message = crate::infra::panics::message(panic.as_ref());
                tracing::error!(panic = message, "a bus handler panicked");
                Err(format!("the handler panicked: {message}").into())
            }
        };
        self.duration.record(started.elapsed().as_secs_f64());
        match result {
            Ok(()) => {
                self.completed.increment(1);
                Ok(())
            }
            Err(e) => {
                self.failed_attempts.increment(1);
                if attempt.current() >= MAX_ATTEMPTS {
                    self.dead.increment(1);
                    // apalis records an `AbortError` as `Killed`: on Redis the only way into the
                    // dead set, on SQLite what keeps the job from being picked again.
                    Err(Box::new(AbortError::new(e)))
                } else {
                    Err(e)
                }
            }
        }
    }
}

/// The apalis task function of a queue's worker.
pub(super) fn task_fn(
    handler: QueueHandler,
) -> impl Fn(serde_json::Value, Attempt) -> BoxFuture<'static, Result<(), BoxDynError>>
+ Clone
+ Send
+ Sync
+ 'static {
    // One reference count per job rather than one per handle inside.
    let handler = Arc::new(handler);
    move |payload: serde_json::Value, attempt: Attempt| {
        let handler = handler.clone();
        Box::pin(async move { handler.run(payload, attempt).await })
    }
}
