//! Sendcloud's webhooks as they arrive: the `Sendcloud-Signature` header (hex HMAC-SHA256 of the
//! raw body with the integration's secret) and the body
//! `{"action", "timestamp", "parcel": {…}}`, whose parcel is the same object `GET /parcels/{id}`
//! answers.

use chrono::{DateTime, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::parcel::Parcel;

/// The header Sendcloud signs every delivery with.
pub const SENDCLOUD_SIGNATURE: &str = "sendcloud-signature";

/// The action forma acts on.
pub const PARCEL_STATUS_CHANGED: &str = "parcel_status_changed";

/// What a delivery says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// The parcel as it is now, and when Sendcloud sent this (its `timestamp`, when it has a
    /// readable one).
    ParcelStatusChanged {
        parcel: Parcel,
        sent_at: Option<DateTime<Utc>>,
    },
    /// Any other action (`integration_connected`, `refund_requested`, …), by name.
    Other(String),
}

/// Whether `signature_hex` is the HMAC-SHA256 of `body` with `secret`. Compared in constant time
/// by the MAC itself. An empty secret verifies nothing: a webhook secret left blank must not
/// turn into a key anyone can sign with.
pub fn verify_signature(secret: &[u8], body: &[u8], signature_hex: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    let Ok(presented) = hex::decode(signature_hex.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&presented).is_ok()
}

/// The signature Sendcloud would send for `body`: for the simulator and tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Reads a delivery's body. An error names what is wrong with it; a delivery whose action forma
/// does not act on is not an error.
pub fn parse_webhook(body: &[u8]) -> Result<WebhookEvent, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
    let action = document
        .get("action")
        .and_then(Value::as_str)
        .ok_or("the body has no action")?;
    if action != PARCEL_STATUS_CHANGED {
        return Ok(WebhookEvent::Other(action.to_owned()));
    }
    // Milliseconds since the epoch.
    let sent_at = document
        .get("timestamp")
        .and_then(Value::as_i64)
        .and_then(DateTime::from_timestamp_millis);
    let parcel = document
        .get("parcel")
        .and_then(Parcel::from_json)
        .ok_or_else(|| format!("{PARCEL_STATUS_CHANGED} without a parcel id"))?;
    Ok(WebhookEvent::ParcelStatusChanged { parcel, sent_at })
}
