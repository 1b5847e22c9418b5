//! Forwarding to the instances of one service over HTTP (SPEC §5.2), as a stack of small decisions:
//! the breaker says whether to call at all, the balancer picks an instance, one deadline bounds the
//! exchange up to the response head, and a retry happens only when [`is_retriable`] allows it.
//! Bodies stream both ways; nothing is buffered.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use arrayvec::ArrayVec;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::uri::PathAndQuery;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, Version, header};
use axum::response::Response;
use hyper::body::{Frame, Incoming, SizeHint};
use tokio::time::Instant;
use tracing::Span;

use super::balancer::{Balancer, Ejection, InFlight};
use super::breaker::{BreakerSettings, CircuitBreaker};
use super::pool::{ConnectionPool, SendError};
use super::upgrade;
use crate::config::{Config, Service};
use crate::http::ApiError;
use crate::infra::workers::Workers;
use crate::observability;

/// The first retry waits 50–100 ms, the second 100–200 ms, …
const BACKOFF_BASE: Duration = Duration::from_millis(50);

/// The key a consistent-hash balancer sticks on (the Socket.IO `sid` or the session cookie), when
/// the caller passes it as a request extension rather than as an argument of [`HttpUpstream::forward`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affinity(pub Option<String>);

/// Marks a request that must reach the instance its affinity key hashes to, whatever the
/// balancing policy: a Socket.IO session lives in one instance's memory, so its handshake, its
/// polls and its websocket upgrade all go there.
#[derive(Debug, Clone, Copy)]
pub struct Pinned;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("circuit open, retry after {retry_after:?}")]
    CircuitOpen { retry_after: Duration },
    #[error("invalid exchange: {0}")]
    Upstream(String),
    /// The client's own request body failed while it was being forwarded: it was over the body
    /// limit, or the client went away. Not the upstream's fault, so the breaker never hears of it.
    #[error("the request body failed: {message}")]
    ClientBody { too_large: bool, message: String },
    /// The deadline passed while the client was still sending its body: a slow upload, not a
    /// slow upstream (which cannot answer a request it has not read). The breaker never hears
    /// of it, or anyone could open it by trickling bodies.
    #[error("the request body did not arrive within {0:?}")]
    ClientTimeout(Duration),
}

impl ProxyError {
    /// The §4 error the client sees; causes are logged where they happen, never shown.
    pub fn into_api_error(self, service: Service) -> ApiError {
        let service = service.as_str();
        match self {
            ProxyError::Timeout(timeout) => ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "Upstream {service} did not answer within {}ms",
                    timeout.as_millis()
                ),
            ),
            ProxyError::Connect(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("Upstream {service} is unreachable"),
            ),
            ProxyError::CircuitOpen { retry_after } => {
                // Retry-After counts whole seconds; rounding down to 0 would invite an instant retry.
                let seconds = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                ApiError::service_unavailable(format!(
                    "Upstream {service} is unavailable (circuit open)"
                ))
                .with_header(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)))
            }
            ProxyError::Upstream(_) => ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("Upstream {service} sent an invalid response"),
            ),
            ProxyError::ClientBody {
                too_large: true, ..
            } => ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large"),
            ProxyError::ClientBody { .. } => {
                ApiError::bad_request("The request body could not be read")
            }
            ProxyError::ClientTimeout(timeout) => ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "The request body did not arrive within {}ms",
                    timeout.as_millis()
                ),
            ),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ProxyError::Timeout(_) => "timeout",
            ProxyError::Connect(_) => "connect",
            ProxyError::CircuitOpen { .. } => "circuit_open",
            ProxyError::Upstream(_) => "upstream",
            ProxyError::ClientBody { .. } => "client_body",
            ProxyError::ClientTimeout(_) => "client_timeout",
        }
    }
}

/// The instances of one service, with their breaker, balancer and connection pools.
pub struct HttpUpstream {
    service: Service,
    /// The kept connections, per connection thread and instance.
    pool: ConnectionPool,
    breaker: CircuitBreaker,
    balancer: Balancer,
    retries: u32,
    health_interval: Duration,
    health_timeout: Duration,
    /// Per instance (by index), where it is reached.
    addresses: Vec<Address>,
    /// `gateway_upstream_duration_seconds` by status label, registered once per label.
    durations: RwLock<HashMap<String, metrics::Histogram>>,
}

