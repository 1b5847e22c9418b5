//! A long-lived connection's hold on the sign-in that opened it.
//!
//! The gateway authenticates a connection once (a websocket, a Socket.IO session) and it may live
//! for hours; when that sign-in is revoked (sign-out, a reused refresh token, a password change, a
//! deactivated or deleted user) the connection must end. The gateway hands each such connection a
//! [`Lease`]: it travels as a request extension to whoever serves the connection (the gateway's
//! own splice, or the order service's Socket.IO in role `all`), which ends the connection once
//! [`Lease::stopped`] completes, or has the lease end it ([`Lease::on_stop`]). Dropping the last
//! clone of a lease (the connection ended) lets the issuer forget it.
//!
//! Invariants:
//! - A lease stops once, when its issuer calls [`Stop::fire`], and stays stopped.
//! - Every callback given to [`Lease::on_stop`] runs exactly once if the lease stops, whether it
//!   was given before or after; none runs if the lease is dropped unstopped.
//! - Callbacks run on the thread that fires the stop, with no lock of this module held: a callback
//!   may end its connection, and so drop the lease's last clone, at once.

use std::sync::{Arc, Mutex, PoisonError};

use tokio_util::sync::CancellationToken;

/// What ends a connection once its sign-in is revoked, called at most once.
type Callback = Box<dyn FnOnce() + Send>;

/// The issuer's end of a lease: what ends it.
#[derive(Clone, Default)]
pub struct Stop(Arc<StopState>);

#[derive(Default)]
struct StopState {
    stopped: CancellationToken,
    /// Taken, and emptied for good, by [`Stop::fire`].
    callbacks: Mutex<Vec<Callback>>,
}

impl Stop {
    pub fn new() -> Self {
        Self::default()
    }

    /// Stops the lease: [`Lease::stopped`] completes and the callbacks run, here and now. Call it
    /// without holding a lock that ending a connection takes (the issuer's own index).
    pub fn fire(&self) {
        let callbacks = {
            let mut callbacks = self.callbacks();
            // Cancelled under the lock, so that `on_stop` sees either the callback list still
            // open or the lease stopped, never a callback left behind.
            self.0.stopped.cancel();
            std::mem::take(&mut *callbacks)
        };
        for callback in callbacks {
            callback();
        }
    }

    fn callbacks(&self) -> std::sync::MutexGuard<'_, Vec<Callback>> {
        self.0
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Cheap to clone, as request extensions must be.
#[derive(Clone)]
pub struct Lease {
    stop: Stop,
    /// The issuer's record of this connection, released when the last clone is dropped.
    _registration: Arc<dyn Send + Sync>,
}

impl Lease {
    /// A lease that ends when `stop` fires; `registration` is dropped with its last clone.
    pub fn new(stop: Stop, registration: Arc<dyn Send + Sync>) -> Self {
        Self {
            stop,
            _registration: registration,
        }
    }

    /// Completes once the sign-in behind this connection was revoked.
    pub async fn stopped(&self) {
        self.stop.0.stopped.cancelled().await;
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.0.stopped.is_cancelled()
    }

    /// Calls `end` once the sign-in behind this connection is revoked (at once, when it was
    /// already): for a connection that is ended from outside rather than watched by a task of its
    /// own. `end` is dropped uncalled with the issuer's record of the lease, so it must not hold
    /// what holds the lease (the connection itself), or neither is ever freed.
    pub fn on_stop(&self, end: impl FnOnce() + Send + 'static) {
        {
            let mut callbacks = self.stop.callbacks();
            if !self.is_stopped() {
                callbacks.push(Box::new(end));
                return;
            }
        }
        end();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counter() -> (Arc<AtomicUsize>, impl Fn() -> Box<dyn FnOnce() + Send>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let count = calls.clone();
        let callback = move || -> Box<dyn FnOnce() + Send> {
            let count = count.clone();
            Box::new(move || {
                count.fetch_add(1, Ordering::SeqCst);
            })
        };
        (calls, callback)
    }

    fn issued() -> (Stop, Lease) {
        let stop = Stop::new();
        let lease = Lease::new(stop.clone(), Arc::new(()));
        (stop, lease)
    }

    #[test]
    fn a_callback_runs_once_whether_given_before_or_after_the_stop() {
        let (stop, lease) = issued();
        let (calls, callback) = counter();
        lease.on_stop(callback());
        assert_eq!(calls.load(Ordering::SeqCst), 0, "not before the stop");
        assert!(!lease.is_stopped());

        stop.fire();
        assert!(lease.is_stopped());
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        lease.clone().on_stop(callback());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "given after: called at once"
        );
        stop.fire();
        assert_eq!(
            calls.load(Ordering::SeqCst),
            2,
            "a second fire calls nothing again"
        );
    }

    #[test]
    fn a_lease_dropped_unstopped_calls_nothing_and_frees_its_callbacks() {
        let (stop, lease) = issued();
        let (calls, callback) = counter();
        lease.on_stop(callback());
        let held = Arc::new(());
        let witness = Arc::downgrade(&held);
        lease.on_stop(move || drop(held));
        drop(lease);
        drop(stop);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert!(witness.upgrade().is_none(), "the callback was freed");
    }

    #[test]
    fn a_callback_may_drop_the_last_clone_of_its_own_lease() {
        let stop = Stop::new();
        let dropped = Arc::new(AtomicUsize::new(0));
        struct Registration(Arc<AtomicUsize>);
        impl Drop for Registration {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let lease = Lease::new(stop.clone(), Arc::new(Registration(dropped.clone())));
        let connection = Arc::new(Mutex::new(Some(lease.clone())));
        let ended = connection.clone();
        lease.on_stop(move || {
            // Ending the connection drops the lease it held.
            ended.lock().unwrap().take();
        });
        drop(lease);
        stop.fire();
        assert!(connection.lock().unwrap().is_none());
        assert_eq!(
            dropped.load(Ordering::SeqCst),
            1,
            "the registration went too"
        );
    }

    #[tokio::test]
    async fn stopped_completes_once_fired() {
        let (stop, lease) = issued();
        let waiting = tokio::spawn({
            let lease = lease.clone();
            async move { lease.stopped().await }
        });
        stop.fire();
        waiting.await.unwrap();
        assert!(lease.is_stopped());
    }
}
