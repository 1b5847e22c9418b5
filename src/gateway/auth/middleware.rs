//! The middleware that turns a session cookie or a bearer token into a verified user for
//! everything behind the gateway.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tower_sessions::Session;
use tower_sessions::session::Id;

use crate::gateway::GatewayState;
use crate::gateway::rate_limit::Admitted;
use crate::http::ApiError;
use crate::identity::users::{self};

use super::bypass::Identified;
use super::cache::CacheKey;
use super::{Authenticated, session, tokens};

pub(super) fn unauthorized() -> ApiError {
    ApiError::unauthorized("Unauthorized")
}

/// Admits and authenticates every request the gateway routes. It is counted against its client's
/// rate limit first (sign-in attempts too), then non-public paths without a valid session are
/// answered 401 here, so nothing behind the gateway ever sees an anonymous request it did not ask
/// for; a signed-in request is counted against its user's rate limit as well.
///
/// A sign-in found in the identity cache costs no I/O to know, so both limits are counted in one
/// round trip before anything else. Otherwise the client's limit is counted before the session
/// store and the database are asked, so a flood of made-up cookies is limited like any other.
///
/// The session is absent when the request went around the session layer ([`super::bypass`]):
/// what it signs in with was found before, and needs no session to resolve.
pub async fn authenticate(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    session: Option<Extension<Session>>,
    request: Request,
    next: Next,
) -> Response {
    let session = session.map(|Extension(session)| session);
    serve_authenticated(&state, peer, session, request, |mut request, auth| {
        if let Some(auth) = auth {
            request.extensions_mut().insert(auth);
        }
        next.run(request)
    })
    .await
}

/// What [`authenticate`] does, with `serve` for what comes after it: `serve` gets the admitted
/// request and its signed-in user (`None` on a public path), and its response gets the
/// `RateLimit-*` headers. The gateway's forwarding path calls it directly, without a router or a
/// middleware future around it ([`crate::gateway::forwarding`]).
pub(crate) async fn serve_authenticated<F, Fut>(
    state: &GatewayState,
    peer: SocketAddr,
    session: Option<Session>,
    mut request: Request,
    serve: F,
) -> Response
where
    F: FnOnce(Request, Option<Authenticated>) -> Fut,
    Fut: Future<Output = Response>,
{
    let identified = request.extensions_mut().remove::<Identified>();
    let limiter = &state.limiter;
    let path = request.uri().path();
    // Never routed, for anyone: the same 404 with or without a session, revealing nothing. A
    // request the bypass identified was found forwarded, neither internal nor public, already.
    let internal = identified.is_none() && crate::gateway::proxy::routes::is_internal(path);
    let public = identified.is_none() && !internal && state.public.matches(path);
    let (credential, cached) = match identified {
        _ if internal || public => (None, None),
        // Found before the session layer, and the same as the session layer found, if it ran.
        Some(found) if agrees(&found.credential, session.as_ref()) => {
            (Some(found.credential), found.cached)
        }
        _ => {
            let credential = credential(request.headers(), || session.as_ref()?.id());
            let cached = credential
                .as_ref()
                .and_then(|credential| state.auth_cache.get(credential));
            (credential, cached)
        }
    };
    let user = cached.as_ref().map(|auth| &auth.context.user_id);
    let charges = limiter.charges(&request, peer.ip(), user);
    let mut admitted = match limiter.admit(&charges).await {
        Ok(admitted) => admitted,
        Err(rejected) => return rejected,
    };
    if internal {
        let mut response = crate::http::error::not_found(request).await.into_response();
        admitted.apply(&mut response);
        return response;
    }
    if public {
        let mut response = serve(request, None).await;
        admitted.apply(&mut response);
        return response;
    }
    let Some(credential) = credential else {
        return unauthorized().into_response();
    };
    if matches!(credential, CacheKey::Session(_))
        && !state
            .write_origins
            .admits(request.method(), request.headers())
    {
        return ApiError::forbidden("A write from another origin's page is refused")
            .into_response();
    }
    if let CacheKey::Token(_) = credential {
        // The token is the gateway's business; it does not travel downstream.
        request.headers_mut().remove(header::AUTHORIZATION);
    }
    let auth = match cached {
        Some(auth) => auth,
        // Boxed: the identity cache answers most requests, and resolving a sign-in (the session
        // store, the database, a second count) would otherwise size every request's future.
        None => {
            let path = request.uri().path();
            match Box::pin(sign_in(state, credential, session.as_ref(), path)).await {
                Ok((auth, user)) => {
                    admitted = admitted.and(user);
                    auth
                }
                Err(response) => return response,
            }
        }
    };
    // A white-label domain serves its tenant only: to anyone else it has nothing (404).
    match state.hosts.admits(&state.db, &request, &auth).await {
        Ok(true) => {}
        Ok(false) => return crate::http::error::not_found(request).await.into_response(),
        Err(e) => return e.into_response(),
    }
    let mut response = serve(request, Some(auth)).await;
    admitted.apply(&mut response);
    response
}

/// Resolves a sign-in the identity cache does not hold, keeps it there, and counts the request
/// against its user's rate limit for `path`: the signed-in user and what it was admitted on, or
/// the response that refuses it (401 when the sign-in is gone, 429 over the user's limit).
async fn sign_in(
    state: &GatewayState,
    credential: CacheKey,
    session: Option<&Session>,
    path: &str,
) -> Result<(Authenticated, Admitted), Response> {
    let seen = state.auth_cache.changes();
    let resolved = match &credential {
        CacheKey::Token(token) => resolve_bearer(state, token).await,
        CacheKey::Session(_) => match session {
            Some(session) => resolve(state, session).await,
            // The bypass lets a session cookie through only with its sign-in cached.
            None => Err(ApiError::internal(
                "a session cookie to resolve without the session layer",
            )),
        },
    };
    let auth = match resolved {
        Ok(Some(auth)) => auth,
        Ok(None) => {
            // Revoked: the other requests of this sign-in stop using it now, not once their entry
            // runs out.
            state.auth_cache.forget(&credential);
            return Err(unauthorized().into_response());
        }
        Err(e) => return Err(e.into_response()),
    };
    state.auth_cache.put(credential, auth.clone(), seen);
    // The per-user rate limit, here rather than in a layer of its own: it always runs right after
    // authentication, and needs nothing but the user.
    let limiter = &state.limiter;
    let user = limiter.user_charge(path, &auth.context.user_id);
    let admitted = limiter.admit(&user.into_iter().collect()).await?;
    Ok((auth, admitted))
}

/// What a request signs in with, which is also where its resolved sign-in is kept in the identity
/// cache: a bearer token, else the session its cookie names (`session`, asked only without a
/// token: the session layer's, or the cookie read before that layer).
pub(super) fn credential(
    headers: &HeaderMap,
    session: impl FnOnce() -> Option<Id>,
) -> Option<CacheKey> {
    match bearer_token(headers) {
        Some(token) => Some(CacheKey::Token(token)),
        None => session().map(CacheKey::Session),
    }
}

/// Whether a credential found before the session layer is the one the layer found, when it ran:
/// a bearer token wins over any cookie; a session must be the layer's own.
fn agrees(found: &CacheKey, session: Option<&Session>) -> bool {
    match (found, session) {
        (CacheKey::Token(_), _) | (_, None) => true,
        (CacheKey::Session(id), Some(session)) => session.id().as_ref() == Some(id),
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
