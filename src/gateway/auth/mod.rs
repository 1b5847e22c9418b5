//! Authentication at the gateway (SPEC §5.1): sign-in with a session cookie, the current user,
//! password changes, and the middleware that turns a session into a verified user for everything
//! behind the gateway.

pub mod cache;
pub mod lockout;
pub mod public;
pub mod session;
pub mod tokens;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::GatewayState;
use super::rate_limit::RateLimitSubject;
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::{UserRole, permissions_of};
use crate::identity::users::{self, User};
use crate::identity::{email, password};

/// A signed-in user, established by [`authenticate`] for the rest of the request.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: Arc<User>,
    pub context: UserContext,
    /// Signed in with a bearer token of this refresh token family (`None`: a session cookie).
    pub token_family: Option<Uuid>,
}

impl Authenticated {
    pub fn new(user: User, roles: Vec<UserRole>) -> Self {
        let context = UserContext {
            user_id: user.id,
            tenant_id: user.tenant_id,
            email: user.email.clone(),
            permissions: permissions_of(&roles),
            roles,
            is_super_admin: user.is_super_admin,
        };
        Self {
            user: Arc::new(user),
            context,
            token_family: None,
        }
    }

    pub fn view(&self) -> UserView {
        UserView::new(&self.user, &self.context.roles)
    }
}

/// `user` in responses (SPEC §5.1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub tenant_id: Uuid,
    pub roles: Vec<UserRole>,
    pub permissions: Vec<String>,
    pub is_super_admin: bool,
}

impl UserView {
    pub fn new(user: &User, roles: &[UserRole]) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            name: user.name.clone(),
            tenant_id: user.tenant_id,
            roles: roles.to_vec(),
            permissions: permissions_of(roles)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            is_super_admin: user.is_super_admin,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserEnvelope {
    pub user: UserView,
}

/// The signed-in user of this request; 401 when there is none.
pub struct CurrentUser(pub Authenticated);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .map(CurrentUser)
            .ok_or_else(unauthorized)
    }
}

fn unauthorized() -> ApiError {
    ApiError::unauthorized("Unauthorized")
}

/// Resolves the session of every request. Non-public paths without a valid session are answered
/// 401 here, so nothing behind the gateway ever sees an anonymous request it did not ask for.
pub async fn authenticate(
    State(state): State<GatewayState>,
    session: Session,
    mut request: Request,
    next: Next,
) -> Response {
    // Never routed, for anyone: the same 404 with or without a session, revealing nothing.
    if super::proxy::routes::is_internal(request.uri().path()) {
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
            let subject = RateLimitSubject(auth.context.user_id.to_string());
            request.extensions_mut().insert(subject);
            request.extensions_mut().insert(auth);
            next.run(request).await
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
    let db = &state.ctx.db;
    let user = users::find_by_id(db, auth.user_id).await?;
    let Some(user) = user.filter(|u| u.is_active && u.session_epoch == auth.epoch) else {
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
    let db = &state.ctx.db;
    if let Some(family) = claims.family {
        if !tokens::family_is_active(db, family).await? {
            return Ok(None);
        }
    }
    let user = users::find_by_id(db, claims.user_id).await?;
    let Some(user) = user.filter(|u| u.is_active && u.session_epoch == claims.epoch) else {
        return Ok(None);
    };
    let roles = users::roles_of(db, user.id).await?;
    let mut auth = Authenticated::new(user, roles);
    auth.token_family = claims.family;
    Ok(Some(auth))
}

/// Who made a request, for lockout and the audit log.
#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn new(state: &GatewayState, peer: SocketAddr, headers: &HeaderMap) -> Self {
        let trusted = &state.ctx.config.rate_limit.trusted_proxies;
        Self {
            ip: super::rate_limit::client_ip(peer.ip(), headers, trusted),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(512).collect()),
        }
    }
}

pub fn routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(token))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(me))
        .routes(routes!(change_password))
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginRequest {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub password: String,
}

/// A hash to verify against when the e-mail address is unknown, so both paths take the same time
/// and the response time does not tell which addresses exist.
async fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DECOY.get() {
        return hash;
    }
    let hash = password::hash(&password::generate())
        .await
        .unwrap_or_default();
    DECOY.get_or_init(|| hash)
}

