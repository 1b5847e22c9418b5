//! `X-Request-Id` (SPEC §4): a valid incoming id is kept, anything else is replaced by a fresh one.
//! The id is echoed on the response, recorded on the request's tracing span (so it is in every log
//! line of the request), and available to outgoing calls through [`current`].

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use tokio::task::futures::TaskLocalFuture;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of a request: 1 to 128 characters of [`is_valid`], held as the header value it is
/// echoed and forwarded as, so passing it on copies nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(HeaderValue);

impl RequestId {
    /// A fresh random id (a UUID v4), written without a heap string.
    fn fresh() -> Self {
        let mut text = uuid::Uuid::encode_buffer();
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
        // A UUID is visible ASCII, so the header value always builds.
        Self(HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid")))
    }

    pub fn as_str(&self) -> &str {
        // Only ever made of `is_valid` text, which is visible ASCII.
        self.0.to_str().unwrap_or_default()
    }

    pub fn header_value(&self) -> &HeaderValue {
        &self.0
    }
}

tokio::task_local! {
    static CURRENT: RequestId;
}

/// The id of the request whose handler is running, if any: service clients forward it downstream.
pub fn current() -> Option<RequestId> {
    CURRENT.try_with(Clone::clone).ok()
}

/// Ids we pass on unchanged: 1 to 128 characters that cannot smuggle anything into a log line or
/// a header (letters, digits, `-_.:+=/`).
pub fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:+=/".contains(&b))
}

/// Gives `request` its id, the one it came with when valid, else a fresh one, in its
/// `X-Request-Id` header (what the request carries on from here, the gateway's proxy included),
/// and returns it for [`within`] and for echoing on the response.
pub fn assign_to(request: &mut Request) -> RequestId {
    let incoming = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|value| value.to_str().is_ok_and(is_valid))
        .map(|value| RequestId(value.clone()));
    match incoming {
        Some(id) => id,
        None => {
            let id = RequestId::fresh();
            request
                .headers_mut()
                .insert(X_REQUEST_ID, id.header_value().clone());
            id
        }
    }
}

/// Runs `handling` with `id` as the [`current`] request id.
pub fn within<F: std::future::Future>(id: RequestId, handling: F) -> TaskLocalFuture<RequestId, F> {
    CURRENT.scope(id, handling)
}
