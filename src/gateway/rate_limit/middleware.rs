//! The per-client-IP middleware (outermost, before authentication, so sign-in attempts are limited
//! too) and the per-user check the auth layer makes once it knows the user.

use std::fmt::Write;
use std::net::SocketAddr;

use arrayvec::ArrayString;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::client_ip::{client_ip, write_bucket};
use super::{Decision, RateLimiter, RouteClass, classify};
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
    let mut key = KeyBuf::new();
    // Written before the match: formatting arguments must not live across the await.
    let written = write!(key, "ip:{}:", class.as_str()).and_then(|()| write_bucket(&mut key, ip));
    let decision = match written {
        Ok(()) => limiter.check(key.as_str(), limit, limiter.window()).await,
        // Longer than any address makes it; counted under its own name rather than not at all.
        Err(_) => {
            let key = format!("ip:{}:{}", class.as_str(), super::client_bucket(ip));
            limiter.check(&key, limit, limiter.window()).await
        }
    };
    if !decision.allowed {
        metrics::counter!("gateway_rate_limit_rejections_total", "scope" => "ip", "class" => class.as_str())
            .increment(1);
        return reject(decision);
    }
    let mut response = next.run(request).await;
    apply_tighter(&mut response, decision);
    response
}

/// Counts a request of `user` to `path` against the per-user limit: `None` when the limit does not
/// apply, else the decision to put on the response or the 429 to answer instead.
pub async fn check_user(
    limiter: &RateLimiter,
    path: &str,
    user: &(impl std::fmt::Display + ?Sized),
) -> Option<Result<Decision, Response>> {
    let limit = limiter.user_limit();
    let class = classify(path);
    // Webhooks act for no user; a stray subject there must not spend a user's budget.
    if is_exempt(path) || class == RouteClass::Webhooks || limit == 0 {
        return None;
    }
    let mut key = KeyBuf::new();
    let written = write!(key, "user:{user}");
    let decision = match written {
        Ok(()) => limiter.check(key.as_str(), limit, limiter.window()).await,
        Err(_) => {
            limiter
                .check(&format!("user:{user}"), limit, limiter.window())
                .await
        }
    };
    if !decision.allowed {
        metrics::counter!("gateway_rate_limit_rejections_total", "scope" => "user", "class" => class.as_str())
            .increment(1);
        return Some(Err(reject(decision)));
    }
    Some(Ok(decision))
}

/// A limiter key, built on the stack (every request is checked): at most `user:` and a UUID or
/// `ip:`, a class and an address.
type KeyBuf = ArrayString<96>;

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
pub fn apply_tighter(response: &mut Response, decision: Decision) {
    if let Some(Applied(applied)) = response.extensions().get::<Applied>() {
        if applied.remaining <= decision.remaining {
            return;
        }
    }
    decision.apply_headers(response.headers_mut());
    response.extensions_mut().insert(Applied(decision));
}
