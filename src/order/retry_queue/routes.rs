//! `/api/v1/retry-queue` (SPEC §6.5): retry-queue.manage (admins) to look and act.

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{
    CallKind, RetryEntry, failed_fulfillments, fulfill_now, give_up_fulfillment, not_waiting,
};
use crate::http::extract::{Json, Path};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::OrderState;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(list_retry_queue))
        .routes(routes!(retry_call))
        .routes(routes!(give_up_call))
}

/// The entry an action names, once the actor may act on the queue.
fn entry_named(
    ctx: &UserContext,
    id: Result<Path<String>, ApiError>,
) -> Result<(String, CallKind, uuid::Uuid), ApiError> {
    ctx.require(Permission::RetryQueueManage)?;
    let Path(id) = id?;
    let (kind, entity) = RetryEntry::parse_id(&id).ok_or_else(not_waiting)?;
    Ok((id, kind, entity))
}

/// Every failed call to SimplyPrint, Sendcloud and Shopify that waits to be made again, next
/// attempt first.
#[utoipa::path(get, path = "/api/v1/retry-queue", tag = "retry-queue",
    responses(
        (status = 200, description = "The waiting calls", body = Vec<RetryEntry>),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing retry-queue.manage", body = ErrorBody),
        (status = 503, description = "The print or shipping service did not answer", body = ErrorBody)))]
async fn list_retry_queue(
    State(state): State<OrderState>,
    ctx: UserContext,
) -> Result<Json<Vec<RetryEntry>>, ApiError> {
    ctx.require(Permission::RetryQueueManage)?;
    let core = &state.core;
    let mut entries = failed_fulfillments(&core.db, ctx.tenant_id).await?;
    entries.extend(
        core.print
            .failed_sends(ctx.tenant_id)
            .await
            .map_err(|e| e.into_api_error("print"))?,
    );
    entries.extend(
        core.shipping
            .failed_parcels(ctx.tenant_id)
            .await
            .map_err(|e| e.into_api_error("shipping"))?,
    );
    entries.sort_by(|a, b| (a.next_attempt_at, &a.id).cmp(&(b.next_attempt_at, &b.id)));
    Ok(Json(entries))
}

/// Makes a waiting call now instead of at its next attempt.
#[utoipa::path(post, path = "/api/v1/retry-queue/{id}/retry", tag = "retry-queue",
    params(("id" = String, Path, description = "An entry's id, `{kind}:{entityId}`")),
    responses(
        (status = 204, description = "The call is due now; its sender makes it"),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing retry-queue.manage", body = ErrorBody),
        (status = 404, description = "No such call waits", body = ErrorBody),
        (status = 503, description = "The print or shipping service did not answer", body = ErrorBody)))]
async fn retry_call(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<String>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let (id, kind, entity) = entry_named(&ctx, id)?;
    let core = &state.core;
    match kind {
        CallKind::ShopifyFulfillment => {
            if !fulfill_now(&core.db, ctx.tenant_id, entity).await? {
                return Err(not_waiting());
            }
            core.fulfillments.notify();
        }
        CallKind::SimplyPrintJob => core
            .print
            .send_again(ctx.tenant_id, entity)
            .await
            .map_err(|e| e.into_api_error("print"))?,
        CallKind::SendcloudParcel => core
            .shipping
            .parcel_again(ctx.tenant_id, entity)
            .await
            .map_err(|e| e.into_api_error("shipping"))?,
    }
    tracing::info!(entry = id, "a call of the retry queue is made now, by hand");
    Ok(StatusCode::NO_CONTENT)
}

/// Stops trying a waiting call: a print job fails, a shipment becomes EXCEPTION, an order stays
/// SHIPPED with its last error (to be finished by hand).
#[utoipa::path(delete, path = "/api/v1/retry-queue/{id}", tag = "retry-queue",
    params(("id" = String, Path, description = "An entry's id, `{kind}:{entityId}`")),
    responses(
        (status = 204, description = "No more attempts"),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing retry-queue.manage", body = ErrorBody),
        (status = 404, description = "No such call waits", body = ErrorBody),
        (status = 409, description = "The job moved meanwhile", body = ErrorBody),
        (status = 503, description = "The print or shipping service did not answer", body = ErrorBody)))]
async fn give_up_call(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<String>, ApiError>,
) -> Result<StatusCode, ApiError> {
    let (id, kind, entity) = entry_named(&ctx, id)?;
    let core = &state.core;
    match kind {
        CallKind::ShopifyFulfillment => {
            if !give_up_fulfillment(&core.db, ctx.tenant_id, entity).await? {
                return Err(not_waiting());
            }
        }
        CallKind::SimplyPrintJob => core
            .print
            .give_up_send(ctx.tenant_id, entity)
            .await
            .map_err(|e| e.into_api_error("print"))?,
        CallKind::SendcloudParcel => core
            .shipping
            .give_up_parcel(ctx.tenant_id, entity)
            .await
            .map_err(|e| e.into_api_error("shipping"))?,
    }
    tracing::info!(
        entry = id,
        "a call of the retry queue was given up, by hand"
    );
    Ok(StatusCode::NO_CONTENT)
}
