//! `/api/v1/orders` (SPEC §6.1): orders.read to look, orders.write to cancel or retry.

use axum::extract::State;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::repository::{self, OrderFilter};
use super::retry::{self, RetryError};
use super::state::{OrderStatus, Status};
use super::{Order, OrderDetail};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::infra::db::Conn;
use crate::order::OrderState;
use crate::order::audit::parse_instant_bound;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(list_orders))
        .routes(routes!(get_order))
        .routes(routes!(cancel_order))
        .routes(routes!(retry_order))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct OrderQuery {
    /// One of the order statuses (PENDING, PROCESSING, …).
    pub status: Option<String>,
    /// A part of the order number, customer name or e-mail, any case.
    pub search: Option<String>,
    /// Orders created at or after: ISO 8601 date-time (UTC when no offset is given) or date.
    pub from: Option<String>,
    /// Orders created at or before: ISO 8601 date-time, or a date meaning the whole day.
    pub to: Option<String>,
}

impl OrderQuery {
    fn filter(&self) -> Result<OrderFilter, Vec<String>> {
        let mut problems = Vec::new();
        let given = |v: &Option<String>| v.clone().filter(|v| !v.trim().is_empty());
        let status = match given(&self.status) {
            None => None,
            Some(text) => {
                let parsed = OrderStatus::parse(text.trim());
                if parsed.is_none() {
                    problems.push(format!(
                        "status must be one of: {}",
                        OrderStatus::ALL
                            .iter()
                            .map(|s| s.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                }
                parsed
            }
        };
        let mut bound = |name: &str, value: &Option<String>, end: bool| match given(value) {
            None => None,
            Some(text) => {
                let parsed = parse_instant_bound(&text, end);
                if parsed.is_none() {
                    problems.push(format!("{name} must be an ISO 8601 date or date-time"));
                }
                parsed
            }
        };
        let from = bound("from", &self.from, false);
        let to = bound("to", &self.to, true);
        if problems.is_empty() {
            Ok(OrderFilter {
                status,
                search: given(&self.search).map(|s| s.trim().to_owned()),
                from,
                to,
            })
        } else {
            Err(problems)
        }
    }
}

fn not_found() -> ApiError {
    ApiError::not_found("Order not found")
}

/// The tenant's orders, newest first.
#[utoipa::path(get, path = "/api/v1/orders", tag = "orders", params(PageQuery, OrderQuery),
    responses(
        (status = 200, description = "One page of orders with their lines", body = Page<Order>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing orders.read", body = ErrorBody)))]
async fn list_orders(
    State(state): State<OrderState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
    query: Result<Query<OrderQuery>, ApiError>,
) -> Result<Json<Page<Order>>, ApiError> {
    ctx.require(Permission::OrdersRead)?;
    let (Query(page), Query(query)) = (page?, query?);
    let page = page.validate().map_err(ApiError::validation)?;
    let filter = query.filter().map_err(ApiError::validation)?;
    let (items, total) = repository::list(&state.core.db, ctx.tenant_id, &filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// One order with its lines, its print jobs and its shipment.
#[utoipa::path(get, path = "/api/v1/orders/{id}", tag = "orders", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The order", body = OrderDetail),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing orders.read", body = ErrorBody),
        (status = 404, description = "No such order in this tenant", body = ErrorBody),
        (status = 503, description = "The print or shipping service did not answer", body = ErrorBody)))]
async fn get_order(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<OrderDetail>, ApiError> {
    ctx.require(Permission::OrdersRead)?;
    let Path(id) = id?;
    let record = repository::find(&mut Conn::Pool(&state.core.db), ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    let print_jobs = state
        .core
        .print
        .jobs_of_order(ctx.tenant_id, id)
        .await
        .map_err(|e| e.into_api_error("print"))?;
    let shipment = state
        .core
        .shipping
        .shipments_of_order(ctx.tenant_id, id)
        .await
        .map_err(|e| e.into_api_error("shipping"))?
        .into_iter()
        .next();
    Ok(Json(OrderDetail {
        order: record.into_order(),
        print_jobs,
        shipment,
    }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub reason: Option<String>,
}

/// Cancel an order that has not shipped: its unfinished lines and open print jobs with it.
#[utoipa::path(post, path = "/api/v1/orders/{id}/cancel", tag = "orders",
    params(("id" = Uuid, Path)), request_body(content = Option<CancelRequest>),
    responses(
        (status = 200, description = "The cancelled order", body = Order),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing orders.write", body = ErrorBody),
        (status = 404, description = "No such order in this tenant", body = ErrorBody),
        (status = 409, description = "The order has shipped or is cancelled already", body = ErrorBody)))]
async fn cancel_order(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
    body: axum::body::Bytes,
) -> Result<Json<Order>, ApiError> {
    ctx.require(Permission::OrdersWrite)?;
    let Path(id) = id?;
    // The body is optional: no body is no reason.
    let body: CancelRequest = if body.iter().all(u8::is_ascii_whitespace) {
        CancelRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::validation(vec![format!("Malformed JSON: {e}")]))?
    };
    let reason = body
        .reason
        .map(|r| r.trim().chars().take(500).collect::<String>())
        .filter(|r| !r.is_empty())
        .unwrap_or_else(|| format!("Cancelled by {}", ctx.email));
    let core = &state.core;
    let mut tx = core.db.begin().await?;
    let Some(record) = repository::lock(&mut tx, ctx.tenant_id, id).await? else {
        tx.rollback().await?;
        return Err(not_found());
    };
    let Some(events) = super::cancellation::cancel_in(&mut tx, &record, &reason).await? else {
        tx.rollback().await?;
        return Err(record
            .order
            .status
            .transition(OrderStatus::Cancelled)
            .err()
            .map_or_else(
                || ApiError::conflict("The order is cancelled already"),
                ApiError::from,
            ));
    };
    tx.commit().await?;
    core.relay.notify();
    for event in events {
        core.events.emit(event).await;
    }
    let record = repository::find(&mut Conn::Pool(&core.db), ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(record.into_order()))
}

/// Re-process the order's unmapped lines (with the mappings as they are now) and failed lines
/// (their failed jobs are queued again).
#[utoipa::path(post, path = "/api/v1/orders/{id}/retry", tag = "orders",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The order after the retry", body = Order),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing orders.write", body = ErrorBody),
        (status = 404, description = "No such order in this tenant", body = ErrorBody),
        (status = 409, description = "Nothing to retry", body = ErrorBody),
        (status = 503, description = "The print service did not answer", body = ErrorBody)))]
async fn retry_order(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<Order>, ApiError> {
    ctx.require(Permission::OrdersWrite)?;
    let Path(id) = id?;
    match retry::retry(&state.core, ctx.tenant_id, id).await {
        Ok(order) => Ok(Json(order)),
        Err(RetryError::NotFound) => Err(not_found()),
        Err(e @ RetryError::NothingToRetry) => Err(ApiError::conflict(e.to_string())),
        Err(RetryError::Db(e)) => Err(e.into()),
        Err(RetryError::Print(e)) => Err(e.into_api_error("print")),
    }
}
