//! Retention (SPEC §8.1: completed jobs trimmed to the newest 1000 per queue, dead ones kept, the
//! newest 5000 per queue) and the queue gauges, refreshed in the background.
//!
//! apalis' own `vacuum()` is not used: it deletes dead jobs too, which the dashboard must keep.

use std::time::Duration;

use super::stats::record_metrics;
use super::{BusBackend, BusError, EventBus};
use crate::infra::workers::Workers;

/// SPEC §8.1: completed jobs kept per queue.
pub const COMPLETED_KEEP: usize = 1000;
/// SPEC §8.1: dead (failed) jobs kept per queue.
pub const DEAD_KEEP: usize = 5000;
/// How often [`EventBus::spawn_upkeep`] trims the queues.
const TRIM_INTERVAL: Duration = Duration::from_secs(30);
/// How often it refreshes the `queue_jobs` gauges: within a typical Prometheus scrape interval.
const GAUGE_INTERVAL: Duration = Duration::from_secs(5);

impl EventBus {
    /// Deletes completed jobs beyond the newest [`COMPLETED_KEEP`] and dead jobs beyond the newest
    /// [`DEAD_KEEP`] of every queue; returns how many were deleted.
    pub async fn trim(&self) -> Result<u64, BusError> {
        self.trim_to(COMPLETED_KEEP, DEAD_KEEP).await
    }

    /// [`Self::trim`] with other limits. "Newest" is the last pushed (by job id, see
    /// [`super::job_id`]): in a FIFO queue, nearly the last finished, and cheap to sort.
    pub async fn trim_to(&self, completed_keep: usize, dead_keep: usize) -> Result<u64, BusError> {
        match &self.backend {
            BusBackend::Sqlite(bus) => bus.trim(completed_keep, dead_keep).await,
            BusBackend::Postgres(bus) => bus.trim(completed_keep, dead_keep).await,
            BusBackend::Redis(bus) => bus.trim(completed_keep, dead_keep).await,
        }
    }

    /// Trims the queues every 30 s and refreshes the `queue_jobs` gauges every 5 s until
    /// `workers` shuts down, trimming at once when a queue holds more than twice what it keeps (at
    /// thousands of events per second, 30 s of completed jobs is a lot of Redis memory). Run it on
    /// one instance or several: trimming twice is harmless.
    pub fn spawn_upkeep(&self, workers: &Workers) {
        // Only the storage is needed: a bus without subscriptions on a clone of it.
        let bus = EventBus::with_backend(self.backend.clone());
        workers.spawn("event-bus-upkeep", move |token| async move {
            let mut trims = tokio::time::interval(TRIM_INTERVAL);
            let mut gauges = tokio::time::interval(GAUGE_INTERVAL);
            for ticks in [&mut trims, &mut gauges] {
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
            loop {
                tokio::select! {
                    () = token.cancelled() => break,
                    _ = trims.tick() => bus.trim_logged().await,
                    _ = gauges.tick() => if bus.record_gauges().await {
                        bus.trim_logged().await;
                    },
                }
            }
        });
    }

    async fn trim_logged(&self) {
        match self.trim().await {
            Ok(0) => {}
            Ok(deleted) => tracing::debug!(deleted, "event bus: old jobs trimmed"),
            Err(error) => tracing::warn!(%error, "event bus: trimming failed"),
        }
    }

    /// Refreshes the gauges; returns whether a queue holds more than twice what it keeps.
    async fn record_gauges(&self) -> bool {
        match self.queues().await {
            Ok(stats) => {
                record_metrics(&stats);
                stats.iter().any(|q| {
                    q.completed > 2 * COMPLETED_KEEP as u64 || q.dead > 2 * DEAD_KEEP as u64
                })
            }
            Err(error) => {
                tracing::warn!(%error, "event bus: queue statistics failed");
                false
            }
        }
    }
}
