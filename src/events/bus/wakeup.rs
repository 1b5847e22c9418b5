//! Waking an idle worker when its queue gets a job, instead of leaving it asleep until its next
//! poll: the difference between about a millisecond and tens of milliseconds from publish to
//! handler (benches/bus.sh).
//!
//! An apalis worker whose fetch came back empty parks until its poll strategy wakes it.
//! [`WakeStrategy`] wakes it when [`Wakeups::notify`] is called for its queue: on SQLite by the
//! bus's own `push`, on Redis by the `PUBLISH` of the push script, which every instance's listener
//! passes on (see `redis.rs`). Wake-ups are hints, not deliveries: a lost one (a pub/sub
//! reconnect) costs at most [`FALLBACK`], never a job.
//!
//! One race needs care. A wake-up can arrive while the worker's fetch is already in flight, and
//! that fetch may have read the queue just before the push: it comes back empty and the worker
//! parks, the wake-up spent. So every wake-up also arms a re-check [`RECHECK`] later, which makes
//! the worker fetch once more if it is idle by then.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::task::{Context, Poll};
use std::time::Duration;

use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};
use futures::task::AtomicWaker;
use tokio::time::{Instant, Interval, MissedTickBehavior, Sleep};

/// How long after a wake-up an idle worker looks again: longer than a fetch takes.
const RECHECK: Duration = Duration::from_millis(10);
/// How often an idle worker looks for jobs when nothing woke it: it picks up jobs whose wake-up
/// was lost and jobs put back by crash recovery.
const FALLBACK: Duration = Duration::from_secs(1);

/// Per queue, the wake-up signals of the workers of this instance that consume it.
#[derive(Clone, Default)]
pub(super) struct Wakeups {
    queues: Arc<Mutex<HashMap<String, Vec<Weak<Signal>>>>>,
}

/// One worker's pending wake-up and the waker of its task.
#[derive(Default)]
struct Signal {
    pending: AtomicBool,
    waker: AtomicWaker,
}

impl Signal {
    fn raise(&self) {
        self.pending.store(true, Ordering::Release);
        self.waker.wake();
    }
}

impl Wakeups {
    /// Wakes every worker of this instance that consumes `queue`. Wake-ups that arrive before the
    /// worker looks coalesce into one.
    pub(super) fn notify(&self, queue: &str) {
        let mut queues = self.queues.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(signals) = queues.get_mut(queue) {
            // A signal nobody holds belonged to a worker that was rebuilt or stopped.
            signals.retain(|signal| match signal.upgrade() {
                Some(signal) => {
                    signal.raise();
                    true
                }
                None => false,
            });
        }
    }

    /// Wakes every worker of this instance.
    pub(super) fn notify_all(&self) {
        let queues: Vec<String> = self
            .queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for queue in queues {
            self.notify(&queue);
        }
    }

    /// The poll strategy of a new worker of `queue`.
    pub(super) fn strategy(&self, queue: &str) -> WakeStrategy {
        WakeStrategy::new(self.register(queue))
    }

    fn register(&self, queue: &str) -> Arc<Signal> {
        let signal = Arc::new(Signal::default());
        self.queues
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(queue.to_owned())
            .or_default()
            .push(Arc::downgrade(&signal));
        signal
    }
}

#[cfg(test)]
impl Wakeups {
    /// What a worker of `queue` would see, for tests: whether a wake-up came since the last call.
    pub(super) fn watch(&self, queue: &str) -> impl Fn() -> bool + use<> {
        let signal = self.register(queue);
        move || signal.pending.swap(false, Ordering::AcqRel)
    }
}

/// Wakes a worker on a wake-up, [`RECHECK`] after the last one, and every [`FALLBACK`].
///
/// apalis polls the strategy before each look at the backend and ignores its answer: what counts
/// is that the worker's task is woken. So the task's waker is registered on every poll, also when
/// a wake-up is taken: a strategy that registers only when it has nothing to report misses the
/// next wake-up if the worker then parks without polling it again.
pub(super) struct WakeStrategy {
    signal: Arc<Signal>,
    recheck: Pin<Box<Sleep>>,
    recheck_armed: bool,
    fallback: Interval,
}