/// Where one instance is reached, parsed once from its URL.
struct Address {
    /// The `host:port` to connect to.
    connect: String,
    /// The `Host` its requests carry (`host:port` of its URL), made once rather than per request.
    host: HeaderValue,
    /// The path its URL puts before every request's (`/orders` of `http://host:port/orders`);
    /// `None` for a URL without one, whose requests keep their path as it is.
    prefix: Option<String>,
}

impl Address {
    fn parse(service: Service, base: &str) -> anyhow::Result<Self> {
        let invalid = |reason: &dyn std::fmt::Display| {
            anyhow::anyhow!("{} URL {base} {reason}", service.as_str())
        };
        let uri: Uri = base
            .parse()
            .map_err(|e| invalid(&format_args!("is invalid: {e}")))?;
        // The pool speaks plain HTTP; anything else would silently go out unencrypted.
        let authority = uri
            .authority()
            .filter(|_| uri.scheme_str() == Some("http"))
            .ok_or_else(|| invalid(&"must be http://host:port"))?;
        if uri.query().is_some() {
            return Err(invalid(&"must not have a query"));
        }
        let host = HeaderValue::from_str(authority.as_str())
            .map_err(|e| invalid(&format_args!("has an invalid host: {e}")))?;
        let port = authority.port_u16().unwrap_or(80);
        let connect = format!("{}:{port}", authority.host());
        let path = uri.path().trim_end_matches('/');
        let prefix = (!path.is_empty()).then(|| path.to_owned());
        Ok(Self {
            connect,
            host,
            prefix,
        })
    }
}

