//! `POST /api/v1/webhooks/simplyprint` (SPEC §6.4): SimplyPrint tells forma a job started,
//! finished, failed or was cancelled.
//!
//! - Authenticated by `simplyprint.webhook_secret` in `X-SP-Token`, compared in constant time.
//! - A job is matched by SimplyPrint's id first, then by forma's own print-job id in `data.job.uid`
//!   or `data.job.id` (a print started by hand from a file forma queued).
//! - Every delivery is acknowledged unless the token is wrong or the body unreadable: an unknown
//!   job, an event forma does not act on, a move the state machine refuses, a repeated delivery
//!   (`webhook_id`) are logged and answered 200, or SimplyPrint would retry them forever.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::client::id_text;
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};
use crate::infra::db::{DbError, Tx};
use crate::on_tx;
use crate::print::PrintState;
use crate::print::jobs::transitions::{self, ChangeError, Changed, Reporter};
use crate::print::jobs::{PrintJobStatus, repository};

pub const X_SP_TOKEN: &str = "x-sp-token";

pub fn routes() -> OpenApiRouter<PrintState> {
    OpenApiRouter::new().routes(routes!(simplyprint_webhook))
}

/// SimplyPrint's webhook envelope.
#[derive(Debug, Deserialize, ToSchema)]
pub struct SimplyPrintWebhook {
    /// A number or a string.
    #[schema(value_type = Object)]
    pub webhook_id: Option<Value>,
    /// `job.started`, `job.done`, `job.failed`, `job.cancelled`; others are acknowledged and ignored.
    pub event: String,
    #[schema(value_type = Object)]
    pub timestamp: Option<Value>,
    #[serde(default)]
    pub data: WebhookData,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct WebhookData {
    #[serde(default)]
    pub job: Option<WebhookJob>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
pub struct WebhookJob {
    #[schema(value_type = Object)]
    pub id: Option<Value>,
    pub uid: Option<String>,
    pub status: Option<String>,
    /// Why a job failed, when SimplyPrint says.
    pub error: Option<String>,
}

/// What forma did with a delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAck {
    pub received: bool,
    /// `updated`, `unchanged`, `duplicate`, `ignored`, `unknown-job` or `stale` (about the item of
    /// an attempt before a retry).
    pub outcome: String,
}

fn ack(outcome: &str) -> Json<WebhookAck> {
    Json(WebhookAck {
        received: true,
        outcome: outcome.to_owned(),
    })
}

fn token_matches(expected: &[u8], presented: &[u8]) -> bool {
    Sha256::digest(expected)
        .as_slice()
        .ct_eq(Sha256::digest(presented).as_slice())
        .into()
}

/// The status a webhook event moves a job to.
fn target(event: &str) -> Option<PrintJobStatus> {
    match event {
        "job.started" => Some(PrintJobStatus::Printing),
        "job.done" => Some(PrintJobStatus::Completed),
        "job.failed" => Some(PrintJobStatus::Failed),
        "job.cancelled" => Some(PrintJobStatus::Cancelled),
        _ => None,
    }
}

/// A job status change from SimplyPrint.
#[utoipa::path(post, path = "/api/v1/webhooks/simplyprint", tag = "webhooks",
    request_body = SimplyPrintWebhook,
    params(("X-SP-Token" = String, Header, description = "simplyprint.webhook_secret")),
    responses(
        (status = 200, description = "Acknowledged (also for unknown jobs and events)", body = WebhookAck),
        (status = 400, description = "The body is not SimplyPrint's webhook envelope", body = ErrorBody),
        (status = 401, description = "Missing or wrong X-SP-Token", body = ErrorBody)))]
