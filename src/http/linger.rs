//! Request bodies that are read to their end even when the handler answers without them.
//!
//! A server that answers early (a 413 for a declared length over the limit, a 401 before the body
//! of a POST) and closes its socket while the client is still sending makes the kernel reset the
//! connection: the client gets "connection reset" or "broken pipe" instead of the answer that was
//! already on its way. nginx avoids it with a lingering close; hyper has none, so a body that is
//! dropped before its end is handed to a task that reads and discards what the client still sends,
//! bounded in bytes and time, while the response goes out. Once the body has ended the connection
//! even stays open for the next request.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// At most this much of an unread body is discarded…
const LINGER_BYTES: u64 = 32 * 1024 * 1024;
/// …for at most this long; past either, the connection is closed.
const LINGER_TIME: Duration = Duration::from_secs(5);

/// A request body that, dropped before its end, is read to its end in the background.
pub struct Lingering {
    /// `None` once the body has ended.
    body: Option<Incoming>,
}

impl Lingering {
    pub fn new(body: Incoming) -> Self {
        Self { body: Some(body) }
    }
}

impl Body for Lingering {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let Some(body) = self.body.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(body).poll_frame(cx);
        // Ended, or broken off: nothing is left to linger for.
        if matches!(polled, Poll::Ready(None | Some(Err(_)))) {
            self.body = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let Some(body) = self.body.take() else {
            return;
        };
        if body.is_end_stream() {
            return;
        }
        // Dropped outside a runtime (never, in the server): then the connection just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(discard(body));
        }
    }
}

/// Reads `body` to its end, dropping what arrives, within [`LINGER_BYTES`] and [`LINGER_TIME`].
async fn discard(mut body: Incoming) {
    let deadline = tokio::time::Instant::now() + LINGER_TIME;
    let mut discarded: u64 = 0;
    while discarded <= LINGER_BYTES {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                discarded += frame.data_ref().map_or(0, |data| data.len() as u64);
            }
            // Ended, broken off or too slow.
            Ok(None | Some(Err(_))) | Err(_) => return,
        }
    }
}
