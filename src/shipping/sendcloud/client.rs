//! Sendcloud's HTTP API (v2), the part forma uses: create a parcel with its label, find the
//! parcels of an order number, read one parcel, cancel one. Every call carries HTTP Basic auth
//! with the integration's public and secret key. Errors come back as
//! `{"error": {"code", "message", "request"}}`, and a refused cancellation as
//! `{"status": "failed", "message"}`.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use super::parcel::{Parcel, ParcelRequest};
use crate::config::{Config, Secret};

/// Where Sendcloud's API is when `sendcloud.base_url` is not set.
pub const DEFAULT_BASE_URL: &str = "https://panel.sendcloud.sc/api/v2";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendcloudError {
    /// Not reached, timed out, rate limited or failed on its side: worth trying again later.
    #[error("Sendcloud is unavailable: {0}")]
    Unavailable(String),
    /// Sendcloud refused the call (bad address, a parcel the carrier has, …); the same call will
    /// be refused again.
    #[error("Sendcloud refused the call: {0}")]
    Rejected(String),
    /// Sendcloud refused forma's keys (401, 403): every call is refused until they are mended,
    /// and then the same call succeeds. Worth trying again, unlike a refusal of the call itself.
    #[error("Sendcloud refused forma's keys (sendcloud.public_key, sendcloud.secret_key): {0}")]
    Unauthorized(String),
}

/// What Sendcloud made of a parcel's cancellation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cancellation {
    /// Cancelled (or deleted, never announced; or unknown to Sendcloud).
    Done,
    /// Queued: the carrier is asked, and may still refuse. The parcel's status tells the end
    /// (cancelled, or moving).
    Queued,
}

/// A client of one Sendcloud integration.
pub struct Sendcloud {
    http: reqwest::Client,
    /// Without a trailing slash, e.g. `https://panel.sendcloud.sc/api/v2`.
    base_url: String,
    public_key: String,
    secret_key: Secret,
    /// What every parcel is announced with (`shipment.id`), and whether the integration's shipping
    /// rules may choose another.
    shipping_method_id: Option<u64>,
    apply_shipping_rules: bool,
}

