//! `/api/v1/print-jobs` (SPEC §6.4): print-jobs.read to look, print-jobs.write to retry or cancel.

use axum::extract::State;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::repository::{self, JobFilter};
use super::transitions::ChangeError;
use super::{PrintJob, PrintJobStatus};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::orders::state::Status;
use crate::print::{JobChange, PrintState};

pub fn routes() -> OpenApiRouter<PrintState> {
    OpenApiRouter::new()
        .routes(routes!(list_print_jobs))
        .routes(routes!(get_print_job))
        .routes(routes!(retry_print_job))
        .routes(routes!(cancel_print_job))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct PrintJobQuery {
    /// QUEUED, PRINTING, COMPLETED, FAILED or CANCELLED.
    pub status: Option<String>,
    pub order_id: Option<Uuid>,
}

fn not_found() -> ApiError {
    ApiError::not_found("Print job not found")
}

impl From<ChangeError> for ApiError {
    fn from(e: ChangeError) -> Self {
        match e {
            ChangeError::Illegal(illegal) => illegal.into(),
            ChangeError::Db(db) => db.into(),
        }
    }
}

/// The tenant's print jobs, newest first.
#[utoipa::path(get, path = "/api/v1/print-jobs", tag = "print-jobs",
    params(PageQuery, PrintJobQuery),
    responses(
        (status = 200, description = "One page of print jobs", body = Page<PrintJob>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing print-jobs.read", body = ErrorBody)))]
async fn list_print_jobs(
    State(state): State<PrintState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
    query: Result<Query<PrintJobQuery>, ApiError>,
) -> Result<Json<Page<PrintJob>>, ApiError> {
    ctx.require(Permission::PrintJobsRead)?;
    let (Query(page), Query(query)) = (page?, query?);
    let page = page.validate().map_err(ApiError::validation)?;
    let status = match query.status.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => Some(PrintJobStatus::parse(text).ok_or_else(|| {
            ApiError::validation(vec![format!(
                "status must be one of: {}",
                PrintJobStatus::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )])
        })?),
    };
    let filter = JobFilter {
        status,
        order_id: query.order_id,
    };
    let (items, total) = repository::list(&state.core.db, ctx.tenant_id, &filter, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// One print job.
#[utoipa::path(get, path = "/api/v1/print-jobs/{id}", tag = "print-jobs",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The print job", body = PrintJob),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing print-jobs.read", body = ErrorBody),
        (status = 404, description = "No such print job in this tenant", body = ErrorBody)))]
async fn get_print_job(
    State(state): State<PrintState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<PrintJob>, ApiError> {
    ctx.require(Permission::PrintJobsRead)?;
    let Path(id) = id?;
    let job = repository::find(&state.core.db, ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    Ok(Json(job))
}

async fn change(
    state: &PrintState,
    ctx: &UserContext,
    id: Uuid,
    to: PrintJobStatus,
    reason: Option<String>,
) -> Result<Json<PrintJob>, ApiError> {
    match state.core.change(ctx.tenant_id, id, to, reason).await? {
        JobChange::Changed(changed) => Ok(Json(changed.after)),
        JobChange::Unchanged(job) => Ok(Json(*job)),
        JobChange::NotFound => Err(not_found()),
    }
}

/// Queue a failed or cancelled job again: it goes to the print farm once more. Its order, if it
/// had failed or been cancelled, is revived.
#[utoipa::path(post, path = "/api/v1/print-jobs/{id}/retry", tag = "print-jobs",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The job, queued again", body = PrintJob),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing print-jobs.write", body = ErrorBody),
        (status = 404, description = "No such print job in this tenant", body = ErrorBody),
        (status = 409, description = "The job is not failed or cancelled", body = ErrorBody)))]
async fn retry_print_job(
    State(state): State<PrintState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<PrintJob>, ApiError> {
    ctx.require(Permission::PrintJobsWrite)?;
    let Path(id) = id?;
    let job = repository::find(&state.core.db, ctx.tenant_id, id)
        .await?
        .ok_or_else(not_found)?;
    if job.status == PrintJobStatus::Queued {
        // Staying queued is no transition, but a retry of a waiting job is a mistake: say so.
        return Err(ApiError::conflict("The print job is already queued"));
    }
    change(&state, &ctx, id, PrintJobStatus::Queued, None).await
}

/// Cancel a queued or printing job, or give up a failed one.
#[utoipa::path(post, path = "/api/v1/print-jobs/{id}/cancel", tag = "print-jobs",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The cancelled job", body = PrintJob),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing print-jobs.write", body = ErrorBody),
        (status = 404, description = "No such print job in this tenant", body = ErrorBody),
        (status = 409, description = "The job has completed", body = ErrorBody)))]
async fn cancel_print_job(
    State(state): State<PrintState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<PrintJob>, ApiError> {
    ctx.require(Permission::PrintJobsWrite)?;
    let Path(id) = id?;
    let reason = Some(format!("Cancelled by {}", ctx.email));
    change(&state, &ctx, id, PrintJobStatus::Cancelled, reason).await
}
