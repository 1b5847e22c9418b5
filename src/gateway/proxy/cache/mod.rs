//! Response caching for the routes the route table marks cacheable (SPEC §5.2, `cache_ttl_secs`).
//!
//! Who may see a stored answer is decided by its key: the tenant, the caller's roles, permissions
//! and super-admin flag, and the path with its query. Two callers share an entry only when the
//! gateway would have sent the upstream the same request with the same rights, so the upstream's
//! authorization decision is the same for both. Signed-out requests are never cached.
//!
//! `Cache-Control` is honoured both ways (see `control.rs`); only whole 200 bodies up to
//! `proxy.cache_max_entry_bytes` are stored. Every answer of a cacheable route says `X-Cache: HIT`
//! (with `Age`) or `MISS`. The store is in process, or Redis when `redis.url` is set, either way
//! bounded by `proxy.cache_max_bytes`; a store that fails is a miss, never an error.
//!
//! Writes do not invalidate: a cacheable route's answers may be up to its TTL old.

mod control;
mod memory;
mod redis;
pub mod store;

#[cfg(test)]
mod http_tests;
#[cfg(test)]
mod tests;

use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use http_body_util::{BodyExt, BodyStream, StreamBody};
use hyper::body::Frame;
use sha2::{Digest, Sha256};

use crate::config::{ProxyConfig, RouteConfig};
use crate::gateway::auth::Authenticated;
use crate::http::request_id::X_REQUEST_ID;
use crate::identity::context::UserContext;
use crate::infra::redis::RedisHandle;
use control::RequestPolicy;
use store::{CacheStore, CachedResponse, MemoryStore, RedisStore, UnixMillis};

pub const X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// A failing Redis would otherwise log on every cacheable request.
const WARN_EVERY_MS: u64 = 10_000;

pub struct ResponseCache {
    store: Arc<dyn CacheStore>,
    max_entry_bytes: usize,
    last_warning: AtomicU64,
}

impl ResponseCache {
    /// In Redis when the gateway has a Redis handle (shared by every replica), else in process.
    pub fn new(config: &ProxyConfig, redis: Option<RedisHandle>) -> Self {
        let store: Arc<dyn CacheStore> = match redis {
            Some(handle) => Arc::new(RedisStore::new(handle, config.cache_max_bytes)),
            None => Arc::new(MemoryStore::new(config.cache_max_bytes)),
        };
        Self {
            store,
            max_entry_bytes: config.cache_max_entry_bytes,
            last_warning: AtomicU64::new(0),
        }
    }

    /// For a request on `route` (counted in the metrics under `label`): `Break` with the stored
    /// answer, or `Continue` with what to do with the upstream's answer (`None`: nothing, the
    /// request is not cacheable). The request is read before the future starts: it is not `Sync`,
    /// so the future must not hold it.
    pub fn lookup<'a>(
        &'a self,
        route: &RouteConfig,
        label: &'a str,
        auth: Option<&Authenticated>,
        request: &Request,
    ) -> impl Future<Output = ControlFlow<Response, Option<Pending>>> + Send + use<'a> {
        let cacheable = match (route.cache_ttl_secs, auth) {
            // A GET with a body is unusual enough that its answer may depend on it: not cached.
            (Some(ttl), Some(auth))
                if request.method() == Method::GET && request.body().is_end_stream() =>
            {
                Some((
                    Duration::from_secs(ttl),
                    key(&auth.context, request.uri()),
                    RequestPolicy::of(request.headers()),
                ))
            }
            _ => None,
        };
        async move {
            let Some((route_ttl, key, policy)) = cacheable else {
                return ControlFlow::Continue(None);
            };
            let now = now_ms();
            if policy.may_serve {
                match self.store.get(&key, now).await {
                    Ok(Some(entry)) if policy.max_age.is_none_or(|max| age(&entry, now) <= max) => {
                        count(label, "hit");
                        return ControlFlow::Break(hit(&entry, now));
                    }
                    Ok(_) => {}
                    Err(error) => self.failed("lookup", &error, now),
                }
            }
            count(label, if policy.may_serve { "miss" } else { "bypass" });
            ControlFlow::Continue(Some(Pending {
                key,
                route_ttl,
                may_store: policy.may_store,
            }))
        }
    }

    fn failed(&self, op: &'static str, error: &store::StoreError, now: UnixMillis) {
        metrics::counter!("gateway_cache_errors_total", "op" => op).increment(1);
        let last = self.last_warning.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= WARN_EVERY_MS
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(%error, op, "the response cache does not answer; serving uncached");
        }
    }
}

/// A cacheable request on its way upstream: its key, and whether its answer may be kept.
pub struct Pending {
    key: String,
    route_ttl: Duration,
    may_store: bool,
}

