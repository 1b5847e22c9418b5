//! The print service's internal API (SPEC §7): what the order service calls when print runs
//! apart. Every call names its tenant and presents the internal key; none goes through the
//! gateway. [`crate::clients::print::HttpPrintClient`] speaks it.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::jobs::{JobCounts, PrintJob, PrintJobStatus};
use super::plan::PrintPlan;
use super::{JobChange, PrintState};
use crate::http::ApiError;
use crate::http::extract::{Json, Path, Query};
use crate::order::internal::InternalCaller;
use crate::order::retry_queue::{RetryEntry, acted};
use crate::print::simplyprint::retries;

pub fn routes() -> Router<PrintState> {
    Router::new()
        .route("/internal/print-jobs", post(create).get(of_order))
        .route("/internal/print-jobs/{id}", get(one).delete(cancel))
        .route("/internal/print-jobs/{id}/retry", post(retry))
        .route("/internal/print-jobs/failed-sends", get(failed_sends))
        .route("/internal/print-jobs/counts", get(counts))
        .route("/internal/print-jobs/{id}/send-again", post(send_again))
        .route("/internal/print-jobs/{id}/give-up", post(give_up))
}

/// `GET /internal/print-jobs/failed-sends?tenantId=`: the tenant's part of the retry queue.
async fn failed_sends(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<Vec<RetryEntry>>, ApiError> {
    Ok(Json(retries::entries(&state.core, query.tenant_id).await?))
}

/// `POST /internal/print-jobs/{id}/send-again?tenantId=`: the failed send, due now.
async fn send_again(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<StatusCode, ApiError> {
    acted(retries::send_now(&state.core, query.tenant_id, id).await?)
}

/// `POST /internal/print-jobs/{id}/give-up?tenantId=`: no more sends; the job fails.
async fn give_up(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<StatusCode, ApiError> {
    acted(retries::give_up(&state.core, query.tenant_id, id).await?)
}

/// `GET /internal/print-jobs/counts?tenantId=&from=&to=`: how many of the tenant's jobs created
/// in the period (RFC 3339 instants, both included) are in each status.
async fn counts(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Query(query): Query<PeriodQuery>,
) -> Result<Json<JobCounts>, ApiError> {
    let counts = state
        .core
        .job_counts(query.tenant_id, query.from, query.to)
        .await?;
    Ok(Json(counts))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PeriodQuery {
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TenantQuery {
    pub tenant_id: Uuid,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct OrderQuery {
    pub tenant_id: Uuid,
    pub order_id: Uuid,
}

/// `POST /internal/print-jobs`: creates the jobs of a plan that do not exist yet; answers those
/// created (idempotent: a repeated call creates nothing and answers an empty list).
async fn create(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Json(plan): Json<PrintPlan>,
) -> Result<(StatusCode, Json<Vec<PrintJob>>), ApiError> {
    let created = state.core.create_jobs(&plan).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /internal/print-jobs?tenantId=&orderId=`: every job of an order.
async fn of_order(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Query(query): Query<OrderQuery>,
) -> Result<Json<Vec<PrintJob>>, ApiError> {
    let jobs = state
        .core
        .jobs_of_order(query.tenant_id, query.order_id)
        .await?;
    Ok(Json(jobs))
}

/// `GET /internal/print-jobs/{id}?tenantId=`: one job; 404 when the tenant has none by that id.
async fn one(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<PrintJob>, ApiError> {
    let job = state.core.job(query.tenant_id, id).await?;
    job.map(Json).ok_or_else(not_found)
}

fn not_found() -> ApiError {
    ApiError::not_found("Print job not found")
}

async fn change(
    state: &PrintState,
    tenant_id: Uuid,
    id: Uuid,
    to: PrintJobStatus,
    reason: Option<String>,
) -> Result<Json<PrintJob>, ApiError> {
    match state.core.change(tenant_id, id, to, reason).await? {
        JobChange::Changed(changed) => Ok(Json(changed.after)),
        JobChange::Unchanged(job) => Ok(Json(*job)),
        JobChange::NotFound => Err(not_found()),
    }
}

/// `DELETE /internal/print-jobs/{id}?tenantId=`: cancels the job (idempotent).
async fn cancel(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<PrintJob>, ApiError> {
    let reason = Some("Cancelled by the order service".to_owned());
    change(
        &state,
        query.tenant_id,
        id,
        PrintJobStatus::Cancelled,
        reason,
    )
    .await
}

/// `POST /internal/print-jobs/{id}/retry?tenantId=`: queues a failed or cancelled job again.
async fn retry(
    _caller: InternalCaller,
    State(state): State<PrintState>,
    Path(id): Path<Uuid>,
    Query(query): Query<TenantQuery>,
) -> Result<Json<PrintJob>, ApiError> {
    change(&state, query.tenant_id, id, PrintJobStatus::Queued, None).await
}
