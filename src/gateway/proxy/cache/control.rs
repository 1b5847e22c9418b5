//! `Cache-Control` (RFC 9111) as far as a shared cache in front of our own services needs it: what a
//! request allows us to serve, and whether and for how long a response may be stored.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode, header};

/// The directives of every `Cache-Control` header of a message. Unknown directives are ignored, as
/// RFC 9111 §5.2 requires. A directive given twice counts as first given (§4.2.1); an age that is
/// no number reads as 0, stale (§4.2.1 again), and one too large to hold as 2^31 s (§1.2.2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheControl {
    pub no_cache: bool,
    pub no_store: bool,
    pub private: bool,
    pub max_age: Option<u64>,
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    pub fn of(headers: &HeaderMap) -> Self {
        let mut cc = Self::default();
        let directives = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for directive in directives {
            let (name, value) = match directive.split_once('=') {
                Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
                None => (directive.trim(), None),
            };
            let seconds = || Some(delta_seconds(value.unwrap_or("")));
            match name.to_ascii_lowercase().as_str() {
                "no-cache" => cc.no_cache = true,
                "no-store" => cc.no_store = true,
                // `private="set-cookie"` names fields; treated as wholly private, the safe side.
                "private" => cc.private = true,
                "max-age" => cc.max_age = cc.max_age.or_else(seconds),
                "s-maxage" => cc.s_maxage = cc.s_maxage.or_else(seconds),
                _ => {}
            }
        }
        cc
    }
}

/// RFC 9111 §1.2.2 `delta-seconds`: digits only, capped at 2^31; anything else is 0.
fn delta_seconds(value: &str) -> u64 {
    const CAP: u64 = 1 << 31;
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    value.parse::<u64>().map_or(CAP, |n| n.min(CAP))
}

/// What a request lets the cache do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    /// A stored answer may be served (no `no-cache`, `no-store` or `max-age=0`).
    pub may_serve: bool,
    /// The fresh answer may be stored (no `no-store`).
    pub may_store: bool,
    /// The client accepts a stored answer at most this old (`max-age=N`).
    pub max_age: Option<Duration>,
}

impl RequestPolicy {
    pub fn of(headers: &HeaderMap) -> Self {
        let cc = CacheControl::of(headers);
        // HTTP/1.0 clients say `Pragma: no-cache`; it counts only without `Cache-Control`.
        let pragma_no_cache = !headers.contains_key(header::CACHE_CONTROL)
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .any(|v| v.to_ascii_lowercase().contains("no-cache"));
        Self {
            may_serve: !(cc.no_cache || cc.no_store || pragma_no_cache || cc.max_age == Some(0)),
            may_store: !cc.no_store,
            max_age: cc.max_age.map(Duration::from_secs),
        }
    }
}

/// How long a response may be stored, capped by the route's TTL; `None`: it must not be. Only a
/// plain 200 that is the same for everyone with the key's permissions: nothing `private`, nothing
/// that sets a cookie, nothing that varies on request headers the key does not hold, no stream.
pub fn storable_for(
    status: StatusCode,
    headers: &HeaderMap,
    route_ttl: Duration,
) -> Option<Duration> {
    if status != StatusCode::OK
        || headers.contains_key(header::SET_COOKIE)
        || headers.contains_key(header::VARY)
        || is_event_stream(headers)
    {
        return None;
    }
    let cc = CacheControl::of(headers);
    if cc.no_store || cc.no_cache || cc.private {
        return None;
    }
    // A shared cache obeys `s-maxage` over `max-age` (RFC 9111 §5.2.2.10).
    let ttl = match cc.s_maxage.or(cc.max_age) {
        Some(secs) => route_ttl.min(Duration::from_secs(secs)),
        None => route_ttl,
    };
    (!ttl.is_zero()).then_some(ttl)
}

/// Server-sent events never end while the client listens: buffering one would hang it.
fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}
