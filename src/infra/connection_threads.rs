//! Connection threads: where an accepted connection is served.
//!
//! By default the process has one work-stealing runtime, and a request's tasks (its client
//! connection, the pooled upstream connection it is forwarded on, their timers) run on whichever
//! worker picks them up: every request then hops between threads, and each hop is a wake-up
//! through the kernel. With `server.connection_threads = N`, connections are handed out in turn to
//! N threads that each drive a single-threaded runtime, the way an nginx worker serves both sides
//! of a request: a connection, and everything it awaits, stays on its thread.
//!
//! Invariants:
//! - A connection never moves: it is registered with its thread's reactor when it is handed over,
//!   and its tasks are spawned there.
//! - Whatever must be per thread for that to hold (an upstream connection pool, whose pooled
//!   connections are tasks on the runtime that opened them) is a [`PerThread`], looked up by the
//!   calling thread's slot: 1..=N on the connection threads, 0 everywhere else (the shared
//!   runtime's workers, background workers, tests).
//! - The threads stop when the [`ConnectionThreads`] is dropped, after the server has let its
//!   connections finish.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::runtime::Handle;
use tokio_util::sync::{CancellationToken, DropGuard};

thread_local! {
    /// This thread's slot in every [`PerThread`]: 0 unless it is a connection thread.
    static SLOT: Cell<usize> = const { Cell::new(0) };
}

/// The slot of the calling thread (0 off the connection threads).
fn slot() -> usize {
    SLOT.with(Cell::get)
}

/// One value per connection thread, and one for every other thread.
pub struct PerThread<T> {
    values: Vec<T>,
}

impl<T> PerThread<T> {
    /// `threads + 1` values made by `make`: slot 0 for the threads that are not connection
    /// threads, then one per connection thread.
    pub fn new(threads: usize, mut make: impl FnMut() -> T) -> Self {
        Self {
            values: (0..=threads).map(|_| make()).collect(),
        }
    }

    /// The calling thread's value.
    pub fn get(&self) -> &T {
        let slot = slot();
        // A thread of another server in the same process (tests run several) may have more slots.
        self.values.get(slot).unwrap_or(&self.values[0])
    }
}

/// Single-threaded runtimes on threads of their own, each serving the connections handed to it.
pub struct ConnectionThreads {
    handles: Vec<Handle>,
    next: AtomicUsize,
    _stop: DropGuard,
}

impl ConnectionThreads {
    /// Starts `count` (at least one) connection threads.
    pub fn start(count: usize) -> std::io::Result<Self> {
        let stop = CancellationToken::new();
        // Guarded from the start: a thread that cannot be started stops those already running.
        let guard = stop.clone().drop_guard();
        let mut handles = Vec::with_capacity(count);
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(runtime.handle().clone());
            let stop = stop.clone();
            std::thread::Builder::new()
                .name(format!("forma-conn-{}", index + 1))
                .spawn(move || {
                    SLOT.with(|slot| slot.set(index + 1));
                    // Tasks of a current-thread runtime run while it is blocked on: until stop.
                    runtime.block_on(stop.cancelled());
                })?;
        }
        Ok(Self {
            handles,
            next: AtomicUsize::new(0),
            _stop: guard,
        })
    }

    /// The runtime the next connection goes to (in turn).
    pub fn next(&self) -> &Handle {
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        &self.handles[turn % self.handles.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_connection_thread_sees_its_own_value_and_others_see_the_first() {
        let threads = ConnectionThreads::start(2).unwrap();
        let values = std::sync::Arc::new(PerThread::new(2, {
            let mut made = 0;
            move || {
                made += 1;
                made
            }
        }));
        assert_eq!(*values.get(), 1, "a thread that is not a connection thread");
        let mut seen = Vec::new();
        for _ in 0..4 {
            let values = values.clone();
            let on_thread = threads.next().spawn(async move {
                (
                    *values.get(),
                    std::thread::current().name().map(str::to_owned),
                )
            });
            seen.push(on_thread.await.unwrap());
        }
        assert_eq!(
            seen,
            [
                (2, Some("forma-conn-1".to_owned())),
                (3, Some("forma-conn-2".to_owned())),
                (2, Some("forma-conn-1".to_owned())),
                (3, Some("forma-conn-2".to_owned())),
            ]
        );
    }
}
