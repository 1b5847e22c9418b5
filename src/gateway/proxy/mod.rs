//! The authenticated proxy (SPEC §5.2): the route table, header hygiene, the signed user context,
//! and the upstreams behind it. In role `all` the order service is a router in this process, called
//! without a socket; when split, an [`HttpUpstream`] with timeouts, retries and a circuit breaker.

mod balancer;
pub mod breaker;
pub mod cache;
pub mod headers;
pub mod live;
pub mod pool;
pub mod routes;
mod upgrade;
pub mod upstream;

use std::borrow::Cow;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;

use super::GatewayState;
use super::auth::Authenticated;
use crate::config::{Config, Service, UrlList};
use crate::http::ApiError;
use crate::identity::context::{self, Binding, ContextSigner, InProcessContext, PreparedContext};
use crate::infra::workers::Workers;
use crate::observability::metrics::RouteLabel;
use routes::RouteTable;
pub use upstream::HttpUpstream;

/// Where one service's requests go.
#[derive(Clone)]
pub enum Target {
    /// The service's router, in this process (role `all`).
    InProcess(Router),
    Http(Arc<HttpUpstream>),
    /// No URL configured and nothing in-process to fall back to (GridFlock): 503.
    Unconfigured,
}

pub struct Proxy {
    table: RouteTable,
    targets: HashMap<Service, Target>,
    /// `internal.key`, keyed once for signing user contexts; `None` without a key.
    signer: Option<ContextSigner>,
}

impl Proxy {
    /// `order_in_process` is the order service's router in role `all`, `None` when split. Print and
    /// shipping fall back to the order service until their own URLs are configured.
    pub fn new(
        config: &Config,
        workers: &Workers,
        order_in_process: Option<Router>,
    ) -> anyhow::Result<Self> {
        let http = |service: Service, urls: Vec<String>| -> anyhow::Result<Target> {
            let upstream = Arc::new(HttpUpstream::new(service, urls, config)?);
            upstream.spawn_health_checks(workers);
            Ok(Target::Http(upstream))
        };
        let order = match order_in_process {
            Some(router) => Target::InProcess(router),
            None => http(Service::Order, config.order_urls())?,
        };
        let or_order = |service: Service, urls: &UrlList| -> anyhow::Result<Target> {
            if urls.is_empty() {
                Ok(order.clone())
            } else {
                http(service, urls.0.clone())
            }
        };
        let print = or_order(Service::Print, &config.services.print_url)?;
        let shipping = or_order(Service::Shipping, &config.services.shipping_url)?;
        let gridflock = if config.services.gridflock_url.is_empty() {
            Target::Unconfigured
        } else {
            http(Service::Gridflock, config.services.gridflock_url.0.clone())?
        };
        let targets = HashMap::from([
            (Service::Order, order),
            (Service::Print, print),
            (Service::Shipping, shipping),
            (Service::Gridflock, gridflock),
        ]);
        Ok(Self {
            table: RouteTable::new(&config.proxy.routes),
            targets,
            signer: config
                .internal
                .key
                .as_ref()
                .and_then(|key| ContextSigner::new(key.expose().as_bytes())),
        })
    }

    /// Whether the route table serves `path`: the gateway forwards it when no route of its own
    /// answers it.
    pub fn forwards(&self, path: &str) -> bool {
        self.table.find(path).is_some()
    }

    /// The HTTP upstreams, whose breakers the health report shows.
    pub fn http_upstreams(&self) -> Vec<Arc<HttpUpstream>> {
        let mut upstreams: Vec<Arc<HttpUpstream>> = self
            .targets
            .values()
            .filter_map(|t| match t {
                Target::Http(upstream) => Some(upstream.clone()),
                _ => None,
            })
            .collect();
        upstreams.sort_by_key(|u| u.service().as_str());
        upstreams.dedup_by_key(|u| u.service());
        upstreams
    }
}

