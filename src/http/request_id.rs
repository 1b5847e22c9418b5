//! `X-Request-Id` (SPEC §4): a valid incoming id is kept, anything else is replaced by a fresh one.
//! The id is echoed on the response, recorded on the request's tracing span (so it is in every log
//! line of the request), and available to outgoing calls through [`current`].

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use tokio::task::futures::TaskLocalFuture;

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request id of the request being handled, for handlers and clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

tokio::task_local! {
    static CURRENT: String;
}

/// The id of the request whose handler is running, if any: service clients forward it downstream.
pub fn current() -> Option<String> {
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

pub async fn assign(mut request: Request, next: Next) -> Response {
    let (id, value) = assign_to(&mut request);
    let mut response = within(id, next.run(request)).await;
    response.headers_mut().insert(X_REQUEST_ID, value);
    response
}

/// Gives `request` its id (the header and a [`RequestId`]) and returns the id and the header value
/// to echo on the response, for [`within`].
pub fn assign_to(request: &mut Request) -> (String, HeaderValue) {
    let incoming = request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_valid(id))
        .map(str::to_owned);
    let id = incoming.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    // `is_valid` and UUIDs only admit visible ASCII, so the header value always builds.
    let value = HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("invalid"));
    request.headers_mut().insert(X_REQUEST_ID, value.clone());
    request.extensions_mut().insert(RequestId(id.clone()));
    (id, value)
}

/// Runs `handling` with `id` as the [`current`] request id.
pub fn within<F: std::future::Future>(id: String, handling: F) -> TaskLocalFuture<String, F> {
    CURRENT.scope(id, handling)
}
