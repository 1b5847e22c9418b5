//! The two middlewares: per client IP (outermost, before authentication, so sign-in attempts are
//! limited too) and per signed-in user (after authentication).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::{bucket, client_ip};
use super::{Decision, RateLimitSubject, RateLimiter, RouteClass, classify};
use crate::http::paths::is_under;

/// The decision whose headers a response carries, so whichever middleware runs last keeps the
/// tighter of the two instead of overwriting it.
#[derive(Debug, Clone, Copy)]
struct Applied(Decision);

/// Per-IP limit of the path's route class.
pub async fn limit_by_ip(
    State(limiter): State<RateLimiter>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let class = classify(path);
    let limit = limiter.ip_limit(class);
    if is_exempt(path) || limit == 0 {
        return next.run(request).await;
    }
    let ip = client_ip(peer.ip(), request.headers(), limiter.trusted_proxies());
    let key = format!("ip:{}:{}", class.as_str(), bucket(ip));
    let decision = limiter.check(&key, limit, limiter.window()).await;
    if !decision.allowed {
        metrics::counter!("gateway_rate_limit_rejections_total", "scope" => "ip", "class" => class.as_str())
            .increment(1);
        return reject(decision);
    }
    let mut response = next.run(request).await;
    apply_tighter(&mut response, decision);
    response
}

/// Per-user limit, for requests the auth layer attached a [`RateLimitSubject`] to.
pub async fn limit_by_user(
    State(limiter): State<RateLimiter>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    let class = classify(path);
    let limit = limiter.user_limit();
    let subject = request.extensions().get::<RateLimitSubject>();
    let Some(RateLimitSubject(user)) = subject else {
        return next.run(request).await;
    };
    // Webhooks act for no user; a stray subject there must not spend a user's budget.
    if is_exempt(path) || class == RouteClass::Webhooks || limit == 0 {
        return next.run(request).await;
    }
    let key = format!("user:{user}");
    let decision = limiter.check(&key, limit, limiter.window()).await;
    if !decision.allowed {
        metrics::counter!("gateway_rate_limit_rejections_total", "scope" => "user", "class" => class.as_str())
            .increment(1);
        return reject(decision);
    }
    let mut response = next.run(request).await;
    apply_tighter(&mut response, decision);
    response
}

/// Orchestrators and scrapers probe these constantly; limiting them would fail health checks.
fn is_exempt(path: &str) -> bool {
    is_under(path, "/health")
        || is_under(path, "/docs")
        || matches!(path, "/live" | "/ready" | "/metrics" | "/openapi.json")
}

fn reject(decision: Decision) -> Response {
    let mut response = decision.rejection().into_response();
    response.extensions_mut().insert(Applied(decision));
    response
}

/// Writes `decision`'s headers unless the response already carries a tighter one's.
fn apply_tighter(response: &mut Response, decision: Decision) {
    if let Some(Applied(applied)) = response.extensions().get::<Applied>() {
        if applied.remaining <= decision.remaining {
            return;
        }
    }
    decision.apply_headers(response.headers_mut());
    response.extensions_mut().insert(Applied(decision));
}