async fn simplyprint_webhook(
    State(state): State<PrintState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAck>, ApiError> {
    let expected = state
        .simplyprint
        .webhook_secret
        .as_ref()
        .map(|s| s.expose().as_bytes())
        .filter(|s| !s.is_empty());
    let presented = headers.get(X_SP_TOKEN).map(|v| v.as_bytes());
    match (expected, presented) {
        (Some(expected), Some(presented)) if token_matches(expected, presented) => {}
        (None, _) => {
            tracing::warn!("refused a SimplyPrint webhook: simplyprint.webhook_secret is not set");
            return Err(ApiError::unauthorized("Invalid SimplyPrint token"));
        }
        _ => return Err(ApiError::unauthorized("Invalid SimplyPrint token")),
    }
    let webhook: SimplyPrintWebhook = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("Not a SimplyPrint webhook: {e}")))?;
    let Some(to) = target(&webhook.event) else {
        tracing::debug!(event = webhook.event, "SimplyPrint event not acted on");
        return Ok(ack("ignored"));
    };
    let job = webhook.data.job.unwrap_or_default();
    let simplyprint_id = job.id.as_ref().and_then(id_text);
    let own_ids: Vec<Uuid> = [job.uid.as_deref(), simplyprint_id.as_deref()]
        .into_iter()
        .flatten()
        .filter_map(|text| Uuid::parse_str(text).ok())
        .collect();
    let delivery = webhook.webhook_id.as_ref().and_then(id_text);

    let core = &state.core;
    // Found before the transaction, whose first statement must be a write (SQLite cannot turn a
    // read transaction into a write one after another writer committed).
    let found =
        repository::find_for_simplyprint(&core.db, simplyprint_id.as_deref(), &own_ids).await?;
    let mut tx = core.db.begin().await?;
    if let Some(delivery) = &delivery {
        if !first_delivery(&mut tx, delivery).await? {
            tx.rollback().await?;
            return Ok(ack("duplicate"));
        }
    }
    let locked = match &found {
        Some(found) => repository::lock(&mut tx, found.tenant_id, found.id).await?,
        None => None,
    };
    let Some(locked) = locked else {
        tx.commit().await?;
        tracing::warn!(
            event = webhook.event,
            simplyprint_id,
            uid = job.uid,
            "SimplyPrint webhook for a job forma does not know; acknowledged"
        );
        return Ok(ack("unknown-job"));
    };
    // Matched by the job's tag, for an item of an attempt before a retry: old news.
    if let Some(id) = &simplyprint_id
        && locked.simply_print_job_id.as_deref() != Some(id.as_str())
        && repository::is_earlier_item(&mut tx, locked.id, id).await?
    {
        tx.commit().await?;
        tracing::info!(job = %locked.id, simplyprint_id = id, event = webhook.event, "a SimplyPrint webhook about an earlier attempt of a retried job; acknowledged, ignored");
        return Ok(ack("stale"));
    }
    if let (Some(id), None) = (&simplyprint_id, &locked.simply_print_job_id) {
        repository::set_simplyprint_id(&mut tx, locked.id, id).await?;
    }
    let reason = job
        .error
        .or(job.status)
        .filter(|_| to == PrintJobStatus::Failed);
    let outcome: Option<Changed> = match transitions::change(
        &mut tx,
        &locked,
        to,
        reason,
        Reporter::Farm,
    )
    .await
    {
        Ok(changed) => changed,
        Err(ChangeError::Illegal(e)) => {
            tx.commit().await?;
            tracing::warn!(job = %locked.id, error = %e, "SimplyPrint reported a move the state machine refuses; acknowledged");
            return Ok(ack("unchanged"));
        }
        Err(ChangeError::Db(e)) => return Err(e.into()),
    };
    tx.commit().await?;
    match outcome {
        Some(changed) => {
            core.announce_changed(&changed).await;
            Ok(ack("updated"))
        }
        None => Ok(ack("unchanged")),
    }
}

async fn first_delivery(tx: &mut Tx, webhook_id: &str) -> Result<bool, DbError> {
    let inserted = on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO simplyprint_webhooks (webhook_id, received_at) VALUES ($1, $2) \
             ON CONFLICT (webhook_id) DO NOTHING",
        )
        .bind(webhook_id)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(inserted == 1)
}

/// Deletes the records of deliveries older than a week (SimplyPrint retries within minutes).
pub async fn forget_old_deliveries(db: &crate::infra::db::Db) -> Result<u64, DbError> {
    let cutoff = Utc::now() - chrono::TimeDelta::days(7);
    let deleted = crate::on_pool!(db, pool => {
        sqlx::query("DELETE FROM simplyprint_webhooks WHERE received_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(deleted)
}
