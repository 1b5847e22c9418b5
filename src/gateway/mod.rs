//! The API gateway (SPEC §5): the single entry point of the web app and of Shopify. It signs users
//! in, limits rates, and forwards everything else to the service that owns it.

pub mod audit;
pub mod auth;
pub mod forwarding;
pub mod health;
pub mod hosts;
pub mod proxy;
pub mod push_revocations;
pub mod queues;
pub mod rate_limit;
pub mod ui;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::middleware::from_fn_with_state;
use utoipa_axum::router::OpenApiRouter;

use crate::app::{BusHandle, Readiness};
use crate::clients::order::OrderClient;
use crate::config::Config;
use crate::infra::db::Db;
use crate::infra::redis::RedisHandle;
use crate::infra::sessions::Sessions;
use crate::infra::workers::Workers;
use auth::public::PublicPaths;
use rate_limit::RateLimiter;

/// The gateway's router state: one `Arc`, because every middleware and handler clones it on every
/// request.
#[derive(Clone)]
pub struct GatewayState(Arc<GatewayParts>);

impl std::ops::Deref for GatewayState {
    type Target = GatewayParts;

    fn deref(&self) -> &GatewayParts {
        &self.0
    }
}

/// What the gateway's handlers share.
pub struct GatewayParts {
    pub config: Arc<Config>,
    pub db: Db,
    /// The process's own health, for `/health` and the probes.
    pub readiness: Readiness,
    /// The event bus, for the queue dashboard.
    pub bus: BusHandle,
    pub order: Arc<dyn OrderClient>,
    pub health: Arc<health::HealthAggregator>,
    pub sessions: Sessions,
    pub public: Arc<PublicPaths>,
    pub limiter: RateLimiter,
    pub proxy: Arc<proxy::Proxy>,
    pub tokens: auth::tokens::TokenKeys,
    pub auth_cache: Arc<auth::cache::AuthCache>,
    /// The upgraded connections this gateway holds, ended when their credential is revoked.
    pub live: Arc<proxy::live::LiveConnections>,
    /// Cached answers of the route table's cacheable routes.
    pub response_cache: proxy::cache::ResponseCache,
    /// White-label domains and the tenant each serves.
    pub hosts: hosts::TenantHosts,
    /// Whose pages may write with the session cookie.
    pub write_origins: auth::origin::WriteOrigins,
    /// Ends the push subscriptions of users whose sessions ended.
    pub push_revocations: push_revocations::PushRevocations,
}

/// What the gateway is built on: the process's configuration and ports, handed over by the role
/// wiring.
pub struct GatewayPorts {
    pub config: Arc<Config>,
    pub db: Db,
    /// Present when `redis.url` is configured: sessions, limits, the cache and revocations go there.
    pub redis: Option<RedisHandle>,
    pub workers: Workers,
    pub readiness: Readiness,
    pub bus: BusHandle,
}

impl GatewayState {
    /// `order_router` is the order service's router when it runs in this process (role `all`).
    pub fn new(
        ports: GatewayPorts,
        order: Arc<dyn OrderClient>,
        order_router: Option<Router>,
    ) -> anyhow::Result<Self> {
        let GatewayPorts {
            config,
            db,
            redis,
            workers,
            readiness,
            bus,
        } = ports;
        let health = Arc::new(health::HealthAggregator::new(&config)?);
        let sessions = Sessions::new(&db, redis.as_ref(), &workers);
        let public = Arc::new(PublicPaths::new(&config.proxy.public_paths));
        let limiter = RateLimiter::new(&config.rate_limit, redis.clone());
        let proxy = Arc::new(proxy::Proxy::new(&config, &workers, order_router)?);
        let tokens = auth::tokens::TokenKeys::from_config(&config);
        let cache_ttl = std::time::Duration::from_millis(config.session.cache_ms);
        let auth_cache = Arc::new(auth::cache::AuthCache::new(cache_ttl));
        let stores = proxy::live::Stores {
            db: db.clone(),
            sessions: sessions.clone(),
        };
        let live = proxy::live::LiveConnections::start(
            redis.clone(),
            &workers,
            auth_cache.clone(),
            stores,
        );
        let response_cache = proxy::cache::ResponseCache::new(&config.proxy, redis);
        let hosts = hosts::TenantHosts::new(&config.proxy.tenant_hosts)?;
        let write_origins = auth::origin::WriteOrigins::from_config(&config);
        let push_revocations = push_revocations::PushRevocations::new(db.clone(), order.clone());
        push_revocations.spawn(&workers);
        Ok(Self(Arc::new(GatewayParts {
            config,
            db,
            readiness,
            bus,
            order,
            health,
            sessions,
            public,
            limiter,
            proxy,
            tokens,
            auth_cache,
            live,
            response_cache,
            hosts,
            write_origins,
            push_revocations,
        })))
    }
}

impl FromRef<GatewayState> for Readiness {
    fn from_ref(state: &GatewayState) -> Self {
        state.readiness.clone()
    }
}

/// The gateway's own endpoints, as documented in the OpenAPI document.
pub fn api_routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .merge(crate::health::probe_routes())
        .merge(health::routes())
        .merge(auth::routes())
        .merge(users::routes())
        .merge(queues::routes())
}

/// Everything the gateway serves. Layers, outermost first: CORS, the session cookie, then
/// admission and authentication: the per-IP and per-user rate limits, and 401 for non-public paths
/// without a session. What the gateway forwards skips the session layer when it never reads its
/// session ([`auth::bypass`]).
pub fn router(state: GatewayState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    let authenticated = |router: Router<GatewayState>| {
        router
            .with_state(state.clone())
            .layer(from_fn_with_state(state.clone(), auth::authenticate))
    };
    let sessions =
        |router: Router| auth::session::layer(router, state.sessions.clone(), &state.config);
    let own = authenticated(routes)
        // The operator page holds no data and signs in itself: beside authentication, not behind
        // it, and counted against its client's limit alone.
        .merge(ui::router().layer(from_fn_with_state(
            state.limiter.clone(),
            rate_limit::limit_by_ip,
        )));
    // Whatever no route of the gateway's own answers: forwarded, or refused.
    let forwarding = forwarding::Forwarding::new(state.clone());
    let with_sessions = sessions(Router::new().fallback_service(forwarding.clone()));
    let bypass = auth::bypass::SessionBypass::new(state.clone(), with_sessions, forwarding);
    let app = sessions(own).fallback_service(bypass);
    // Outermost: a preflight is answered before rate limits and sessions are looked at.
    match crate::http::security::cors(&state.config) {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
