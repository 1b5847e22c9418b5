//! The sign-in API (SPEC §5.1): sessions, tokens and their refresh, the current user, password
//! changes.

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use tower_sessions::Session;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use crate::gateway::GatewayState;
use crate::gateway::proxy::live::Revocation;
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};
use crate::identity::users::{self, User};
use crate::identity::{email, password};

use super::cache::CacheKey;
use super::{
    Authenticated, CurrentUser, RequestMeta, UserEnvelope, UserView, lockout, session, tokens,
};

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
    let db = &state.db;
    let pair = lockout::Pair::new(&email, meta.ip);
    reserve_attempt(db, &pair).await?;

    let user = users::find_by_email(db, &email).await?;
    let hash = match &user {
        Some(user) => user.password_hash.as_str(),
        None => decoy_hash().await,
    };
    let verified = password::verify(&body.password, hash).await;
    let Some(user) = user.clone().filter(|u| verified && u.is_active) else {
        // The reserved attempt stays: it is the failure record.
        lockout::forget_old(db).await?;
        crate::gateway::audit::login_failed(state, meta, &email, user.as_ref()).await;
        return Err(ApiError::unauthorized("Invalid e-mail or password"));
    };
    lockout::succeeded(db, &pair).await?;
    Ok(user)
}

/// Records a password attempt for `pair` before it is checked (see [`lockout`]), or refuses it
/// (429) while the pair is locked out. Every check of a user's password goes through it: sign-ins,
/// and the current password of a password change, which guesses the same secret.
async fn reserve_attempt(db: &crate::infra::db::Db, pair: &lockout::Pair) -> Result<(), ApiError> {
    if let lockout::Reservation::Locked(wait) = lockout::reserve(db, pair).await? {
        let seconds = wait.num_seconds().max(1);
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-in attempts; try again later",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(seconds)));
    }
    Ok(())
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
    meta: RequestMeta,
    session: Session,
    Json(body): Json<LoginRequest>,
) -> Result<Json<UserEnvelope>, ApiError> {
    let user = check_credentials(&state, &meta, &body).await?;
    // A new id at sign-in: an id planted before sign-in (session fixation) is worth nothing, here
    // at once, not only once this replica's cached identity for it expires.
    if let Some(old) = session.id() {
        state.auth_cache.forget(&CacheKey::Session(old));
    }
    session.cycle_id().await.map_err(session::failed)?;
    session::write(&session, user.id, user.session_epoch)
        .await
        .map_err(session::failed)?;
    let roles = users::roles_of(&state.db, user.id).await?;
    let auth = Authenticated::new(user, roles);
    crate::gateway::audit::login_succeeded(&state, &meta, &auth).await;
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
    meta: RequestMeta,
    Json(body): Json<LoginRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let user = check_credentials(&state, &meta, &body).await?;
    let roles = users::roles_of(&state.db, user.id).await?;
    let (family, refresh_token) = tokens::start_family(&state.db, &user).await?;
    let auth = Authenticated::new(user, roles);
    let response = token_response(&state, &auth, family, refresh_token)?;
    crate::gateway::audit::token_issued(&state, &meta, &auth).await;
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
    meta: RequestMeta,
    Json(body): Json<RefreshRequest>,
) -> Result<Json<TokenResponse>, ApiError> {
    let db = &state.db;
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
        tokens::Redeemed::Reused { user_id, family } => {
            state.auth_cache.clear();
            state.live.revoke(Revocation::family(user_id, family)).await;
            if let Some(user) = users::find_by_id(db, user_id).await? {
                let roles = users::roles_of(db, user.id).await?;
                crate::gateway::audit::refresh_reused(
                    &state,
                    &meta,
                    &Authenticated::new(user, roles),
                )
                .await;
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
    meta: RequestMeta,
    session: Session,
    CurrentUser(auth): CurrentUser,
) -> Result<StatusCode, ApiError> {
    match auth.token_family {
        // A token holder signs out by ending the token's family: its refresh tokens and, at once,
        // its access tokens (which this replica may have cached under the token).
        Some(family) => {
            tokens::revoke_family(&state.db, family).await?;
            state.auth_cache.clear();
            state
                .live
                .revoke(Revocation::family(auth.user.id, family))
                .await;
        }
        None => {
            let id = session.id();
            if let Some(id) = &id {
                state.auth_cache.forget(&CacheKey::Session(*id));
            }
            session.flush().await.map_err(session::failed)?;
            // Its websockets too, here and on every gateway (they outlive the request).
            if let Some(id) = &id {
                state
                    .live
                    .revoke(Revocation::session(auth.user.id, id))
                    .await;
            }
        }
    }
    crate::gateway::audit::logout(&state, &meta, &auth).await;
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
        (status = 429, description = "Too many wrong passwords for this account from this IP", body = ErrorBody),
    ))]
async fn change_password(
    State(state): State<GatewayState>,
    meta: RequestMeta,
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
    // A session someone else got hold of must not guess its way to the account for good.
    let pair = lockout::Pair::new(&auth.user.email, meta.ip);
    reserve_attempt(&state.db, &pair).await?;
    if !password::verify(&body.current_password, &auth.user.password_hash).await {
        // The reserved attempt stays: it is the failure record.
        lockout::forget_old(&state.db).await?;
        return Err(ApiError::validation(vec![
            "currentPassword is incorrect".to_owned(),
        ]));
    }
    lockout::succeeded(&state.db, &pair).await?;
    let hash = password::hash(&body.new_password)
        .await
        .map_err(ApiError::internal)?;
    let epoch = users::change_password(&state.db, auth.user.id, &hash).await?;
    state.auth_cache.clear();
    // Every connection the user holds open was authenticated at the old epoch, this session's
    // included (it continues under a new id, which its sockets do not know): all of them end, and
    // this browser's reconnect with the cookie it is given now.
    crate::gateway::users::sessions_ended(&state, &auth.user).await;
    // This session survives under a new id and the new epoch; every other one is now stale.
    session.cycle_id().await.map_err(session::failed)?;
    session::write(&session, auth.user.id, epoch)
        .await
        .map_err(session::failed)?;
    crate::gateway::audit::password_changed(&state, &meta, &auth).await;
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