impl HttpUpstream {
    pub fn new(service: Service, instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !instances.is_empty(),
            "service {} has no instances",
            service.as_str()
        );
        let addresses = instances
            .iter()
            .map(|base| Address::parse(service, base))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let pool = ConnectionPool::new(
            addresses.iter().map(|a| a.connect.clone()).collect(),
            config.server.connection_threads(),
        );
        Ok(Self {
            service,
            pool,
            breaker: CircuitBreaker::new(
                service.as_str(),
                BreakerSettings::from_config(&config.proxy),
            ),
            balancer: Balancer::new(
                config.proxy.load_balancing,
                Ejection {
                    after_failures: config.proxy.eject_after_failures,
                    duration: Duration::from_millis(config.proxy.eject_for_ms),
                },
                instances,
            ),
            health_interval: Duration::from_millis(config.proxy.health_check_interval_ms.max(1)),
            health_timeout: Duration::from_millis(config.proxy.health_check_timeout_ms),
            retries: config.proxy.retries,
            addresses,
            durations: RwLock::default(),
        })
    }

    pub fn service(&self) -> Service {
        self.service
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Whether the instance a request goes to depends on its client's affinity key: under
    /// consistent hashing, or for a request `pinned` to its instance, among several instances.
    pub fn keys_on_client(&self, pinned: bool) -> bool {
        self.balancer.keys_on_client(pinned)
    }

    /// Sends `request` (URI = path and query, headers already sanitized) to one instance and
    /// returns its response with the body still streaming. `affinity` overrides an [`Affinity`]
    /// extension of the request.
    pub async fn forward(
        &self,
        request: Request,
        timeout: Duration,
        affinity: Option<&str>,
    ) -> Result<Response, ProxyError> {
        let started = Instant::now();
        let deadline = started + timeout;
        let (mut parts, body) = request.into_parts();
        let pinned = parts.extensions.get::<Pinned>().is_some();
        let websocket = upgrade::is_websocket(&parts.headers);
        let mut client_upgrade = websocket
            .then(|| parts.extensions.remove::<hyper::upgrade::OnUpgrade>())
            .flatten();
        let mut lease = parts.extensions.remove::<super::live::Lease>();
        // Borrowed for the whole exchange: nothing removes from the extensions after this.
        let key = affinity.or_else(|| {
            parts
                .extensions
                .get::<Affinity>()
                .and_then(|a| a.0.as_deref())
        });
        let retriable = is_retriable(&parts.method, &parts.headers, &body);
        let mut headers = parts.headers;
        strip_hop_by_hop(&mut headers);
        if websocket {
            upgrade::keep(&mut headers);
        }
        // Host names the instance (set per attempt); the client's travels in X-Forwarded-Host.
        headers.remove(header::HOST);
        let path = parts.uri.path_and_query();
        let mut body = Some(body);
        let mut tried = Vec::new();
        let mut last_error = None;
        loop {
            let permit = match self.breaker.try_acquire() {
                Ok(permit) => permit,
                // A retry refused by the breaker reports the failure that made it necessary.
                Err(open) => {
                    let error = ProxyError::CircuitOpen {
                        retry_after: open.retry_after,
                    };
                    return Err(self.failed(last_error.unwrap_or(error), started));
                }
            };
            let index = if pinned {
                self.balancer.pick_pinned(key, &tried)
            } else {
                self.balancer.pick(key, &tried)
            };
            let instance = &self.balancer.instances[index];
            let (outgoing_body, sent) = SentBody::wrap(body.take().unwrap_or_default());
            let mut outgoing = Request::new(outgoing_body);
            *outgoing.method_mut() = parts.method.clone();
            // The pool speaks HTTP/1.1 whatever the client spoke to us.
            *outgoing.version_mut() = Version::HTTP_11;
            *outgoing.headers_mut() = headers.clone();
            self.address(index, path, &mut outgoing)
                .map_err(|e| self.failed(ProxyError::Upstream(e.to_string()), started))?;
            let in_flight = InFlight::start(instance);
            match tokio::time::timeout_at(deadline, self.pool.send(index, outgoing)).await {
                Err(_) if SentBody::waiting_on_client(&sent) => {
                    // Dropping the permit gives no verdict: the client is slow, not the upstream.
                    drop(permit);
                    tracing::debug!(
                        upstream = self.service.as_str(),
                        "the client's body did not arrive in time"
                    );
                    return Err(ProxyError::ClientTimeout(timeout));
                }
                Err(_) => {
                    permit.failure();
                    return Err(self.failed(ProxyError::Timeout(timeout), started));
                }
                Ok(Ok(response)) => {
                    self.balancer.answered(index);
                    let status = response.status();
                    if matches!(status.as_u16(), 502..=504) {
                        permit.failure();
                    } else {
                        permit.success();
                    }
                    self.observe(status.as_str(), started);
                    if status == StatusCode::SWITCHING_PROTOCOLS
                        && let Some(client) = client_upgrade.take()
                    {
                        return Ok(upgrade::splice(response, client, in_flight, lease.take()));
                    }
                    return Ok(into_streaming_response(response, in_flight));
                }
                Ok(Err(error)) => {
                    let error = classify(&error);
                    if let ProxyError::ClientBody { .. } = error {
                        // Dropping the permit gives no verdict: the upstream did nothing wrong.
                        drop(permit);
                        tracing::debug!(upstream = self.service.as_str(), %error, "client body failed");
                        return Err(error);
                    }
                    permit.failure();
                    if !matches!(error, ProxyError::Connect(_)) {
                        return Err(self.failed(error, started));
                    }
                    self.balancer.connection_failed(index);
                    let attempt = tried.len() as u32;
                    let delay = backoff(attempt);
                    if !retriable || attempt >= self.retries || Instant::now() + delay >= deadline {
                        return Err(self.failed(error, started));
                    }
                    tracing::debug!(upstream = self.service.as_str(), %error, "retrying");
                    tokio::time::sleep(delay).await;
                    tried.push(index);
                    last_error = Some(error);
                }
            }
        }
    }

    /// Starts probing `GET {instance}/health/ready` every `proxy.health_check_interval_ms` until
    /// shutdown. Readiness, not liveness: an instance whose database is down answers the process
    /// probe but serves nothing, and must leave the rotation.
    pub fn spawn_health_checks(self: &Arc<Self>, workers: &Workers) {
        let upstream = Arc::clone(self);
        workers.spawn("upstream-health", |stop| async move {
            let mut tick = tokio::time::interval(upstream.health_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => upstream.check_health().await,
                }
            }
        });
    }

    async fn check_health(&self) {
        let probes = (0..self.balancer.instances.len()).map(|index| self.probe(index));
        futures::future::join_all(probes).await;
    }

    async fn probe(&self, index: usize) {
        let instance = &self.balancer.instances[index];
        let ready = PathAndQuery::from_static("/health/ready");
        let mut request = Request::new(Body::empty());
        let healthy = match self.address(index, Some(&ready), &mut request) {
            Ok(()) => {
                let answer =
                    tokio::time::timeout(self.health_timeout, self.pool.send(index, request));
                matches!(answer.await, Ok(Ok(response)) if response.status().is_success())
            }
            Err(_) => false,
        };
        if instance.healthy.swap(healthy, Ordering::Relaxed) != healthy {
            tracing::warn!(
                upstream = self.service.as_str(),
                instance = %instance.base,
                healthy,
                "upstream instance health changed"
            );
        }
        if healthy {
            self.balancer.answered(index);
        }
    }

    /// Addresses `request` to instance `index` for `path` (path and query; `/` when absent): its
    /// target under the instance's path, and the instance's `Host`.
    fn address(
        &self,
        index: usize,
        path: Option<&PathAndQuery>,
        request: &mut Request,
    ) -> Result<(), axum::http::Error> {
        *request.uri_mut() = self.target_uri(index, path)?;
        if let Some(address) = self.addresses.get(index) {
            request
                .headers_mut()
                .insert(header::HOST, address.host.clone());
        }
        Ok(())
    }

    /// The request target, in origin form, under which instance `index` serves `path` (path and
    /// query; `/` when absent).
    fn target_uri(
        &self,
        index: usize,
        path: Option<&PathAndQuery>,
    ) -> Result<Uri, axum::http::Error> {
        match self.addresses.get(index).and_then(|a| a.prefix.as_deref()) {
            // The client's path as it came: a clone shares its bytes.
            None => Ok(Uri::from(
                path.cloned()
                    .unwrap_or_else(|| PathAndQuery::from_static("/")),
            )),
            Some(prefix) => {
                let path = path.map_or("/", PathAndQuery::as_str);
                Ok(Uri::try_from(format!("{prefix}{path}"))?)
            }
        }
    }

    fn observe(&self, status: &str, started: Instant) {
        let elapsed = started.elapsed().as_secs_f64();
        // Handles taken before the recorder is installed would stay no-ops: keep none until it is.
        if !observability::metrics::is_installed() {
            self.duration_histogram(status).record(elapsed);
            return;
        }
        let known = self
            .durations
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(status)
            .cloned();
        let histogram = known.unwrap_or_else(|| {
            let histogram = self.duration_histogram(status);
            self.durations
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(status.to_owned(), histogram.clone());
            histogram
        });
        histogram.record(elapsed);
    }

    fn duration_histogram(&self, status: &str) -> metrics::Histogram {
        metrics::histogram!(
            "gateway_upstream_duration_seconds",
            "upstream" => self.service.as_str(),
            "status" => status.to_owned()
        )
    }

    fn failed(&self, error: ProxyError, started: Instant) -> ProxyError {
        let upstream = self.service.as_str();
        metrics::counter!("gateway_upstream_errors_total", "upstream" => upstream, "kind" => error.kind())
            .increment(1);
        if !matches!(error, ProxyError::CircuitOpen { .. }) {
            self.observe(error.kind(), started);
            tracing::warn!(upstream, %error, "upstream request failed");
        }
        error
    }
}