/// Checks an e-mail and password under the lockout, the same way for cookie and token sign-ins.
/// A failure is counted, audited and answered 401 whether or not the address exists.
async fn check_credentials(
    state: &GatewayState,
    meta: &RequestMeta,
    body: &LoginRequest,
) -> Result<User, ApiError> {
    let mut problems = Vec::new();
    let email = email::normalize(&body.email)
        .map_err(|m| problems.push(m))
        .ok();
    if body.password.is_empty() {
        problems.push("password should not be empty".to_owned());
    }
    let Some(email) = email.filter(|_| problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };
    let db = &state.ctx.db;
    let pair = lockout::Pair::new(&email, meta.ip);
    if let lockout::Reservation::Locked(wait) = lockout::reserve(db, &pair).await? {
        let seconds = wait.num_seconds().max(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-in attempts; try again later",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds)));
    }

    let user = users::find_by_email(db, &email).await?;
    let hash = match &user {
        Some(user) => user.password_hash.as_str(),
        None => decoy_hash().await,
    };
    let verified = password::verify(&body.password, hash).await;
    let Some(user) = user.clone().filter(|u| verified && u.is_active) else {
        // The reserved attempt stays: it is the failure record.
        lockout::forget_old(db).await?;
        super::audit::login_failed(state, meta, &email, user.as_ref()).await;
        return Err(ApiError::unauthorized("Invalid e-mail or password"));
    };
    lockout::succeeded(db, &pair).await?;
    Ok(user)
}

/// Sign in with e-mail and password; sets the session cookie.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in; the session cookie is set", body = UserEnvelope),
        (status = 400, description = "Malformed input", body = ErrorBody),
        (status = 401, description = "Unknown e-mail or wrong password (indistinguishable)", body = ErrorBody),
        (status = 429, description = "Too many failed attempts for this e-mail from this IP", body = ErrorBody),
    ))]
async fn login(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    Json(body): Json<LoginRequest>,
) -> Result<Json<UserEnvelope>, ApiError> {
    let meta = RequestMeta::new(&state, peer, &headers);
    let user = check_credentials(&state, &meta, &body).await?;
    // A new id at sign-in: an id planted before sign-in (session fixation) is worth nothing, here
    // at once, not only once this replica's cached identity for it expires.
    if let Some(old) = session.id() {
        state.auth_cache.forget(&cache::session_key(&old));
    }
    session.cycle_id().await.map_err(session::failed)?;
    session::write(&session, user.id, user.session_epoch)
        .await
        .map_err(session::failed)?;
    let roles = users::roles_of(&state.ctx.db, user.id).await?;
    let auth = Authenticated::new(user, roles);
    super::audit::login_succeeded(&state, &meta, &auth).await;
    Ok(Json(UserEnvelope { user: auth.view() }))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenResponse {
    /// A JWT for `Authorization: Bearer`, valid for `expiresIn` seconds.
    pub access_token: String,
    /// Opaque; trade it for new tokens at `/api/v1/auth/refresh`. Single use.
    pub refresh_token: String,
    pub expires_in: i64,
    pub user: UserView,
}

fn token_response(
    state: &GatewayState,
    auth: &Authenticated,
    family: Uuid,
    refresh_token: String,
) -> Result<Json<TokenResponse>, ApiError> {
    let access_token =
        tokens::issue_access(&state.tokens, &auth.user, family).map_err(ApiError::internal)?;
    Ok(Json(TokenResponse {
        access_token,
        refresh_token,
        expires_in: tokens::ACCESS_TTL_SECONDS,
        user: auth.view(),
    }))
}

/// Sign in for scripts and integrations: tokens instead of a cookie.
#[utoipa::path(post, path = "/api/v1/auth/token", tag = "auth", request_body = LoginRequest,
    responses(
        (status = 200, description = "An access and a refresh token", body = TokenResponse),
        (status = 400, description = "Malformed input", body = ErrorBody),
        (status = 401, description = "Unknown e-mail or wrong password (indistinguishable)", body = ErrorBody),
        (status = 429, description = "Too many failed attempts for this e-mail from this IP", body = ErrorBody),
    ))]
async fn token(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let meta = RequestMeta::new(&state, peer, &headers);
    let user = check_credentials(&state, &meta, &body).await?;
    let roles = users::roles_of(&state.ctx.db, user.id).await?;
    let (family, refresh_token) = tokens::start_family(&state.ctx.db, &user).await?;
    let auth = Authenticated::new(user, roles);
    let response = token_response(&state, &auth, family, refresh_token)?;
    super::audit::token_issued(&state, &meta, &auth).await;
    Ok(response)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefreshRequest {
    #[serde(default)]
    pub refresh_token: String,
}

/// Trade a refresh token for new tokens. The presented token is spent; presenting it again
/// revokes every token descended from the same sign-in.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth", request_body = RefreshRequest,
    responses(
        (status = 200, description = "New tokens", body = TokenResponse),
        (status = 401, description = "Unknown, expired, revoked or reused refresh token", body = ErrorBody),
    ))]
