//! The middleware that turns a session cookie or a bearer token into a verified user for
//! everything behind the gateway.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;

use crate::gateway::GatewayState;
use crate::gateway::rate_limit;
use crate::http::ApiError;
use crate::identity::users::{self};

use super::{Authenticated, cache, session, tokens};

pub(super) fn unauthorized() -> ApiError {
    ApiError::unauthorized("Unauthorized")
}

/// Resolves the session of every request. Non-public paths without a valid session are answered
/// 401 here, so nothing behind the gateway ever sees an anonymous request it did not ask for.
/// A signed-in request is then counted against its user's rate limit.
pub async fn authenticate(
    State(state): State<GatewayState>,
    session: Session,
    mut request: Request,
    next: Next,
) -> Response {
    // Never routed, for anyone: the same 404 with or without a session, revealing nothing.
    if crate::gateway::proxy::routes::is_internal(request.uri().path()) {
        return crate::http::error::not_found(request).await.into_response();
    }
    if state.public.matches(request.uri().path()) {
        return next.run(request).await;
    }
    let resolved = match bearer_token(request.headers()) {
        // The token is the gateway's business; it does not travel downstream.
        Some(token) => {
            let key = cache::token_key(&token);
            let resolved = match state.auth_cache.get(&key) {
                Some(hit) => Ok(Some(hit)),
                None => resolve_bearer(&state, &token).await,
            };
            if let Ok(Some(auth)) = &resolved {
                state.auth_cache.put(key, auth.clone());
            }
            request.headers_mut().remove(header::AUTHORIZATION);
            resolved
        }
        None => match session.id().map(|id| cache::session_key(&id)) {
            Some(key) => match state.auth_cache.get(&key) {
                Some(hit) => Ok(Some(hit)),
                None => {
                    let resolved = resolve(&state, &session).await;
                    if let Ok(Some(auth)) = &resolved {
                        state.auth_cache.put(key, auth.clone());
                    }
                    resolved
                }
            },
            None => Ok(None),
        },
    };
    match resolved {
        Ok(Some(auth)) => {
            // A white-label domain serves its tenant only: to anyone else it has nothing (404).
            match state.hosts.admits(&state.db, &request, &auth).await {
                Ok(true) => {}
                Ok(false) => return crate::http::error::not_found(request).await.into_response(),
                Err(e) => return e.into_response(),
            }
            // The per-user rate limit, here rather than in a layer of its own: it always runs
            // right after authentication, and needs nothing but the user.
            let user = auth.context.user_id;
            let decision =
                match rate_limit::check_user(&state.limiter, request.uri().path(), &user).await {
                    Some(Err(rejected)) => return rejected,
                    Some(Ok(decision)) => Some(decision),
                    None => None,
                };
            request.extensions_mut().insert(auth);
            let mut response = next.run(request).await;
            if let Some(decision) = decision {
                rate_limit::apply_tighter(&mut response, decision);
            }
            response
        }
        Ok(None) => unauthorized().into_response(),
        Err(e) => e.into_response(),
    }
}

/// The user behind a session, if the session is signed in, the user active, and the session not
/// revoked (its epoch is the user's current one).
async fn resolve(
    state: &GatewayState,
    session: &Session,
) -> Result<Option<Authenticated>, ApiError> {
    let Some(auth) = session::read(session).await? else {
        return Ok(None);
    };
    let db = &state.db;
    let Some(user) = users::still_signed_in(db, auth.user_id, auth.epoch).await? else {
        let _ = session.flush().await;
        return Ok(None);
    };
    session::slide(session, &auth).await;
    let roles = users::roles_of(db, user.id).await?;
    Ok(Some(Authenticated::new(user, roles)))
}

fn bearer_token(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// The user an access token speaks for, if it verifies and was issued in the user's current
/// session epoch.
async fn resolve_bearer(
    state: &GatewayState,
    token: &str,
) -> Result<Option<Authenticated>, ApiError> {
    let Some(claims) = tokens::verify_access(&state.tokens, token) else {
        return Ok(None);
    };
    let db = &state.db;
    if let Some(family) = claims.family {
        if !tokens::family_is_active(db, family).await? {
            return Ok(None);
        }
    }
    let Some(user) = users::still_signed_in(db, claims.user_id, claims.epoch).await? else {
        return Ok(None);
    };
    let roles = users::roles_of(db, user.id).await?;
    let mut auth = Authenticated::new(user, roles);
    auth.token_family = claims.family;
    auth.token_expires_at = Some(claims.expires_at);
    Ok(Some(auth))
}