impl Sendcloud {
    /// The client, when `sendcloud.public_key` and `sendcloud.secret_key` are both set.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let request = config
            .sendcloud
            .timeout_ms
            .map_or(REQUEST_TIMEOUT, Duration::from_millis);
        Self::with_timeouts(config, CONNECT_TIMEOUT.min(request), request)
    }

    /// As [`Sendcloud::from_config`], giving up on connecting after `connect` and on a whole
    /// call after `request`.
    pub fn with_timeouts(
        config: &Config,
        connect: Duration,
        request: Duration,
    ) -> anyhow::Result<Option<Self>> {
        let settings = &config.sendcloud;
        let Some((public_key, secret_key)) = settings.keys() else {
            return Ok(None);
        };
        let base_url = settings
            .base_url
            .as_deref()
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .unwrap_or(DEFAULT_BASE_URL)
            .trim_end_matches('/')
            .to_owned();
        let http = crate::infra::tls::http_client()
            .connect_timeout(connect)
            .timeout(request)
            .build()?;
        Ok(Some(Self {
            http,
            base_url,
            public_key: public_key.to_owned(),
            secret_key: secret_key.clone(),
            shipping_method_id: settings.shipping_method_id,
            apply_shipping_rules: settings.apply_shipping_rules,
        }))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// Sends the request; a 2xx answer's JSON body, else the error it means. A 404 is returned
    /// as `Ok(None)` so each caller decides what a missing parcel means.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<Option<Value>, SendcloudError> {
        let response = request
            .basic_auth(&self.public_key, Some(self.secret_key.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| SendcloudError::Unavailable(without_url(&e)))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(SendcloudError::Unavailable(format!("answered {status}")));
        }
        let bytes = response.bytes().await.map_err(|e| {
            SendcloudError::Unavailable(format!("answer cut short ({status}): {}", without_url(&e)))
        })?;
        let body = if bytes.iter().all(u8::is_ascii_whitespace) {
            Some(Value::Null)
        } else {
            serde_json::from_slice::<Value>(&bytes).ok()
        };
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            let message = body
                .as_ref()
                .and_then(error_message)
                .unwrap_or_else(|| format!("answered {status}"));
            if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
                return Err(SendcloudError::Unauthorized(message));
            }
            return Err(SendcloudError::Rejected(message));
        }
        body.map(Some)
            .ok_or_else(|| SendcloudError::Unavailable(format!("unreadable answer ({status})")))
    }

    /// Creates and announces a parcel (its label is requested). Before calling this again for an
    /// order whose earlier attempt has no known outcome, look with
    /// [`Sendcloud::find_by_order_number`]: a parcel created twice is shipped twice.
    pub async fn create_parcel(&self, request: &ParcelRequest) -> Result<Parcel, SendcloudError> {
        let mut body = request.to_json();
        if let Some(parcel) = body.get_mut("parcel").and_then(Value::as_object_mut) {
            if let Some(method) = self.shipping_method_id {
                parcel.insert("shipment".to_owned(), serde_json::json!({"id": method}));
            }
            if self.apply_shipping_rules {
                parcel.insert("apply_shipping_rules".to_owned(), Value::Bool(true));
            }
        }
        let answer = self
            .call(self.http.post(self.url("/parcels")).json(&body))
            .await?
            .ok_or_else(|| SendcloudError::Rejected("parcels endpoint not found".into()))?;
        answer
            .get("parcel")
            .and_then(Parcel::from_json)
            .ok_or_else(|| SendcloudError::Unavailable("created, but answered no parcel".into()))
    }

    /// The parcels carrying `order_number`, oldest first.
    pub async fn find_by_order_number(
        &self,
        order_number: &str,
    ) -> Result<Vec<Parcel>, SendcloudError> {
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair("order_number", order_number)
            .finish();
        let request = self.http.get(self.url(&format!("/parcels?{query}")));
        let Some(answer) = self.call(request).await? else {
            return Ok(Vec::new());
        };
        let parcels = answer
            .get("parcels")
            .and_then(Value::as_array)
            .ok_or_else(|| SendcloudError::Unavailable("answered no parcel list".into()))?;
        // Kept only when the order number matches exactly: taking another order's parcel for
        // this one would leave this order unshipped.
        let mut found: Vec<Parcel> = parcels
            .iter()
            .filter_map(Parcel::from_json)
            .filter(|p| p.order_number.as_deref() == Some(order_number))
            .collect();
        found.sort_by_key(|p| p.id);
        Ok(found)
    }

    /// A parcel; `None` when Sendcloud does not know the id (or deleted it).
    pub async fn parcel(&self, id: i64) -> Result<Option<Parcel>, SendcloudError> {
        let Some(answer) = self
            .call(self.http.get(self.url(&format!("/parcels/{id}"))))
            .await?
        else {
            return Ok(None);
        };
        answer
            .get("parcel")
            .and_then(Parcel::from_json)
            .map(Some)
            .ok_or_else(|| SendcloudError::Unavailable("answered no parcel".into()))
    }

    /// Cancels an announced parcel, or deletes one not yet announced. Sendcloud may accept the
    /// cancellation now (`cancelled`, `deleted`) or queue it for the carrier, who may still refuse
    /// (`queued`): then the parcel's status tells the outcome. A parcel Sendcloud no longer has
    /// counts as cancelled, so a retried cancellation succeeds.
    pub async fn cancel_parcel(&self, id: i64) -> Result<Cancellation, SendcloudError> {
        let request = self.http.post(self.url(&format!("/parcels/{id}/cancel")));
        let Some(answer) = self.call(request).await? else {
            return Ok(Cancellation::Done);
        };
        match answer.get("status").and_then(Value::as_str) {
            Some("failed") => {
                let message =
                    error_message(&answer).unwrap_or_else(|| "cancellation failed".into());
                Err(SendcloudError::Rejected(message))
            }
            Some("queued") => Ok(Cancellation::Queued),
            _ => Ok(Cancellation::Done),
        }
    }
}

/// Sendcloud's explanation in an error answer, in whichever of its shapes it came.
fn error_message(body: &Value) -> Option<String> {
    let error = body.get("error");
    [
        error.and_then(|e| e.get("message")),
        error,
        body.get("message"),
        body.get("detail"),
    ]
    .into_iter()
    .flatten()
    .find_map(|v| match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        _ => None,
    })
}

/// reqwest's errors name the URL, which may hold an order number; the logs need the cause only.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "Sendcloud");
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}
