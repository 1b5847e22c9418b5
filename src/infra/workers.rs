//! Background workers (relays, pollers, metric upkeep) and their clean stop at shutdown.

use std::future::Future;
use std::time::Duration;

use chrono::TimeDelta;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Wakes a background sender when there is work for it (a row became due): handed to whoever
/// commits that work, awaited by the sender between its passes. A wake-up given while the sender
/// is busy is kept for its next wait. Cheap to clone.
#[derive(Clone, Default, Debug)]
pub struct Wakeup(std::sync::Arc<tokio::sync::Notify>);

impl Wakeup {
    pub fn notify(&self) {
        self.0.notify_one();
    }

    pub async fn notified(&self) {
        self.0.notified().await;
    }
}

/// Handles, one after the other, each row a sender's pass claimed, and returns how many there
/// were. A row whose handling fails is logged and the pass goes on with the next: giving up on
/// the batch would leave the rows after it leased and untouched until their lease ran out. Each
/// handler records its own failures on its row (a backoff, an error for operators) where it can.
pub async fn each_claimed<'a, T, F, Fut, E>(
    worker: &'static str,
    claimed: &'a [T],
    mut handle: F,
) -> usize
where
    F: FnMut(&'a T) -> Fut,
    Fut: Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    for (position, row) in claimed.iter().enumerate() {
        if let Err(error) = handle(row).await {
            tracing::warn!(worker, position, %error, "a claimed row could not be handled; the pass goes on");
        }
    }
    claimed.len()
}

/// Deletes old rows `batch` at a time: calls `delete(batch)` until a statement deletes fewer, or
/// `stop` is cancelled, so other writers take SQLite's one write lock between statements and a
/// large backlog does not hold up a shutdown. Returns how many were deleted in all.
pub async fn delete_in_batches<F, Fut>(
    batch: usize,
    stop: &CancellationToken,
    mut delete: F,
) -> Result<u64, crate::infra::db::DbError>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Result<u64, crate::infra::db::DbError>>,
{
    let batch = batch.max(1);
    let mut total = 0;
    while !stop.is_cancelled() {
        let deleted = delete(batch).await?;
        total += deleted;
        if deleted < batch as u64 {
            break;
        }
    }
    Ok(total)
}

const FIRST_BACKOFF_SECS: i64 = 1;
const MAX_BACKOFF_SECS: i64 = 600;

/// How long a sender waits before its next attempt at a row: 1 s, 2 s, 4 s … up to 10
/// minutes, with up to 20 % jitter so that replicas do not retry in step.
pub fn backoff(attempts: i64) -> TimeDelta {
    let exponent = u32::try_from(attempts.saturating_sub(1).clamp(0, 20)).unwrap_or(20);
    let secs = FIRST_BACKOFF_SECS
        .saturating_mul(1_i64 << exponent)
        .min(MAX_BACKOFF_SECS);
    let jitter = (secs as f64 * rand::random_range(0.0..0.2)) as i64;
    TimeDelta::seconds(secs + jitter)
}

/// How long a sender's claim must hold: `sends_in_turn` sends one after another, each of at most
/// `per_send`, and a minute to record their outcomes, so no other replica takes a row this one is
/// still sending. Saturates rather than overflows (timeouts are checked at start-up to be at most
/// a year; the bound only keeps the arithmetic safe).
pub fn claim_lease(per_send: Duration, sends_in_turn: u32) -> TimeDelta {
    TimeDelta::from_std(per_send.saturating_mul(sends_in_turn))
        .ok()
        .and_then(|all| all.checked_add(&TimeDelta::seconds(60)))
        .unwrap_or(TimeDelta::MAX)
}

/// Spawns background tasks that all see one cancellation token, and waits for them at shutdown.
#[derive(Clone, Default)]
pub struct Workers {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Workers {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` until it returns; it must return soon after `token` is cancelled.
    pub fn spawn<F, Fut>(&self, name: &'static str, task: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = task(self.token.child_token());
        self.tracker.spawn(async move {
            fut.await;
            tracing::debug!(worker = name, "worker stopped");
        });
    }

    /// Runs a sender's `pass` until shutdown: again at once while a pass handled a full `batch`
    /// (more may be due), else after a `wakeup` or `idle` (for work whose backoff ran out). A pass
    /// that fails is logged and counts as empty. Shutdown is seen between any two passes, a
    /// backlog's included: the pass under way ends, and no other begins.
    pub fn sender<F, Fut, E>(
        &self,
        name: &'static str,
        wakeup: Wakeup,
        idle: Duration,
        batch: usize,
        pass: F,
    ) where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<usize, E>> + Send,
        E: std::fmt::Display,
    {
        self.spawn(name, move |stop| async move {
            loop {
                let handled = match pass().await {
                    Ok(count) => count,
                    Err(e) => {
                        tracing::warn!(worker = name, error = %e, "a sender could not read its work");
                        0
                    }
                };
                if stop.is_cancelled() {
                    break;
                }
                if handled >= batch {
                    continue;
                }
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = wakeup.notified() => {}
                    () = tokio::time::sleep(idle) => {}
                }
            }
        });
    }

    /// Runs `task` every `period` (the first time after one period) until shutdown: retention and
    /// other upkeep. A run that fails logs and waits for the next.
    pub fn every<F, Fut>(&self, name: &'static str, period: Duration, task: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.spawn(name, move |stop| async move {
            let mut tick = tokio::time::interval(period.max(Duration::from_millis(1)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    _ = tick.tick() => {
                        if let Err(error) = task().await {
                            tracing::warn!(worker = name, %error, "periodic upkeep failed");
                        }
                    }
                }
            }
        });
    }

    /// A token cancelled when shutdown begins.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    /// Asks every worker to stop and waits up to `timeout` for them.
    pub async fn shutdown(&self, timeout: Duration) -> bool {
        self.token.cancel();
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::{Wakeup, Workers, backoff};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// A sender with a backlog (every pass handles a full batch) still stops at shutdown, after
    /// the pass under way.
    #[tokio::test]
    async fn a_sender_with_a_backlog_stops_at_shutdown() {
        let workers = Workers::new();
        let passes = Arc::new(AtomicUsize::new(0));
        let counted = passes.clone();
        workers.sender(
            "backlog",
            Wakeup::default(),
            Duration::from_secs(60),
            10,
            move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    Ok::<usize, String>(10)
                }
            },
        );
        while passes.load(Ordering::SeqCst) < 3 {
            tokio::task::yield_now().await;
        }
        assert!(
            workers.shutdown(Duration::from_secs(30)).await,
            "the sender went on"
        );
    }

    #[test]
    fn backoff_doubles_from_a_second_to_ten_minutes() {
        for (attempts, base) in [(1, 1), (2, 2), (3, 4), (10, 512), (11, 600), (500, 600)] {
            let wait = backoff(attempts).num_seconds();
            assert!(
                (base..=base + base / 5).contains(&wait),
                "{attempts}: {wait}"
            );
        }
    }
}
