//! The upstream connections of one service: HTTP/1.1, kept alive, per connection thread and per
//! instance.
//!
//! A general-purpose client pool keys its connections by scheme and authority, hashing that key
//! twice per request (to take a connection and to give it back) and matching waiters against
//! connections across threads. The gateway needs none of that: it knows each instance by its
//! index in the service's list, and a connection thread only ever uses its own connections.
//!
//! Invariants:
//! - A connection is driven by a task spawned on the runtime of the thread that opened it, and
//!   only that thread's requests are sent on it (the pool is a [`PerThread`]), so a forwarded
//!   request and its upstream connection are served by one thread.
//! - A request is only ever sent on an idle connection (`is_ready`): one exchange at a time, never
//!   queued behind another request's response.
//! - A kept connection that turns out closed before the request was written to it is not an
//!   error: hyper hands the request back, and it goes out on another connection. Once written, a
//!   request is never sent twice from here (retries are the caller's decision).
//! - At most [`MAX_KEPT`] connections are kept per thread and instance; a kept connection unused
//!   for [`IDLE_TIMEOUT`] is closed when a later request passes it over.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::infra::connection_threads::PerThread;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long an unused connection is kept: below the upstream's `server.header_read_timeout_secs`
/// (10 s by default), after which a forma upstream closes an idle connection. The gateway lets it
/// go first, and never writes a request to a connection the upstream is closing at that moment
/// (once written, a request is not sent again, and the client would get a 502).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections kept per thread and instance: far above what a thread has in flight at once.
pub const MAX_KEPT: usize = 1024;

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: nothing was sent.
    #[error("cannot connect to {address}: {reason}")]
    Connect { address: String, reason: String },
    /// The exchange failed on an open connection: the request may have been (partly) sent.
    #[error(transparent)]
    Exchange(#[from] hyper::Error),
}

pub struct ConnectionPool {
    /// Per instance (by index): the `host:port` it listens on.
    addresses: Vec<String>,
    /// Per connection thread, per instance: the connections kept, the most recently used last.
    kept: PerThread<Vec<Mutex<Vec<Kept>>>>,
}

struct Kept {
    sender: SendRequest<Body>,
    used_at: Instant,
}

impl ConnectionPool {
    /// A pool for the instances at `addresses` (`host:port` each), used from `threads`
    /// connection threads.
    pub fn new(addresses: Vec<String>, threads: usize) -> Self {
        let instances = addresses.len();
        let kept = PerThread::new(threads, || {
            (0..instances).map(|_| Mutex::default()).collect()
        });
        Self { addresses, kept }
    }

    /// Sends `request` (its URI in origin form, its `Host` set) to instance `instance` and returns
    /// the response, its body still streaming.
    pub async fn send(
        &self,
        instance: usize,
        mut request: Request<Body>,
    ) -> Result<Response<Incoming>, SendError> {
        let now = Instant::now();
        loop {
            let (mut sender, reused) = match self.checkout(instance, now) {
                Some(sender) => (sender, true),
                // Boxed, like every step the usual request skips: a future is as large as its
                // largest await, and every request's future would otherwise carry room for
                // connecting, copied at each await that moves it.
                None => (Box::pin(self.connect(instance)).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    self.keep(instance, sender, now);
                    return Ok(response);
                }
                Err(mut error) => match error.take_message() {
                    // Closed under us before a byte of it was written: another connection.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Exchange(error.into_error())),
                },
            }
        }
    }

    /// An idle kept connection to `instance`, the most recently used first. Closed and expired
    /// connections met on the way are let go; busy ones are left for later.
    fn checkout(&self, instance: usize, now: Instant) -> Option<SendRequest<Body>> {
        let mut kept = self.kept_of(instance)?;
        let mut index = kept.len();
        while index > 0 {
            index -= 1;
            let connection = &kept[index];
            if connection.sender.is_closed()
                || now.saturating_duration_since(connection.used_at) >= IDLE_TIMEOUT
            {
                // The entry swapped in from the end was looked at already.
                kept.swap_remove(index);
            } else if connection.sender.is_ready() {
                return Some(kept.swap_remove(index).sender);
            }
        }
        None
    }

    /// Keeps `sender`, last used for a request sent at `used_at`, for the next request once its
    /// exchange is over (it is not ready before).
    fn keep(&self, instance: usize, sender: SendRequest<Body>, used_at: Instant) {
        if let Some(mut kept) = self.kept_of(instance)
            && kept.len() < MAX_KEPT
        {
            kept.push(Kept { sender, used_at });
        }
    }

    fn kept_of(&self, instance: usize) -> Option<std::sync::MutexGuard<'_, Vec<Kept>>> {
        let kept = self.kept.get().get(instance)?;
        Some(kept.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Opens a connection to `instance` and spawns its task on this thread's runtime.
    async fn connect(&self, instance: usize) -> Result<SendRequest<Body>, SendError> {
        let address = self.addresses.get(instance).map_or("", String::as_str);
        let failed = |reason: String| SendError::Connect {
            address: address.to_owned(),
            reason,
        };
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| failed(format!("no connection within {CONNECT_TIMEOUT:?}")))?
            .map_err(|e| failed(e.to_string()))?;
        // Requests and responses are small and latency-bound: no Nagle delay.
        stream
            .set_nodelay(true)
            .map_err(|e| failed(e.to_string()))?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| failed(e.to_string()))?;
        // Upgrades: a websocket's `101` hands the connection over to the proxy's splice.
        tokio::spawn(async move {
            if let Err(error) = connection.with_upgrades().await {
                tracing::debug!(%error, "an upstream connection ended with an error");
            }
        });
        Ok(sender)
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
