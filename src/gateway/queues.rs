//! The queue dashboard (SPEC §5.4): `/admin/queues`, a page served by forma with no external
//! assets, and its data under `/api/v1/admin/queues`. Reading needs `queues.read`; retrying a dead
//! job needs an admin. Counts are global; a job's payload carries tenant data, so the jobs of
//! other tenants are shown only to super admins.

use std::sync::Arc;

use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::GatewayState;
use super::auth::{Authenticated, CurrentUser};
use crate::events::bus::{BusError, EventBus};
use crate::events::bus::{JobState, JobView, QueueStats};
use crate::http::extract::{Json, Path, Query};
use crate::http::{ApiError, ErrorBody};
use crate::identity::roles::{Permission, UserRole};

/// The page: inline markup, style and script, so it renders with no internet access.
const PAGE: &str = include_str!("queues.html");

/// The most jobs one listing returns.
const MAX_JOBS: usize = 200;
/// How many of a queue's jobs are read to find a tenant's: a job's tenant is in its payload, which
/// the bus's storage does not index, so a tenant's jobs are looked for among this many newest.
const TENANT_SCAN: usize = 5_000;

pub fn routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(list_jobs))
        .routes(routes!(retry_job))
        .route("/admin/queues", get(page))
}

fn bus(state: &GatewayState) -> Result<Arc<EventBus>, ApiError> {
    state.bus.get().ok_or_else(|| {
        ApiError::service_unavailable("The event bus is not running yet (see /health)")
    })
}

fn bus_error(error: BusError) -> ApiError {
    match error {
        BusError::UnknownQueue(queue) => ApiError::not_found(format!("Queue {queue} not found")),
        BusError::Storage(e) => {
            tracing::warn!(error = %e, "the queue dashboard cannot read the bus's storage");
            ApiError::service_unavailable("The event bus's storage does not answer (see /health)")
        }
        other => ApiError::internal(other),
    }
}

/// The tenant a job's event belongs to, from its payload.
fn tenant_of(job: &JobView) -> Option<&str> {
    job.payload.get("tenantId").and_then(|t| t.as_str())
}

fn visible(auth: &Authenticated, job: &JobView) -> bool {
    auth.context.is_super_admin
        || tenant_of(job) == Some(auth.context.tenant_id.to_string().as_str())
}

async fn page(CurrentUser(auth): CurrentUser) -> Result<impl IntoResponse, ApiError> {
    auth.context.require(Permission::QueuesRead)?;
    Ok(([(header::CACHE_CONTROL, "no-store")], Html(PAGE)))
}

/// Every queue with its waiting, active, completed, failed and dead jobs.
#[utoipa::path(get, path = "/api/v1/admin/queues", tag = "queues", responses(
    (status = 200, description = "Per queue job counts", body = Vec<QueueStats>),
    (status = 403, description = "Missing queues.read", body = ErrorBody),
    (status = 503, description = "The event bus is not running or its storage does not answer", body = ErrorBody)))]
async fn list_queues(
    axum::extract::State(state): axum::extract::State<GatewayState>,
    CurrentUser(auth): CurrentUser,
) -> Result<Json<Vec<QueueStats>>, ApiError> {
    auth.context.require(Permission::QueuesRead)?;
    Ok(Json(bus(&state)?.queues().await.map_err(bus_error)?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct JobsQuery {
    /// waiting, active, completed, failed or dead (default: dead)
    pub state: Option<JobState>,
    /// At most this many, newest first (default 50, at most 200)
    pub limit: Option<usize>,
}

/// A queue's jobs in one state, with their payload and last error.
#[utoipa::path(get, path = "/api/v1/admin/queues/{queue}/jobs", tag = "queues",
    params(("queue" = String, Path, description = "e.g. order.cancelled:print"), JobsQuery),
    responses(
        (status = 200, description = "The jobs", body = Vec<JobView>),
        (status = 403, description = "Missing queues.read", body = ErrorBody),
        (status = 404, description = "No such queue", body = ErrorBody)))]
async fn list_jobs(
    axum::extract::State(state): axum::extract::State<GatewayState>,
    CurrentUser(auth): CurrentUser,
    Path(queue): Path<String>,
    Query(query): Query<JobsQuery>,
) -> Result<Json<Vec<JobView>>, ApiError> {
    auth.context.require(Permission::QueuesRead)?;
    let limit = query.limit.unwrap_or(50).clamp(1, MAX_JOBS);
    let state_filter = query.state.unwrap_or(JobState::Dead);
    // Another tenant's jobs are not shown: reading only `limit` of them would show a tenant admin
    // fewer (or none) of their own whenever other tenants' are newer.
    let read = if auth.context.is_super_admin {
        limit
    } else {
        TENANT_SCAN
    };
    let jobs = bus(&state)?
        .jobs(&queue, state_filter, read)
        .await
        .map_err(bus_error)?;
    Ok(Json(
        jobs.into_iter()
            .filter(|job| visible(&auth, job))
            .take(limit)
            .collect(),
    ))
}

/// Put a dead job back in its queue with fresh attempts (admins only).
#[utoipa::path(post, path = "/api/v1/admin/queues/{queue}/jobs/{id}/retry", tag = "queues",
    params(("queue" = String, Path), ("id" = String, Path)),
    responses(
        (status = 204, description = "Waiting again"),
        (status = 403, description = "Not an admin", body = ErrorBody),
        (status = 404, description = "No such dead job", body = ErrorBody)))]
async fn retry_job(
    axum::extract::State(state): axum::extract::State<GatewayState>,
    CurrentUser(auth): CurrentUser,
    Path((queue, id)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let admin = auth.context.is_super_admin || auth.context.roles.contains(&UserRole::Admin);
    if !admin {
        return Err(ApiError::forbidden("Retrying a dead job needs an admin"));
    }
    let bus = bus(&state)?;
    let dead = bus
        .jobs(&queue, JobState::Dead, TENANT_SCAN)
        .await
        .map_err(bus_error)?;
    let owned = dead.iter().any(|job| job.id == id && visible(&auth, job));
    if !owned || !bus.retry_dead(&queue, &id).await.map_err(bus_error)? {
        return Err(ApiError::not_found("Dead job not found"));
    }
    tracing::info!(%queue, job = %id, by = %auth.context.email, "dead job retried");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[path = "queues_tests.rs"]
mod tests;
