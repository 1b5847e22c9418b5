//! `/api/v1/push` (SPEC §6.5): the VAPID public key (public, SPEC §5.2), and the signed-in user's
//! subscriptions.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::keys;
use super::subscriptions::{self, Subscription, SubscriptionInput};
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::OrderState;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(vapid_public_key))
        .routes(routes!(subscribe, unsubscribe))
}

/// The server's VAPID public key.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VapidPublicKey {
    /// Uncompressed P-256 point in base64url: `applicationServerKey` of `PushManager.subscribe`.
    pub public_key: String,
}

/// Which subscription to remove.
#[derive(Debug, Deserialize, ToSchema)]
pub struct UnsubscribeInput {
    /// The subscription's endpoint, as the browser reports it.
    pub endpoint: Option<String>,
}

/// The key a browser subscribes with. Public: the web app asks before anyone signs in.
#[utoipa::path(get, path = "/api/v1/push/vapid-public-key", tag = "push",
    responses(
        (status = 200, description = "The VAPID public key", body = VapidPublicKey),
        (status = 503, description = "The database is unavailable", body = ErrorBody)))]
async fn vapid_public_key(
    State(state): State<OrderState>,
) -> Result<Json<VapidPublicKey>, ApiError> {
    let keys = keys::load(&state.push, &state.core.db)
        .await
        .map_err(|e| match e {
            keys::KeyError::Db(e) => ApiError::from(e),
            other => ApiError::internal(other),
        })?;
    Ok(Json(VapidPublicKey {
        public_key: keys.public_key().to_owned(),
    }))
}

/// Subscribes the signed-in user's browser: the `PushSubscription` JSON as the browser gives it.
/// Idempotent per endpoint: 201 the first time, 200 with the same subscription after. A user
/// has at most ten browsers subscribed: one more replaces the one subscribed longest ago.
#[utoipa::path(post, path = "/api/v1/push/subscriptions", tag = "push",
    request_body = SubscriptionInput,
    responses(
        (status = 201, description = "Subscribed", body = Subscription),
        (status = 200, description = "Already subscribed; the keys are updated", body = Subscription),
        (status = 400, description = "Invalid subscription, every problem listed", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing orders.read", body = ErrorBody)))]
async fn subscribe(
    State(state): State<OrderState>,
    ctx: UserContext,
    body: Result<Json<SubscriptionInput>, ApiError>,
) -> Result<(StatusCode, Json<Subscription>), ApiError> {
    // What is pushed is news of orders: only who may read them may receive it.
    ctx.require(Permission::OrdersRead)?;
    let Json(body) = body?;
    let new = body
        .validate(state.production)
        .map_err(ApiError::validation)?;
    let (subscription, created) =
        subscriptions::upsert(&state.core.db, ctx.tenant_id, ctx.user_id, &new).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(subscription)))
}

/// Removes the signed-in user's subscription of an endpoint.
#[utoipa::path(delete, path = "/api/v1/push/subscriptions", tag = "push",
    request_body = UnsubscribeInput,
    responses(
        (status = 204, description = "Unsubscribed"),
        (status = 400, description = "No endpoint given", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 404, description = "The user has no subscription there", body = ErrorBody)))]
async fn unsubscribe(
    State(state): State<OrderState>,
    ctx: UserContext,
    body: Result<Json<UnsubscribeInput>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let Json(body) = body?;
    let endpoint = body.endpoint.as_deref().map(str::trim).unwrap_or_default();
    if endpoint.is_empty() {
        return Err(ApiError::validation(vec![
            "endpoint must be the push service URL of the subscription".into(),
        ]));
    }
    if !subscriptions::remove(&state.core.db, ctx.tenant_id, ctx.user_id, endpoint).await? {
        return Err(ApiError::not_found("Push subscription not found"));
    }
    Ok(StatusCode::NO_CONTENT)
}