impl Pending {
    /// Stores the upstream's answer when it may be (see `control::storable_for`), and returns it
    /// to the client unchanged but for `X-Cache: MISS`. A body over the entry cap, or one that
    /// fails midway, reaches the client exactly as it would have uncached. A body read to be
    /// stored must arrive `within` the route's timeout: the client sees nothing of it until then,
    /// and an upstream that stalls after its head is a 504, not a client waiting for ever.
    pub async fn store(
        self,
        cache: &ResponseCache,
        response: Response,
        within: Duration,
    ) -> Response {
        let (mut parts, body) = response.into_parts();
        parts
            .headers
            .insert(X_CACHE, HeaderValue::from_static("MISS"));
        let ttl = self
            .may_store
            .then(|| control::storable_for(parts.status, &parts.headers, self.route_ttl))
            .flatten();
        let Some(ttl) = ttl else {
            return Response::from_parts(parts, body);
        };
        let too_big = body
            .size_hint()
            .exact()
            .is_some_and(|len| len > cache.max_entry_bytes as u64);
        if too_big {
            return Response::from_parts(parts, body);
        }
        let collected = tokio::time::timeout(within, collect_bounded(body, cache.max_entry_bytes));
        let bytes = match collected.await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(body)) => return Response::from_parts(parts, body),
            Err(_) => {
                tracing::warn!("an upstream stopped sending a cacheable answer");
                return crate::http::ApiError::new(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "The upstream did not finish its answer within {}ms",
                        within.as_millis()
                    ),
                )
                .into_response();
            }
        };
        let now = now_ms();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let entry = CachedResponse {
            stored_at: now,
            expires_at: now.saturating_add(ttl_ms),
            headers: stored_headers(&parts.headers),
            body: bytes.clone(),
        };
        if let Err(error) = cache.store.put(&self.key, Arc::new(entry), now).await {
            cache.failed("store", &error, now);
        }
        Response::from_parts(parts, Body::from(bytes))
    }
}

/// The tenant in clear (so an operator can find a tenant's entries), then a digest of the rights
/// and the request target. Roles, permissions and the path cannot contain `,` or `|`, so no two
/// different inputs hash the same text.
fn key(context: &UserContext, uri: &Uri) -> String {
    let mut roles: Vec<&str> = context.roles.iter().map(|r| r.as_str()).collect();
    roles.sort_unstable();
    roles.dedup();
    let mut permissions: Vec<&str> = context.permissions.iter().map(|p| p.as_str()).collect();
    permissions.sort_unstable();
    permissions.dedup();
    let mut digest = Sha256::new();
    digest.update(roles.join(","));
    digest.update(b"|");
    digest.update(permissions.join(","));
    digest.update(if context.is_super_admin {
        &b"|super|"[..]
    } else {
        &b"|user|"[..]
    });
    digest.update(uri.path_and_query().map_or(uri.path(), |pq| pq.as_str()));
    format!("{}:{}", context.tenant_id, hex::encode(digest.finalize()))
}

fn hit(entry: &CachedResponse, now: UnixMillis) -> Response {
    let mut response = Response::new(Body::from(entry.body.clone()));
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    for (name, value) in &entry.headers {
        headers.append(name.clone(), value.clone());
    }
    headers.insert(X_CACHE, HeaderValue::from_static("HIT"));
    headers.insert(header::AGE, HeaderValue::from(age(entry, now).as_secs()));
    response
}

fn age(entry: &CachedResponse, now: UnixMillis) -> Duration {
    Duration::from_millis(now.saturating_sub(entry.stored_at))
}

/// The headers worth replaying: not this connection's (hop-by-hop, the length the body will set
/// again), not this request's (its id), not the cache's own.
fn stored_headers(headers: &HeaderMap) -> Vec<(HeaderName, HeaderValue)> {
    const NOT_STORED: [HeaderName; 11] = [
        header::CONNECTION,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHENTICATE,
        header::AGE,
        header::DATE,
        X_REQUEST_ID,
        X_CACHE,
    ];
    headers
        .iter()
        .filter(|(name, _)| !NOT_STORED.contains(name) && name.as_str() != "keep-alive")
        .map(|(name, value)| (name.clone(), value.clone()))
        .collect()
}

/// The whole body if it has at most `cap` bytes of data and nothing else; otherwise a body that
/// replays what was read and then the rest (or the error that stopped the read).
async fn collect_bounded(mut body: Body, cap: usize) -> Result<Bytes, Body> {
    let mut frames: Vec<Frame<Bytes>> = Vec::new();
    let mut size = 0usize;
    loop {
        match body.frame().await {
            None => break,
            Some(Ok(frame)) => {
                let data = frame.data_ref().map(Bytes::len);
                size = size.saturating_add(data.unwrap_or(0));
                frames.push(frame);
                if data.is_none() || size > cap {
                    return Err(replay(frames, BodyStream::new(body)));
                }
            }
            Some(Err(error)) => {
                return Err(replay(frames, futures::stream::once(async { Err(error) })));
            }
        }
    }
    let mut whole = Vec::with_capacity(size);
    for frame in frames {
        if let Ok(data) = frame.into_data() {
            whole.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(whole))
}

fn replay(
    read: Vec<Frame<Bytes>>,
    rest: impl futures::Stream<Item = Result<Frame<Bytes>, axum::Error>> + Send + 'static,
) -> Body {
    let frames = futures::stream::iter(read.into_iter().map(Ok)).chain(rest);
    Body::new(StreamBody::new(frames))
}

fn count(route: &str, result: &'static str) {
    metrics::counter!("gateway_cache_requests_total", "route" => route.to_owned(), "result" => result)
        .increment(1);
}

/// Wall-clock now: entries written by one replica are read by another (see [`UnixMillis`]).
fn now_ms() -> UnixMillis {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