/// Sends `request` from `peer`, signed in as `auth` (`None` on a public path), to the service
/// that owns its path: everything that is not the gateway's own ([`super::forwarding`]).
pub async fn forward(
    state: &GatewayState,
    peer: SocketAddr,
    mut request: Request,
    auth: Option<Authenticated>,
) -> Response {
    let path = request.uri().path();
    if routes::is_internal(path) {
        return crate::http::error::not_found(request).await.into_response();
    }
    let socket_io = routes::is_socket_io(path);
    let Some((route, label)) = state.proxy.table.find_labelled(path) else {
        return crate::http::error::not_found(request).await.into_response();
    };
    let config: &Config = &state.config;
    // Only routes marked cacheable pay for the cache; every other request checks this one field.
    // The cache's futures are boxed, so that they do not size every request's.
    let pending = if route.cache_ttl_secs.is_some() {
        let lookup = state
            .response_cache
            .lookup(route, label, auth.as_ref(), &request);
        match Box::pin(lookup).await {
            std::ops::ControlFlow::Break(mut hit) => {
                hit.extensions_mut().insert(RouteLabel(label.clone()));
                return hit;
            }
            std::ops::ControlFlow::Continue(pending) => pending,
        }
    } else {
        None
    };
    let target = state
        .proxy
        .targets
        .get(&route.service)
        .cloned()
        .unwrap_or(Target::Unconfigured);
    let in_process = matches!(target, Target::InProcess(_));
    if let Some(lease) = auth
        .as_ref()
        .and_then(|auth| state.live.lease_for(&request, auth, in_process))
    {
        request.extensions_mut().insert(lease);
    }
    // A cookie scan and a string, made only for a balancer that keys on the client, and before
    // the session cookie is dropped from the forwarded headers.
    let affinity = match &target {
        Target::Http(upstream) if upstream.keys_on_client(socket_io) => {
            headers::affinity(request.headers(), auth.as_ref())
        }
        _ => None,
    };
    headers::prepare(&mut request, peer, &config.rate_limit.trusted_proxies);

    // The route's own timeout, else `services.timeout_ms`.
    let timeout = route.timeout_ms.map_or(
        Duration::from_millis(config.services.timeout_ms),
        Duration::from_millis,
    );
    let mut response = match target {
        Target::InProcess(router) => {
            if let Some(auth) = auth {
                request
                    .extensions_mut()
                    .insert(InProcessContext(auth.context));
            }
            // The route's timeout holds in-process too (SPEC §5.2): a handler stuck on a lock or
            // a runaway query answers 504, as it would split, instead of holding the client and
            // its connection slot until the client gives up.
            match tokio::time::timeout(timeout, router.oneshot(request)).await {
                Ok(Ok(response)) => response,
                Ok(Err(never)) => match never {},
                Err(_) => upstream::ProxyError::Timeout(timeout)
                    .into_api_error(route.service)
                    .into_response(),
            }
        }
        Target::Http(upstream) => {
            if socket_io {
                request.extensions_mut().insert(upstream::Pinned);
            }
            if let (Some(auth), Some(signer)) = (&auth, &state.proxy.signer) {
                if let Err(e) = sign_context(&mut request, auth.prepared(signer)).await {
                    return e.into_response();
                }
            }
            match upstream
                .forward(request, timeout, affinity.as_deref())
                .await
            {
                Ok(response) => response,
                Err(e) => e.into_api_error(route.service).into_response(),
            }
        }
        Target::Unconfigured => ApiError::service_unavailable(format!(
            "The {} service is not configured (services.{}_url)",
            route.service.as_str(),
            route.service.as_str()
        ))
        .into_response(),
    };
    if let Some(pending) = pending {
        response = Box::pin(pending.store(&state.response_cache, response, timeout)).await;
    }
    response.extensions_mut().insert(RouteLabel(label.clone()));
    response
}

/// Signs the user context for exactly this request: method, path and query, and body. A request
/// with a body is read whole for its digest (signed requests are API calls under the 1 MiB limit;
/// webhooks carry no user context and still stream).
async fn sign_context(request: &mut Request, context: &PreparedContext) -> Result<(), ApiError> {
    let digest = if request.body().is_end_stream() {
        Cow::Borrowed(context::empty_body_sha256())
    } else {
        let body = std::mem::take(request.body_mut());
        // Boxed: most signed requests (reads) have no body to collect.
        let bytes = Box::pin(crate::http::limits::collect(body)).await?;
        let digest = context::body_sha256(&bytes);
        *request.body_mut() = Body::from(bytes);
        Cow::Owned(digest)
    };
    // Signed in place: the request is not moved apart and put back together (each move copies
    // it). Its headers step out for a moment, so that the binding can borrow the method and
    // target beside them.
    let mut headers = std::mem::take(request.headers_mut());
    let binding = Binding {
        method: request.method().as_str(),
        target: request.uri().path_and_query().map_or("/", |pq| pq.as_str()),
        body_sha256: &digest,
    };
    context.write_headers(&mut headers, &binding);
    *request.headers_mut() = headers;
    Ok(())
}

/// Which of `instances` a pinned request with affinity `key` reaches while all are healthy: for
/// tests that place clients on chosen instances.
#[cfg(test)]
pub(crate) fn pinned_instance(key: &str, instances: &[String]) -> usize {
    let ejection = balancer::Ejection {
        after_failures: 1,
        duration: Duration::ZERO,
    };
    balancer::Balancer::new(
        crate::config::LoadBalancing::RoundRobin,
        ejection,
        instances.to_vec(),
    )
    .pick_pinned(Some(key), &[])
}

#[cfg(test)]
mod tests;