/// Retrying is safe only for requests without side effects whose body can be sent again: GET and
/// HEAD with no body at all (so nothing has to be kept for a second attempt).
fn is_retriable(method: &Method, headers: &HeaderMap, body: &Body) -> bool {
    let idempotent = *method == Method::GET || *method == Method::HEAD;
    let no_length = headers
        .get(header::CONTENT_LENGTH)
        .is_none_or(|length| length.as_bytes() == b"0");
    idempotent
        && no_length
        && !headers.contains_key(header::TRANSFER_ENCODING)
        && body.is_end_stream()
}

/// What went wrong short of a response. Our own request body failing (over the limit, or the
/// client gone mid-upload) is the client's doing; a response hyper could not parse is the
/// upstream's; anything else is a connection failure.
fn classify(error: &SendError) -> ProxyError {
    let exchange = match error {
        SendError::Connect { .. } => return ProxyError::Connect(error.to_string()),
        SendError::Exchange(exchange) => exchange,
    };
    let mut message = exchange.to_string();
    let mut source = std::error::Error::source(exchange);
    let mut too_large = false;
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        too_large |= cause.is::<http_body_util::LengthLimitError>();
        source = cause.source();
    }
    if too_large || exchange.is_user() {
        ProxyError::ClientBody { too_large, message }
    } else if exchange.is_parse() {
        ProxyError::Upstream(message)
    } else {
        ProxyError::Connect(message)
    }
}

