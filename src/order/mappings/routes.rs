//! `/api/v1/product-mappings` (SPEC §6.2): mappings.read to look, mappings.write to change; every
//! change goes to the audit log.

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::repository::{self, MappingFilter};
use super::{MappingInput, ProductMapping};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::OrderState;
use crate::order::audit::{self, AuditEntry, Origin, actions};

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(list_mappings, create_mapping))
        .routes(routes!(get_mapping, update_mapping, delete_mapping))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct MappingQuery {
    /// A part of the SKU or product name, any case.
    pub search: Option<String>,
    pub is_active: Option<bool>,
}

fn not_found() -> ApiError {
    ApiError::not_found("Product mapping not found")
}

fn sku_taken(sku: &str) -> ApiError {
    ApiError::conflict(format!("A product mapping for SKU {sku} already exists"))
}

async fn audit(state: &OrderState, entry: AuditEntry) {
    if let Err(e) = audit::record(&state.core.db, &entry).await {
        tracing::error!(error = %e, action = entry.action, "could not write an audit log entry");
    }
}

/// The tenant's product mappings, by SKU.
#[utoipa::path(get, path = "/api/v1/product-mappings", tag = "product-mappings",
    params(PageQuery, MappingQuery),
    responses(
        (status = 200, description = "One page of mappings", body = Page<ProductMapping>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.read", body = ErrorBody)))]
async fn list_mappings(
    State(state): State<OrderState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
    query: Result<Query<MappingQuery>, ApiError>,
) -> Result<Json<Page<ProductMapping>>, ApiError> {
    ctx.require(Permission::MappingsRead)?;
    let (Query(page), Query(query)) = (page?, query?);
    let page = page.validate().map_err(ApiError::validation)?;
    let filter = MappingFilter {
        search: query.search.filter(|s| !s.trim().is_empty()),
        is_active: query.is_active,
    };
    let (items, total) = repository::list(&state.core.db, ctx.tenant_id, &filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// Map a SKU to the files it is printed from. The SKU is unique in the tenant.
#[utoipa::path(post, path = "/api/v1/product-mappings", tag = "product-mappings",
    request_body = MappingInput,
    responses(
        (status = 201, description = "Created", body = ProductMapping),
        (status = 400, description = "Invalid input, every problem listed", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.write", body = ErrorBody),
        (status = 409, description = "The tenant has a mapping for this SKU", body = ErrorBody)))]
async fn create_mapping(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    body: Result<Json<MappingInput>, ApiError>,
) -> Result<(StatusCode, Json<ProductMapping>), ApiError> {
    ctx.require(Permission::MappingsWrite)?;
    let Json(body) = body?;
    let fields = body.create().map_err(ApiError::validation)?;
    let mapping = repository::insert(&state.core.db, ctx.tenant_id, &fields)
        .await?
        .ok_or_else(|| sku_taken(&fields.sku))?;
    let details = json!({"sku": mapping.sku, "printFiles": mapping.print_files, "isActive": mapping.is_active});
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        actions::MAPPING_CREATED,
        "product-mapping",
        mapping.id,
        details,
    );
    audit(&state, entry).await;
    Ok((StatusCode::CREATED, Json(mapping)))
}

/// One mapping.
#[utoipa::path(get, path = "/api/v1/product-mappings/{id}", tag = "product-mappings",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The mapping", body = ProductMapping),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.read", body = ErrorBody),
        (status = 404, description = "No such mapping in this tenant", body = ErrorBody)))]
async fn get_mapping(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<ProductMapping>, ApiError> {
    ctx.require(Permission::MappingsRead)?;
    let Path(id) = id?;
    let mapping = repository::find(&state.core.db, ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(mapping))
}

/// Change a mapping: only the fields sent change. Orders planned before keep their files.
#[utoipa::path(patch, path = "/api/v1/product-mappings/{id}", tag = "product-mappings",
    params(("id" = Uuid, Path)), request_body = MappingInput,
    responses(
        (status = 200, description = "The updated mapping", body = ProductMapping),
        (status = 400, description = "Invalid input, every problem listed", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.write", body = ErrorBody),
        (status = 404, description = "No such mapping in this tenant", body = ErrorBody),
        (status = 409, description = "Another mapping of the tenant has this SKU", body = ErrorBody)))]
async fn update_mapping(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    id: Result<Path<Uuid>, ApiError>,
    body: Result<Json<MappingInput>, ApiError>,
) -> Result<Json<ProductMapping>, ApiError> {
    ctx.require(Permission::MappingsWrite)?;
    let (Path(id), Json(body)) = (id?, body?);
    let db = &state.core.db;
    let current = repository::find(db, ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    let fields = body.update(&current).map_err(ApiError::validation)?;
    let updated = match repository::update(db, ctx.tenant_id, id, &fields).await {
        Ok(updated) => updated.ok_or_else(not_found)?,
        Err(e) if e.is_unique_violation() => return Err(sku_taken(&fields.sku)),
        Err(e) => return Err(e.into()),
    };
    let details = json!({
        "before": {"sku": current.sku, "printFiles": current.print_files, "isActive": current.is_active},
        "after": {"sku": updated.sku, "printFiles": updated.print_files, "isActive": updated.is_active},
    });
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        actions::MAPPING_UPDATED,
        "product-mapping",
        id,
        details,
    );
    audit(&state, entry).await;
    Ok(Json(updated))
}

/// Delete a mapping. Lines of new orders with its SKU become UNMAPPED.
#[utoipa::path(delete, path = "/api/v1/product-mappings/{id}", tag = "product-mappings",
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.write", body = ErrorBody),
        (status = 404, description = "No such mapping in this tenant", body = ErrorBody)))]
async fn delete_mapping(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<StatusCode, ApiError> {
    ctx.require(Permission::MappingsWrite)?;
    let Path(id) = id?;
    let db = &state.core.db;
    let current = repository::find(db, ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    if !repository::delete(db, ctx.tenant_id, id).await? {
        return Err(not_found());
    }
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        actions::MAPPING_DELETED,
        "product-mapping",
        id,
        json!({"sku": current.sku}),
    );
    audit(&state, entry).await;
    Ok(StatusCode::NO_CONTENT)
}
