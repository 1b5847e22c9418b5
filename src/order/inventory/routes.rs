//! `/api/v1/inventory` (SPEC §6.5b): mappings.read to look, mappings.write to change (there is no
//! inventory permission of its own, §5.1); a manual stock correction goes to the audit log with
//! its actor.

use axum::extract::State;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{InventoryEntry, InventoryUpdate, repository};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::infra::db::Conn;
use crate::order::OrderState;
use crate::order::audit::{self, AuditEntry, Origin};
use crate::order::mappings::{self, ProductMapping};
use crate::print::plan::MAX_PRINTS_PER_LINE;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(list_inventory))
        .routes(routes!(get_inventory, update_inventory))
}

fn not_found() -> ApiError {
    ApiError::not_found("Product mapping not found")
}

/// Every product of the tenant with its stock and what is printing for stock, by SKU.
#[utoipa::path(get, path = "/api/v1/inventory", tag = "inventory",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of stock entries", body = Page<InventoryEntry>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.read", body = ErrorBody)))]
async fn list_inventory(
    State(state): State<OrderState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
) -> Result<Json<Page<InventoryEntry>>, ApiError> {
    ctx.require(Permission::MappingsRead)?;
    let Query(page) = page?;
    let page = page.validate().map_err(ApiError::validation)?;
    let (items, total) = repository::list(&state.core.db, ctx.tenant_id, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// One product's stock.
#[utoipa::path(get, path = "/api/v1/inventory/{mappingId}", tag = "inventory",
    params(("mappingId" = Uuid, Path)),
    responses(
        (status = 200, description = "The product's stock", body = InventoryEntry),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.read", body = ErrorBody),
        (status = 404, description = "No such mapping in this tenant", body = ErrorBody)))]
async fn get_inventory(
    State(state): State<OrderState>,
    ctx: UserContext,
    Path(mapping_id): Path<Uuid>,
) -> Result<Json<InventoryEntry>, ApiError> {
    ctx.require(Permission::MappingsRead)?;
    let entry = repository::find(&mut Conn::Pool(&state.core.db), ctx.tenant_id, mapping_id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(entry))
}

/// Sets a product's stock target, batch size or replenishment, or corrects its stock on hand.
#[utoipa::path(put, path = "/api/v1/inventory/{mappingId}", tag = "inventory",
    params(("mappingId" = Uuid, Path)),
    request_body = InventoryUpdate,
    responses(
        (status = 200, description = "The product's stock as changed", body = InventoryEntry),
        (status = 400, description = "Invalid input, every problem listed, or a batch that takes more prints of the product's files than one batch may (1000)", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing mappings.write", body = ErrorBody),
        (status = 404, description = "No such mapping in this tenant", body = ErrorBody)))]
async fn update_inventory(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    Path(mapping_id): Path<Uuid>,
    body: Result<Json<InventoryUpdate>, ApiError>,
) -> Result<Json<InventoryEntry>, ApiError> {
    ctx.require(Permission::MappingsWrite)?;
    let Json(body) = body?;
    body.validate().map_err(ApiError::validation)?;
    let mapping = mappings::find(&state.core.db, ctx.tenant_id, mapping_id)
        .await?
        .ok_or_else(not_found)?;
    let mut tx = state.core.db.begin().await?;
    let Some((before, after)) =
        repository::update(&mut tx, ctx.tenant_id, mapping_id, &body).await?
    else {
        tx.rollback().await?;
        return Err(not_found());
    };
    // A batch the scheduler would refuse, set now or asked for by a target: refused now. (A
    // correction of the stock on hand alone is never refused for it.)
    if (body.batch_size.is_some() || body.stock_target.is_some_and(|t| t > 0))
        && let Err(problem) = batch_fits(&mapping, after.batch_size)
    {
        tx.rollback().await?;
        return Err(ApiError::validation(vec![problem]));
    }
    tx.commit().await?;
    let details = json!({
        "sku": after.sku,
        "before": {"stockTarget": before.stock_target, "stockOnHand": before.stock_on_hand,
            "batchSize": before.batch_size, "replenish": before.replenish},
        "after": {"stockTarget": after.stock_target, "stockOnHand": after.stock_on_hand,
            "batchSize": after.batch_size, "replenish": after.replenish},
        "manualStockCorrection": body.stock_on_hand.is_some(),
    });
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        audit::actions::INVENTORY_UPDATED,
        "product-mapping",
        mapping_id,
        details,
    );
    if let Err(e) = audit::record(&state.core.db, &entry).await {
        tracing::error!(error = %e, action = entry.action, "could not write an audit log entry");
    }
    Ok(Json(after))
}

/// Whether a batch of `units` of the product fits in the prints one batch may take: the
/// scheduler refuses a bigger one on every pass, and the product is never replenished.
fn batch_fits(mapping: &ProductMapping, units: i64) -> Result<(), String> {
    let units = u32::try_from(units).unwrap_or(u32::MAX);
    let prints: u64 = mapping
        .print_files
        .iter()
        .map(|f| f.prints_for(units))
        .sum();
    if prints <= MAX_PRINTS_PER_LINE {
        return Ok(());
    }
    let mend = if units > 1 {
        "set a smaller batchSize"
    } else {
        "the product mapping's print files print too often for one unit"
    };
    Err(format!(
        "a stock batch of {units} unit(s) takes {prints} prints of the product's files, and one \
         batch takes at most {MAX_PRINTS_PER_LINE}: {mend}"
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuery {
    tenant_id: Uuid,
}

/// `GET /internal/stock-jobs/{id}?tenantId=` (SPEC §7): a stock job as the print service creates
/// it when it hears `inventory.stock-replenishment-scheduled`.
pub async fn internal_stock_job(
    _caller: crate::order::internal::InternalCaller,
    State(state): State<OrderState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<super::StockJobPlan>, ApiError> {
    let plan = super::batches::stock_job(&state.core.db, query.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Stock job not found"))?;
    Ok(Json(plan))
}
