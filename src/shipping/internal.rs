//! The shipping service's internal API (SPEC §7): what the order service calls when shipping
//! runs apart. Every call names its tenant and presents the internal key; none goes through the
//! gateway. [`crate::clients::shipping::HttpShippingClient`] speaks it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use uuid::Uuid;

use super::retries;
use super::shipments::{Shipment, ShipmentRequest};
use super::{CancelError, ShippingState};
use crate::http::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::order::internal::InternalCaller;
use crate::order::retry_queue::{RetryEntry, acted};
use crate::print::internal::{OrderQuery, TenantQuery};

pub fn routes() -> Router<ShippingState> {
    Router::new()
        .route("/internal/shipments", post(create).get(of_order))
        .route("/internal/shipments/{order_id}", delete(cancel))
        .route("/internal/shipments/failed-parcels", get(failed_parcels))
        .route(
            "/internal/shipments/parcels/{id}/send-again",
            post(send_again),
        )
        .route("/internal/shipments/parcels/{id}/give-up", post(give_up))
}

/// `GET /internal/shipments/failed-parcels?tenantId=`: the tenant's part of the retry queue.
async fn failed_parcels(
    _caller: InternalCaller,
    State(state): State<ShippingState>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Vec<RetryEntry>>, ApiError> {
    Ok(Json(retries::entries(&state.core, query.tenant_id).await?))
}

/// `POST /internal/shipments/parcels/{id}/send-again?tenantId=`: the failed parcel, due now.
async fn send_again(
    _caller: InternalCaller,
    State(state): State<ShippingState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<StatusCode, ApiError> {
    acted(retries::send_now(&state.core, query.tenant_id, id).await?)
}

/// `POST /internal/shipments/parcels/{id}/give-up?tenantId=`: no more attempts (EXCEPTION).
async fn give_up(
    _caller: InternalCaller,
    State(state): State<ShippingState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<StatusCode, ApiError> {
    acted(retries::give_up(&state.core, query.tenant_id, id).await?)
}

impl From<CancelError> for ApiError {
    fn from(e: CancelError) -> Self {
        match e {
            CancelError::Db(db) => db.into(),
            CancelError::Sendcloud(message) => ApiError::conflict(message),
        }
    }
}

/// `POST /internal/shipments`: the order's shipment, asked for now if it has none (idempotent:
/// 201 when created, 200 with the one it has).
async fn create(
    _caller: InternalCaller,
    State(state): State<ShippingState>,
    Json(request): Json<ShipmentRequest>,
) -> Result<(StatusCode, Json<Shipment>), ApiError> {
    let problems = request.problems();
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    let (shipment, created) = state.core.request(&request).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(shipment)))
}

/// `GET /internal/shipments?tenantId=&orderId=`: the order's shipments.
async fn of_order(
    _caller: InternalCaller,
    State(state): State<ShippingState>,
    Query(query): Query<OrderQuery>,
) -> Result<Json<Vec<Shipment>>, ApiError> {
    Ok(Json(
        state.core.of_order(query.tenant_id, query.order_id).await?,
    ))
}

/// `DELETE /internal/shipments/{orderId}?tenantId=`: cancels the order's shipment (idempotent);
/// 404 when it has none, 409 when Sendcloud will not cancel its parcel. A parcel Sendcloud cannot
/// be asked about now is cancelled later; the shipment comes back as it is until then.
async fn cancel(
    _caller: InternalCaller,
    State(state): State<ShippingState>,
    Path(order_id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Shipment>, ApiError> {
    state
        .core
        .cancel(query.tenant_id, order_id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Shipment not found"))
}
