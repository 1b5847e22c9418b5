//! `GET /api/v1/audit-logs` (public, read-only) and `POST /internal/audit-logs` (SPEC §7).

use axum::extract::State;
use axum::http::StatusCode;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{AuditEntry, AuditQuery, AuditRecord};
use crate::http::ApiError;
use crate::http::extract::{Json, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::OrderState;
use crate::order::internal::InternalCaller;

/// The public routes. Only GET: no API edits or deletes the log, so every other method is a 405.
pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new().routes(routes!(list_audit_logs))
}

/// The tenant's security audit log, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/audit-logs",
    tag = "audit",
    params(PageQuery, AuditQuery),
    responses(
        (status = 200, description = "One page of entries", body = Page<AuditRecord>),
        (status = 400, description = "A parameter is invalid", body = crate::http::ErrorBody),
        (status = 401, description = "No verified user context", body = crate::http::ErrorBody),
        (status = 403, description = "Missing permission audit.read", body = crate::http::ErrorBody),
        (status = 404, description = "Another tenant's log, asked for by someone who is not a super admin", body = crate::http::ErrorBody),
    )
)]
async fn list_audit_logs(
    State(state): State<OrderState>,
    ctx: UserContext,
    // Taken as results so that a caller without the permission learns nothing from a 400.
    page: Result<Query<PageQuery>, ApiError>,
    query: Result<Query<AuditQuery>, ApiError>,
) -> Result<Json<Page<AuditRecord>>, ApiError> {
    ctx.require(Permission::AuditRead)?;
    let Query(page) = page?;
    let Query(query) = query?;
    let page = page.validate().map_err(ApiError::validation)?;
    let filter = query.filter().map_err(ApiError::validation)?;
    let tenant_id = tenant_to_read(&ctx, query.tenant_id)
        .ok_or_else(|| ApiError::not_found("Tenant not found"))?;
    let (items, total) = super::list(&state.core.db, tenant_id, &filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// The caller's own tenant unless a super admin names another. For anyone else another tenant's
/// id is a 404, as everywhere in the order service (SPEC §6): its existence is not confirmed.
fn tenant_to_read(ctx: &UserContext, requested: Option<Uuid>) -> Option<Uuid> {
    match requested {
        None => Some(ctx.tenant_id),
        Some(tenant) if tenant == ctx.tenant_id || ctx.is_super_admin => Some(tenant),
        Some(_) => None,
    }
}

/// `POST /internal/audit-logs`: another service (the gateway, when split) records an event.
pub(crate) async fn record_from_service(
    _caller: InternalCaller,
    State(state): State<OrderState>,
    Json(entry): Json<AuditEntry>,
) -> Result<(StatusCode, Json<AuditRecord>), ApiError> {
    entry.validate().map_err(ApiError::validation)?;
    let record = super::record(&state.core.db, &entry).await?;
    Ok((StatusCode::CREATED, Json(record)))
}