impl WakeStrategy {
    fn new(signal: Arc<Signal>) -> Self {
        let mut interval = tokio::time::interval_at(Instant::now() + FALLBACK, FALLBACK);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            signal,
            recheck: Box::pin(tokio::time::sleep(RECHECK)),
            recheck_armed: false,
            fallback: interval,
        }
    }
}

impl PollStrategy for WakeStrategy {
    fn poll_drive(&mut self, cx: &mut Context<'_>, _: &PollSnapshot) -> Poll<Option<()>> {
        self.signal.waker.register(cx.waker());
        let mut due = false;
        if self.signal.pending.swap(false, Ordering::AcqRel) {
            self.recheck.as_mut().reset(Instant::now() + RECHECK);
            self.recheck_armed = true;
            due = true;
        }
        if self.recheck_armed && self.recheck.as_mut().poll(cx).is_ready() {
            self.recheck_armed = false;
            due = true;
        }
        if self.fallback.poll_tick(cx).is_ready() {
            due = true;
        }
        if due {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;

    use futures::task::ArcWake;

    use super::*;

    /// Polls the strategy once, as apalis does before each look at the backend.
    async fn poll_once(strategy: &mut WakeStrategy) -> bool {
        poll_fn(|cx| Poll::Ready(strategy.poll_drive(cx, &PollSnapshot::new()).is_ready())).await
    }

    /// Whether the strategy wakes its task within `within` (by polling until it reports).
    async fn wakes_within(strategy: &mut WakeStrategy, within: Duration) -> bool {
        let woken = poll_fn(|cx| strategy.poll_drive(cx, &PollSnapshot::new()));
        tokio::time::timeout(within, woken).await.is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_notified_queue_wakes_each_of_its_workers_and_no_other_queue() {
        let wakeups = Wakeups::default();
        let mut first = wakeups.strategy("order.cancelled:print");
        let mut second = wakeups.strategy("order.cancelled:print");
        let mut other = wakeups.strategy("order.cancelled:shipping");
        for strategy in [&mut first, &mut second, &mut other] {
            assert!(!poll_once(strategy).await, "nothing to report yet");
        }

        wakeups.notify("order.cancelled:print");
        wakeups.notify("order.cancelled:print");
        assert!(poll_once(&mut first).await);
        assert!(poll_once(&mut second).await);
        // Two notifications before the worker looked: one wake-up.
        assert!(!poll_once(&mut first).await);
        assert!(!poll_once(&mut other).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_taken_during_a_fetch_is_followed_by_a_recheck() {
        let wakeups = Wakeups::default();
        let mut strategy = wakeups.strategy("order.created:print");
        wakeups.notify("order.created:print");
        // Taken while the worker's fetch is in flight; the fetch comes back empty and it parks.
        assert!(poll_once(&mut strategy).await);
        assert!(
            wakes_within(&mut strategy, RECHECK * 2).await,
            "no re-check"
        );
        // Then only the fallback.
        assert!(!wakes_within(&mut strategy, FALLBACK / 2).await);
        assert!(
            wakes_within(&mut strategy, FALLBACK).await,
            "no fallback poll"
        );
    }

    #[test]
    fn a_worker_that_took_a_wake_up_and_parked_is_woken_by_the_next_one() {
        struct Count(AtomicUsize);
        impl ArcWake for Count {
            fn wake_by_ref(this: &Arc<Self>) {
                this.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a runtime");
        let _entered = runtime.enter();
        let wakeups = Wakeups::default();
        let mut strategy = wakeups.strategy("order.created:print");
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures::task::waker(count.clone());
        let mut cx = Context::from_waker(&waker);
        let snapshot = PollSnapshot::new();

        assert!(strategy.poll_drive(&mut cx, &snapshot).is_pending());
        wakeups.notify("order.created:print");
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        // The wake-up is taken; the worker fetches, finds nothing and parks, not polling again.
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_ready());
        wakeups.notify("order.created:print");
        assert_eq!(
            count.0.load(Ordering::SeqCst),
            2,
            "the parked worker was not woken"
        );
    }

    #[test]
    fn a_stopped_worker_is_forgotten_at_the_next_notification() {
        let wakeups = Wakeups::default();
        drop(wakeups.register("order.created:print"));
        let kept = wakeups.register("order.created:print");
        wakeups.notify("order.created:print");
        let queues = wakeups.queues.lock().expect("lock");
        assert_eq!(queues["order.created:print"].len(), 1);
        drop(kept);
    }
}
