//! `POST /api/v1/webhooks/sendcloud` (SPEC §6.4): Sendcloud tells forma a parcel moved.
//!
//! - Authenticated by `Sendcloud-Signature`, the hex HMAC-SHA256 of the raw body under
//!   `sendcloud.webhook_secret`, checked in constant time.
//! - `parcel_status_changed` is matched to a shipment by `parcel.id`. Every other action, a parcel
//!   forma does not know, and a repeated delivery are acknowledged (Sendcloud would retry them).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ShippingState;
use super::parcels::parcel_state;
use super::sendcloud::{WebhookEvent, parse_webhook, verify_signature};
use super::shipments::repository::ParcelState;
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};

pub const SENDCLOUD_SIGNATURE: &str = "sendcloud-signature";

pub fn routes() -> OpenApiRouter<ShippingState> {
    OpenApiRouter::new().routes(routes!(sendcloud_webhook))
}

/// What forma did with a delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendcloudAck {
    pub received: bool,
    /// `updated`, `ignored` or `unknown-parcel`.
    pub outcome: String,
}

fn ack(outcome: &str) -> Json<SendcloudAck> {
    Json(SendcloudAck {
        received: true,
        outcome: outcome.to_owned(),
    })
}

/// A parcel status change from Sendcloud.
#[utoipa::path(post, path = "/api/v1/webhooks/sendcloud", tag = "webhooks",
    request_body(content = Object, description = "Sendcloud's webhook body: {action, timestamp, parcel}"),
    params(("Sendcloud-Signature" = String, Header, description = "Hex HMAC-SHA256 of the body under sendcloud.webhook_secret")),
    responses(
        (status = 200, description = "Acknowledged (also for unknown parcels and actions)", body = SendcloudAck),
        (status = 400, description = "The body is not a Sendcloud webhook", body = ErrorBody),
        (status = 401, description = "Missing or wrong Sendcloud-Signature", body = ErrorBody)))]
async fn sendcloud_webhook(
    State(state): State<ShippingState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<SendcloudAck>, ApiError> {
    let secret = state
        .sendcloud
        .webhook_secret
        .as_ref()
        .map(|s| s.expose().as_bytes())
        .filter(|s| !s.is_empty());
    let signature = headers
        .get(SENDCLOUD_SIGNATURE)
        .and_then(|v| v.to_str().ok());
    match (secret, signature) {
        (Some(secret), Some(signature)) if verify_signature(secret, &body, signature) => {}
        (None, _) => {
            tracing::warn!("refused a Sendcloud webhook: sendcloud.webhook_secret is not set");
            return Err(ApiError::unauthorized("Invalid Sendcloud signature"));
        }
        _ => return Err(ApiError::unauthorized("Invalid Sendcloud signature")),
    }
    let event = parse_webhook(&body)
        .map_err(|e| ApiError::bad_request(format!("Not a Sendcloud webhook: {e}")))?;
    let (parcel, sent_at) = match event {
        WebhookEvent::ParcelStatusChanged { parcel, sent_at } => (parcel, sent_at),
        WebhookEvent::Other(action) => {
            tracing::debug!(action, "Sendcloud webhook not acted on");
            return Ok(ack("ignored"));
        }
    };
    let reported = ParcelState {
        sent_at,
        ..parcel_state(&parcel)
    };
    match state.core.parcel_changed(&reported).await? {
        Some(_) => Ok(ack("updated")),
        None => {
            tracing::info!(
                parcel = parcel.id,
                "a Sendcloud webhook for a parcel forma does not know"
            );
            Ok(ack("unknown-parcel"))
        }
    }
}
