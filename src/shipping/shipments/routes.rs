//! `/api/v1/shipments` (SPEC §6.4): shipments.read to look.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{Shipment, repository};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::shipping::ShippingState;

pub fn routes() -> OpenApiRouter<ShippingState> {
    OpenApiRouter::new()
        .routes(routes!(list_shipments))
        .routes(routes!(get_shipment))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct ShipmentQuery {
    pub order_id: Option<Uuid>,
}

/// The tenant's shipments, newest first.
#[utoipa::path(get, path = "/api/v1/shipments", tag = "shipments",
    params(PageQuery, ShipmentQuery),
    responses(
        (status = 200, description = "One page of shipments", body = Page<Shipment>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing shipments.read", body = ErrorBody)))]
async fn list_shipments(
    State(state): State<ShippingState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
    query: Result<Query<ShipmentQuery>, ApiError>,
) -> Result<Json<Page<Shipment>>, ApiError> {
    ctx.require(Permission::ShipmentsRead)?;
    let (Query(page), Query(query)) = (page?, query?);
    let page = page.validate().map_err(ApiError::validation)?;
    let (items, total) =
        repository::list(&state.core.db, ctx.tenant_id, query.order_id, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// One shipment.
#[utoipa::path(get, path = "/api/v1/shipments/{id}", tag = "shipments",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The shipment", body = Shipment),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing shipments.read", body = ErrorBody),
        (status = 404, description = "No such shipment in this tenant", body = ErrorBody)))]
async fn get_shipment(
    State(state): State<ShippingState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<Shipment>, ApiError> {
    ctx.require(Permission::ShipmentsRead)?;
    let Path(id) = id?;
    let shipment = repository::find(&state.core.db, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Shipment not found"))?;
    Ok(Json(shipment))
}
