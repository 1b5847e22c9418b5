//! The API gateway (SPEC §5): the single entry point of the web app and of Shopify. It signs users
//! in, limits rates, and forwards everything else to the service that owns it.

pub mod audit;
pub mod auth;
pub mod health;
pub mod hosts;
pub mod proxy;
pub mod queues;
pub mod rate_limit;
pub mod ui;
pub mod users;

use std::sync::Arc;

use axum::Router;
use axum::extract::FromRef;
use axum::middleware::from_fn_with_state;
use utoipa_axum::router::OpenApiRouter;

use crate::app::AppContext;
use crate::clients::order::OrderClient;
use crate::infra::sessions::Sessions;
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
    pub ctx: Arc<AppContext>,
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
}

impl GatewayState {
    /// `order_router` is the order service's router when it runs in this process (role `all`).
    pub fn new(
        ctx: Arc<AppContext>,
        order: Arc<dyn OrderClient>,
        order_router: Option<Router>,
    ) -> anyhow::Result<Self> {
        let config = &ctx.config;
        let health = Arc::new(health::HealthAggregator::new(config)?);
        let sessions = Sessions::new(&ctx.db, ctx.redis.as_ref(), &ctx.workers);
        let public = Arc::new(PublicPaths::new(&config.proxy.public_paths));
        let limiter = RateLimiter::new(&config.rate_limit, ctx.redis.clone());
        let proxy = Arc::new(proxy::Proxy::new(&ctx, order_router)?);
        let tokens = auth::tokens::TokenKeys::from_config(config);
        let cache_ttl = std::time::Duration::from_millis(config.session.cache_ms);
        let auth_cache = Arc::new(auth::cache::AuthCache::new(cache_ttl));
        let live = proxy::live::LiveConnections::start(&ctx, auth_cache.clone());
        let response_cache = proxy::cache::ResponseCache::new(&config.proxy, ctx.redis.clone());
        let hosts = hosts::TenantHosts::new(&config.proxy.tenant_hosts)?;
        Ok(Self(Arc::new(GatewayParts {
            ctx,
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
        })))
    }
}

impl FromRef<GatewayState> for Arc<AppContext> {
    fn from_ref(state: &GatewayState) -> Self {
        state.ctx.clone()
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

/// Everything the gateway serves. Layers, outermost first: CORS, the per-IP rate limit, the session
/// cookie, authentication (401 for non-public paths without a session) with the per-user rate limit.
pub fn router(state: GatewayState) -> Router {
    let (routes, _) = api_routes().split_for_parts();
    let app = routes
        .fallback(proxy::forward)
        .with_state(state.clone())
        .layer(from_fn_with_state(state.clone(), auth::authenticate))
        // The operator page holds no data and signs in itself: beside authentication, not behind it.
        .merge(ui::router());
    let app = auth::session::layer(app, state.sessions.clone(), &state.ctx.config);
    let app = app.layer(from_fn_with_state(
        state.limiter.clone(),
        rate_limit::limit_by_ip,
    ));
    // Outermost: a preflight is answered before rate limits and sessions are looked at.
    match crate::http::security::cors(&state.ctx.config) {
        Some(cors) => app.layer(cors),
        None => app,
    }
}

#[cfg(test)]
mod security_tests;
#[cfg(test)]
mod tests;