/// Jittered so that gateways retrying after one upstream blip do not all come back at once.
fn backoff(attempt: u32) -> Duration {
    let base = BACKOFF_BASE * 2u32.saturating_pow(attempt.min(8));
    base + base.mul_f64(rand::random_range(0.0..1.0))
}

const HOP_BY_HOP_COUNT: usize = 9;
/// The headers that describe one connection (RFC 9110 §7.6.1), besides those `Connection` names.
const HOP_BY_HOP: [HeaderName; HOP_BY_HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHORIZATION,
    header::PROXY_AUTHENTICATE,
    header::TRAILER,
];

/// Headers that describe one connection and must not cross the proxy, including every header the
/// `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names finds the hop-by-hop ones present: most messages carry none, and
    // the usual one (an upstream's `Connection: keep-alive`) is removed alone, not with a lookup
    // of every name in the list.
    let mut present = ArrayVec::<HeaderName, HOP_BY_HOP_COUNT>::new();
    for name in headers.keys() {
        // `keys` yields each name once, however many values it has.
        if HOP_BY_HOP.contains(name) {
            let _ = present.try_push(name.clone());
        }
    }
    if present.is_empty() {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        // A name of the list is removed already when present; only another one is parsed, which
        // spares the usual `Connection: keep-alive` a header name made on the heap.
        .filter(|token| {
            !HOP_BY_HOP
                .iter()
                .any(|name| name.as_str().eq_ignore_ascii_case(token))
        })
        .filter_map(|token| HeaderName::try_from(token).ok())
        .collect();
    for name in present.iter().chain(&named) {
        headers.remove(name);
    }
}

fn into_streaming_response(response: hyper::Response<Incoming>, in_flight: InFlight) -> Response {
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    let body = Body::new(InFlightBody {
        body,
        _in_flight: in_flight,
        request: Span::current(),
    });
    Response::from_parts(parts, body)
}

/// A request body that tells whether, when a deadline passes, forma was waiting on the client for
/// it: its last read found nothing yet, and it had not ended. Only then is a timeout the client's;
/// a body never read (no connection yet) or read and then not taken (an upstream that does not
/// read) leaves the timeout the upstream's. A body that is empty from the start (every GET) is not
/// wrapped.
struct SentBody {
    body: Body,
    state: Arc<AtomicU8>,
}

/// [`SentBody`]'s states.
const READ: u8 = 0;
const WAITING_ON_CLIENT: u8 = 1;
const SENT: u8 = 2;

impl SentBody {
    fn wrap(body: Body) -> (Body, Arc<AtomicU8>) {
        if body.is_end_stream() {
            return (body, Arc::new(AtomicU8::new(SENT)));
        }
        let state = Arc::new(AtomicU8::new(READ));
        let watched = Self {
            body,
            state: state.clone(),
        };
        (Body::new(watched), state)
    }

    /// Whether a deadline passing now is the client's doing.
    fn waiting_on_client(state: &AtomicU8) -> bool {
        state.load(Ordering::Acquire) == WAITING_ON_CLIENT
    }
}

impl HttpBody for SentBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        let state = match &frame {
            Poll::Pending => WAITING_ON_CLIENT,
            Poll::Ready(None) => SENT,
            Poll::Ready(Some(_)) if self.body.is_end_stream() => SENT,
            Poll::Ready(Some(_)) => READ,
        };
        self.state.store(state, Ordering::Release);
        frame
    }

    fn is_end_stream(&self) -> bool {
        let end = self.body.is_end_stream();
        if end {
            self.state.store(SENT, Ordering::Release);
        }
        end
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The response body, counting as an in-flight request of its instance until it is dropped, so
/// least-connections sees long downloads and streams. A body that breaks off after its head was
/// answered is logged in the request's span: nothing else sees it, as the status is already sent.
struct InFlightBody {
    body: Incoming,
    _in_flight: InFlight,
    request: Span,
}

impl HttpBody for InFlightBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let frame = Pin::new(&mut self.body).poll_frame(cx);
        if let Poll::Ready(Some(Err(error))) = &frame {
            tracing::error!(parent: &self.request, %error, "upstream response body failed");
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[path = "upstream_tests.rs"]
mod tests;