async fn refresh(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let db = &state.ctx.db;
    match tokens::redeem(db, body.refresh_token.trim()).await? {
        tokens::Redeemed::Fresh {
            user_id,
            family,
            epoch,
            next,
        } => {
            // `next` is bound to `epoch`: if the user moved on, it is worthless and not handed out.
            let user = users::find_by_id(db, user_id).await?;
            let Some(user) = user.filter(|u| u.is_active && u.session_epoch == epoch) else {
                return Err(ApiError::unauthorized("Invalid refresh token"));
            };
            let roles = users::roles_of(db, user.id).await?;
            token_response(&state, &Authenticated::new(user, roles), family, next)
        }
        tokens::Redeemed::Reused { user_id } => {
            if let Some(user) = users::find_by_id(db, user_id).await? {
                let meta = RequestMeta::new(&state, peer, &headers);
                let roles = users::roles_of(db, user.id).await?;
                super::audit::refresh_reused(&state, &meta, &Authenticated::new(user, roles)).await;
            }
            Err(ApiError::unauthorized(
                "Refresh token already used; sign in again",
            ))
        }
        tokens::Redeemed::Invalid => Err(ApiError::unauthorized("Invalid refresh token")),
    }
}

/// Sign out: the session is destroyed on the server and the cookie cleared; signed in with a
/// bearer token, the token's refresh family is revoked and its access tokens stop working.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses(
    (status = 204, description = "Signed out"),
    (status = 401, description = "Not signed in", body = ErrorBody)))]
async fn logout(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    CurrentUser(auth): CurrentUser,
) -> Result<StatusCode, ApiError> {
    match auth.token_family {
        // A token holder signs out by ending the token's family: its refresh tokens and, at once,
        // its access tokens (which this replica may have cached under the token).
        Some(family) => {
            tokens::revoke_family(&state.ctx.db, family).await?;
            state.auth_cache.clear();
        }
        None => {
            if let Some(id) = session.id() {
                state.auth_cache.forget(&cache::session_key(&id));
            }
            session.flush().await.map_err(session::failed)?;
        }
    }
    let meta = RequestMeta::new(&state, peer, &headers);
    super::audit::logout(&state, &meta, &auth).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The signed-in user.
#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses(
    (status = 200, description = "The signed-in user", body = UserEnvelope),
    (status = 401, description = "Not signed in", body = ErrorBody)))]
async fn me(CurrentUser(auth): CurrentUser) -> Json<UserEnvelope> {
    Json(UserEnvelope { user: auth.view() })
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChangePasswordRequest {
    #[serde(default)]
    pub current_password: String,
    #[serde(default)]
    pub new_password: String,
}

/// Change the password; every other session of the user is revoked.
#[utoipa::path(post, path = "/api/v1/auth/change-password", tag = "auth",
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Changed; other sessions are signed out"),
        (status = 400, description = "Wrong current password or a too weak new one", body = ErrorBody),
        (status = 401, description = "Not signed in", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<GatewayState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    session: Session,
    CurrentUser(auth): CurrentUser,
    Json(body): Json<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    if let Err(e) = password::check_policy(&body.new_password) {
        return Err(ApiError::validation(vec![format!(
            "new{}",
            capitalize(&e.to_string())
        )]));
    }
    if !password::verify(&body.current_password, &auth.user.password_hash).await {
        return Err(ApiError::validation(vec![
            "currentPassword is incorrect".to_owned(),
        ]));
    }
    let hash = password::hash(&body.new_password)
        .await
        .map_err(ApiError::internal)?;
    let epoch = users::change_password(&state.ctx.db, auth.user.id, &hash).await?;
    state.auth_cache.clear();
    // This session survives under a new id and the new epoch; every other one is now stale.
    session.cycle_id().await.map_err(session::failed)?;
    session::write(&session, auth.user.id, epoch)
        .await
        .map_err(session::failed)?;
    let meta = RequestMeta::new(&state, peer, &headers);
    super::audit::password_changed(&state, &meta, &auth).await;
    Ok(StatusCode::NO_CONTENT)
}

/// "password must be…" → "Password must be…", so the message names the field `newPassword`.
fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().collect::<String>() + chars.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests;
