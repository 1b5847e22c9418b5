//! The internal API (SPEC §7): what other services call on the order service when split. Mounted
//! only by the `order` role (in role `all` the gateway calls in-process), never proxied by the
//! gateway, and absent from the OpenAPI document: it is not public.
//!
//! Every handler takes an [`InternalCaller`], which proves the caller holds `internal.key`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderName;
use axum::http::request::Parts;
use axum::routing::{delete, get, patch, post};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use super::orders::repository::Tracking;
use super::orders::{self, Order, OrderRecord};
use super::{OrderState, audit};
use crate::config::{Config, Secret};
use crate::http::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::infra::db::Conn;
use crate::print::plan::PrintPlan;

pub const X_INTERNAL_KEY: HeaderName = HeaderName::from_static("x-internal-key");

/// The internal route table.
pub fn routes() -> Router<OrderState> {
    Router::new()
        .route(
            "/internal/audit-logs",
            post(audit::routes::record_from_service),
        )
        .route("/internal/orders/{id}", get(order))
        .route("/internal/orders/{id}/tracking", patch(tracking))
        .route(
            "/internal/orders/shopify/{shopify_order_id}",
            get(order_by_shopify_id),
        )
        .route(
            "/internal/stock-jobs/{id}",
            get(super::inventory::routes::internal_stock_job),
        )
        .route(
            "/internal/users/{id}/push-subscriptions",
            delete(forget_user),
        )
}

/// What the order service forgot of a user who was deleted or deactivated.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forgotten {
    /// Push subscriptions removed.
    pub removed: u64,
}

/// `DELETE /internal/users/{id}/push-subscriptions?tenantId=`: the user's sessions ended in the
/// gateway (a new password, deactivated, deleted); their browsers hear no more.
async fn forget_user(
    _caller: InternalCaller,
    State(state): State<OrderState>,
    Path(user_id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Forgotten>, ApiError> {
    let removed = super::notifications::push::subscriptions::remove_all_of(
        &state.core.db,
        query.tenant_id,
        user_id,
    )
    .await?;
    Ok(Json(Forgotten { removed }))
}

/// An order as other services need it: the order, and what of it should be printed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InternalOrder {
    #[serde(flatten)]
    pub order: Order,
    pub print_plan: PrintPlan,
}

impl From<OrderRecord> for InternalOrder {
    fn from(record: OrderRecord) -> Self {
        let print_plan = orders::retry::print_plan(&record);
        Self {
            order: record.into_order(),
            print_plan,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct TenantQuery {
    tenant_id: Uuid,
}

fn order_not_found() -> ApiError {
    ApiError::not_found("Order not found")
}

/// `GET /internal/orders/{id}?tenantId=`.
async fn order(
    _caller: InternalCaller,
    State(state): State<OrderState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<InternalOrder>, ApiError> {
    let record = orders::repository::find(&mut Conn::Pool(&state.core.db), query.tenant_id, id)
        .await?
        .ok_or_else(order_not_found)?;
    Ok(Json(record.into()))
}

/// `GET /internal/orders/shopify/{shopifyOrderId}?tenantId=`.
async fn order_by_shopify_id(
    _caller: InternalCaller,
    State(state): State<OrderState>,
    Path(shopify_order_id): Path<String>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<InternalOrder>, ApiError> {
    let record = orders::repository::find_by_shopify_id(
        &mut Conn::Pool(&state.core.db),
        query.tenant_id,
        &shopify_order_id,
    )
    .await?
    .ok_or_else(order_not_found)?;
    Ok(Json(record.into()))
}

/// `PATCH /internal/orders/{id}/tracking?tenantId=`: the parcel's carrier and tracking.
async fn tracking(
    _caller: InternalCaller,
    State(state): State<OrderState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
    Json(tracking): Json<Tracking>,
) -> Result<Json<InternalOrder>, ApiError> {
    let record = orders::repository::set_tracking(&state.core.db, query.tenant_id, id, &tracking)
        .await?
        .ok_or_else(order_not_found)?;
    Ok(Json(record.into()))
}

/// `internal.key`, what an [`InternalCaller`] must present. Cheap to clone (once per request).
#[derive(Clone)]
pub struct InternalKey(Option<Arc<Secret>>);

impl InternalKey {
    pub fn from_config(config: &Config) -> Self {
        Self(config.internal.key.clone().map(Arc::new))
    }
}

/// A caller that presented the internal key; anything else is a 401. The router state provides
/// the [`InternalKey`], nothing more.
#[derive(Debug, Clone, Copy)]
pub struct InternalCaller;

impl<S> FromRequestParts<S> for InternalCaller
where
    S: Send + Sync,
    InternalKey: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let InternalKey(key) = InternalKey::from_ref(state);
        // An empty key would let an empty header in: treat it as no key, and refuse everyone.
        let expected = key
            .as_deref()
            .map(|k| k.expose().as_bytes())
            .filter(|k| !k.is_empty());
        let Some(expected) = expected else {
            tracing::warn!("refused an internal call: internal.key is not configured");
            return Err(ApiError::unauthorized("Invalid internal key"));
        };
        let Some(presented) = parts.headers.get(&X_INTERNAL_KEY) else {
            return Err(ApiError::unauthorized("Missing internal key"));
        };
        if keys_match(expected, presented.as_bytes()) {
            Ok(InternalCaller)
        } else {
            tracing::warn!("refused an internal call: wrong internal key");
            Err(ApiError::unauthorized("Invalid internal key"))
        }
    }
}

/// Constant time in the content, and comparing digests hides the key's length too.
fn keys_match(expected: &[u8], presented: &[u8]) -> bool {
    let expected = Sha256::digest(expected);
    let presented = Sha256::digest(presented);
    expected.as_slice().ct_eq(presented.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_matches() {
        assert!(keys_match(b"secret-key", b"secret-key"));
        assert!(!keys_match(b"secret-key", b"secret-kez"));
        assert!(!keys_match(b"secret-key", b"secret-key-and-more"));
        assert!(!keys_match(b"secret-key", b""));
    }
}
