//! The relay as a background worker: a pass every `interval`, at once when woken, drained back to
//! back while batches come out full, slower and slower while the bus refuses.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use tokio_util::sync::CancellationToken;

use super::{OutboxRelay, backlog, delete_sent_before};
use crate::infra::workers::delete_in_batches;
use crate::infra::workers::{Wakeup, Workers};

/// Wakes a running relay. Cheap to clone; hand it to whatever commits events. A wake that
/// arrives while a pass runs is remembered, so an event committed during a pass does not wait for
/// the next tick.
pub type RelayNotifier = Wakeup;

impl OutboxRelay {
    /// Runs the relay until `workers` shut down.
    pub fn spawn(self, workers: &Workers) {
        workers.spawn("outbox-relay", move |stop| async move {
            self.run(stop).await;
        });
    }

    async fn run(self, stop: CancellationToken) {
        let mut failures: u32 = 0;
        let mut last_cleanup: Option<Instant> = None;
        loop {
            let pause = match self.relay_once().await {
                Ok(published) => {
                    failures = 0;
                    if published >= self.batch_limit() {
                        Duration::ZERO
                    } else {
                        self.settings.interval
                    }
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    let pause = self.backoff(failures);
                    tracing::warn!(
                        relay = %self.id, error = %e, failures, retry_in = ?pause,
                        "the outbox relay could not publish; the events stay in the outbox"
                    );
                    pause
                }
            };
            match backlog(&self.db).await {
                Ok(backlog) => backlog.record(),
                Err(e) => tracing::warn!(error = %e, "reading the outbox backlog failed"),
            }
            if last_cleanup.is_none_or(|at| at.elapsed() >= self.settings.cleanup_every) {
                self.delete_old_sent_rows(&stop).await;
                last_cleanup = Some(Instant::now());
            }
            if stop.is_cancelled() {
                break;
            }
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
                // While backing off, commits must not cut the pause short: each one would hammer
                // a bus that is down.
                _ = self.notifier.notified(), if failures == 0 => {}
            }
        }
    }

    /// `interval` doubled per consecutive failure, at most `max_backoff`.
    fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.min(20)).unwrap_or(u32::MAX);
        self.settings
            .interval
            .saturating_mul(factor)
            .min(self.settings.max_backoff)
    }

    async fn delete_old_sent_rows(&self, stop: &CancellationToken) {
        let retention = TimeDelta::from_std(self.settings.retention).unwrap_or(TimeDelta::MAX);
        let Some(cutoff) = Utc::now().checked_sub_signed(retention) else {
            return;
        };
        let deleted = delete_in_batches(self.settings.cleanup_batch, stop, |batch| {
            delete_sent_before(&self.db, cutoff, batch)
        });
        if let Err(e) = deleted.await {
            tracing::warn!(error = %e, "deleting old sent outbox rows failed");
        }
    }
}
