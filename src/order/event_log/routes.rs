//! `GET /api/v1/events` (SPEC §6.5): the business event log, events.read to look.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::{EventFilter, LoggedEvent, Severity, list};
use crate::http::extract::{Json, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::OrderState;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new().routes(routes!(list_events))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct EventQuery {
    pub order_id: Option<Uuid>,
    /// e.g. `order.status_changed`.
    pub event_type: Option<String>,
    /// `info`, `warning` or `error`.
    pub severity: Option<String>,
}

/// The tenant's event log, newest first: one entry per state change of its orders, print jobs
/// and shipments.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(PageQuery, EventQuery),
    responses(
        (status = 200, description = "One page of the event log", body = Page<LoggedEvent>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing events.read", body = ErrorBody)))]
async fn list_events(
    State(state): State<OrderState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
    query: Result<Query<EventQuery>, ApiError>,
) -> Result<Json<Page<LoggedEvent>>, ApiError> {
    ctx.require(Permission::EventsRead)?;
    let (Query(page), Query(query)) = (page?, query?);
    let page = page.validate().map_err(ApiError::validation)?;
    let severity = match query.severity.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(Severity::parse(text).ok_or_else(|| {
            ApiError::validation(vec![
                "severity must be one of: info, warning, error".to_owned(),
            ])
        })?),
    };
    let filter = EventFilter {
        order_id: query.order_id,
        event_type: query.event_type.filter(|t| !t.is_empty()),
        severity,
    };
    let (items, total) = list(&state.core.db, ctx.tenant_id, &filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}
