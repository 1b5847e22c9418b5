//! A long-lived connection's hold on the sign-in that opened it.
//!
//! The gateway authenticates a connection once (a websocket, a Socket.IO session) and it may live
//! for hours; when that sign-in is revoked (sign-out, a reused refresh token, a password change, a
//! deactivated or deleted user) the connection must end. The gateway hands each such connection a
//! [`Lease`]: it travels as a request extension to whoever serves the connection (the gateway's
//! own splice, or the order service's Socket.IO in role `all`), which ends the connection once
//! [`Lease::stopped`] completes. Dropping the last clone of a lease (the connection ended) lets
//! the issuer forget it.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

/// Cheap to clone, as request extensions must be.
#[derive(Clone)]
pub struct Lease {
    stop: CancellationToken,
    /// The issuer's record of this connection, released when the last clone is dropped.
    _registration: Arc<dyn Send + Sync>,
}

impl Lease {
    /// A lease that ends when `stop` is cancelled; `registration` is dropped with its last clone.
    pub fn new(stop: CancellationToken, registration: Arc<dyn Send + Sync>) -> Self {
        Self {
            stop,
            _registration: registration,
        }
    }

    /// Completes once the sign-in behind this connection was revoked.
    pub async fn stopped(&self) {
        self.stop.cancelled().await;
    }

    pub fn is_stopped(&self) -> bool {
        self.stop.is_cancelled()
    }
}
