//! Shopify's Admin API (REST), the part forma uses to fulfill an order: read the order's
//! fulfillment orders, and create one fulfillment with tracking for those still open. Every call
//! carries `X-Shopify-Access-Token` and goes to `https://{shop}/admin/api/{API_VERSION}`, or to
//! `{shopify.base_url}/admin/api/{API_VERSION}` for every shop when that is set (a local fake).
//!
//! Creating a fulfillment is not idempotent at Shopify, and its answer can be lost after Shopify
//! acted on it; so [`ShopifyAdmin::create_fulfillment`] first looks whether the fulfillment is
//! already there, and a retry of a shipment never fulfills an order twice.

use std::time::Duration;

use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::{Value, json};
use url::Url;

use crate::config::{Config, Secret};

/// The Admin API version every call names; Shopify supports each for a year.
pub const API_VERSION: &str = "2025-10";

/// How long one call may take when nothing else is said.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);

/// The statuses of a fulfillment order that can still be fulfilled.
const FULFILLABLE: [&str; 2] = ["open", "in_progress"];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShopifyError {
    /// Not reached, timed out, rate limited or failed on its side: worth trying again later.
    #[error("Shopify is unavailable: {0}")]
    Unavailable(String),
    /// Shopify refused the call; the same call will be refused again.
    #[error("Shopify refused the call: {0}")]
    Rejected(String),
}

/// What a parcel ships with, as the carrier tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracking {
    pub number: String,
    pub url: Option<String>,
    pub company: Option<String>,
}

/// A group of an order's line items that ship from one location, as Shopify plans them.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FulfillmentOrder {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    /// `open`, `in_progress`, `scheduled`, `on_hold`, `incomplete`, `closed` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub line_items: Vec<FulfillmentOrderLine>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct FulfillmentOrderLine {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    pub quantity: i64,
    /// What is left to ship of `quantity`.
    pub fulfillable_quantity: i64,
}

/// A fulfillment: what was shipped, with its tracking.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Fulfillment {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    /// `pending`, `open`, `success`, `cancelled`, `error` or `failure`.
    pub status: String,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub tracking_company: Option<String>,
}

/// Shopify writes ids as numbers; forma keeps them as text.
fn id_text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    match Value::deserialize(deserializer)? {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
        other => Err(serde::de::Error::custom(format!(
            "an id must be a number or a string, not {other}"
        ))),
    }
}

/// An id as Shopify wants it in a body: a number when it is one.
fn id_value(id: &str) -> Value {
    id.parse::<u64>().map_or_else(|_| json!(id), |n| json!(n))
}

#[derive(Deserialize)]
struct FulfillmentOrders {
    fulfillment_orders: Vec<FulfillmentOrder>,
}

#[derive(Deserialize)]
struct Fulfillments {
    fulfillments: Vec<Fulfillment>,
}

#[derive(Deserialize)]
struct OneFulfillment {
    fulfillment: Fulfillment,
}

/// A client of the Admin API of any shop; the shop and its token are named per call.
pub struct ShopifyAdmin {
    http: reqwest::Client,
    /// `shopify.base_url`: where every shop is reached instead of `https://{shop}`.
    base_url: Option<Url>,
}

impl ShopifyAdmin {
    /// A client whose calls each take at most `timeout`. `base_url_template` (`shopify.base_url`)
    /// replaces `https://{shop}` for every shop.
    pub fn new(base_url_template: Option<&str>, timeout: Duration) -> anyhow::Result<Self> {
        let base_url = base_url_template
            .map(str::trim)
            .filter(|b| !b.is_empty())
            .map(|b| -> anyhow::Result<Url> {
                let url = Url::parse(b)
                    .map_err(|e| anyhow::anyhow!("shopify.base_url {b:?} is not a URL: {e}"))?;
                if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                    anyhow::bail!("shopify.base_url {b:?} is not an http(s) URL");
                }
                Ok(url)
            })
            .transpose()?;
        let http = crate::infra::tls::http_client()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            // A redirect would carry the access token to wherever it points.
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self { http, base_url })
    }

    /// The client for `shopify.base_url`, with [`DEFAULT_TIMEOUT`].
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        Self::new(config.shopify.base_url.as_deref(), DEFAULT_TIMEOUT)
    }

    /// `{base}/admin/api/{API_VERSION}/{segments…}`, each segment escaped.
    fn url(&self, shop: &str, segments: &[&str]) -> Result<Url, ShopifyError> {
        let mut url = match &self.base_url {
            Some(base) => base.clone(),
            None => {
                let shop = super::normalize_domain(shop);
                // The shop becomes the host the token is sent to: a domain name and nothing else.
                let is_domain = !shop.is_empty()
                    && shop
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
                if !is_domain {
                    return Err(ShopifyError::Rejected(format!(
                        "{shop:?} is not a shop domain"
                    )));
                }
                Url::parse(&format!("https://{shop}"))
                    .map_err(|e| ShopifyError::Rejected(format!("{shop:?}: {e}")))?
            }
        };
        url.path_segments_mut()
            .map_err(|()| ShopifyError::Rejected("the base URL cannot take a path".to_owned()))?
            .pop_if_empty()
            .extend(["admin", "api", API_VERSION])
            .extend(segments);
        Ok(url)
    }

    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        token: &Secret,
    ) -> Result<T, ShopifyError> {
        let response = request
            .header("X-Shopify-Access-Token", token.expose())
            .header("Accept", "application/json")
            .send()
            .await
            .map_err(|e| ShopifyError::Unavailable(without_url(&e)))?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return Err(ShopifyError::Unavailable(format!("answered {status}")));
        }
        let body = response.bytes().await.map_err(|e| {
            ShopifyError::Unavailable(format!("answer cut short ({status}): {}", without_url(&e)))
        })?;
        if !status.is_success() {
            let errors = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("errors").map(errors_text))
                .filter(|e| !e.is_empty())
                .unwrap_or_else(|| status.to_string());
            return Err(ShopifyError::Rejected(errors));
        }
        serde_json::from_slice(&body)
            .map_err(|e| ShopifyError::Unavailable(format!("unreadable answer ({status}): {e}")))
    }

    /// The fulfillment orders of order `order_id` of `shop`.
    pub async fn fulfillment_orders(
        &self,
        shop: &str,
        token: &Secret,
        order_id: &str,
    ) -> Result<Vec<FulfillmentOrder>, ShopifyError> {
        let url = self.url(shop, &["orders", order_id, "fulfillment_orders.json"])?;
        let answer: FulfillmentOrders = self.call(self.http.get(url), token).await?;
        Ok(answer.fulfillment_orders)
    }

    /// The fulfillments already made for order `order_id` of `shop`.
    pub async fn fulfillments(
        &self,
        shop: &str,
        token: &Secret,
        order_id: &str,
    ) -> Result<Vec<Fulfillment>, ShopifyError> {
        let url = self.url(shop, &["orders", order_id, "fulfillments.json"])?;
        let answer: Fulfillments = self.call(self.http.get(url), token).await?;
        Ok(answer.fulfillments)
    }

    /// Fulfills what is still open of order `order_id` with `tracking`, and has Shopify tell the
    /// customer. When nothing is open because a fulfillment with this tracking number already
    /// closed it (an earlier call whose answer was lost, or a retry), that fulfillment is the
    /// answer and nothing new is made.
    pub async fn create_fulfillment(
        &self,
        shop: &str,
        token: &Secret,
        order_id: &str,
        tracking: &Tracking,
    ) -> Result<Fulfillment, ShopifyError> {
        let orders = self.fulfillment_orders(shop, token, order_id).await?;
        let open: Vec<Value> = orders
            .iter()
            .filter(|o| FULFILLABLE.contains(&o.status.as_str()))
            .map(|o| json!({"fulfillment_order_id": id_value(&o.id)}))
            .collect();
        if open.is_empty() {
            if orders.iter().any(|o| o.status == "closed") {
                let made = self.fulfillments(shop, token, order_id).await?;
                let same = made
                    .into_iter()
                    // Shopify writes no tracking number as null or as "".
                    .find(|f| f.tracking_number.as_deref().unwrap_or_default() == tracking.number);
                if let Some(fulfillment) = same {
                    return Ok(fulfillment);
                }
            }
            let statuses: Vec<&str> = orders.iter().map(|o| o.status.as_str()).collect();
            return Err(ShopifyError::Rejected(format!(
                "order {order_id} has nothing left to fulfill (fulfillment orders: {})",
                if statuses.is_empty() {
                    "none".to_owned()
                } else {
                    statuses.join(", ")
                }
            )));
        }
        let body = json!({
            "fulfillment": {
                "line_items_by_fulfillment_order": open,
                "tracking_info": {
                    "number": tracking.number,
                    "url": tracking.url,
                    "company": tracking.company,
                },
                "notify_customer": true,
            }
        });
        let url = self.url(shop, &["fulfillments.json"])?;
        let answer: OneFulfillment = self.call(self.http.post(url).json(&body), token).await?;
        Ok(answer.fulfillment)
    }
}

/// Shopify's `errors`: a sentence, a list of them, or a map of field to sentences.
fn errors_text(errors: &Value) -> String {
    match errors {
        Value::String(s) => s.clone(),
        Value::Array(items) => items.iter().map(errors_text).collect::<Vec<_>>().join("; "),
        Value::Object(fields) => fields
            .iter()
            .map(|(field, e)| format!("{field}: {}", errors_text(e)))
            .collect::<Vec<_>>()
            .join("; "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// reqwest's errors name the URL, which names the shop; the logs need the cause only.
fn without_url(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    if let Some(url) = error.url() {
        text = text.replace(url.as_str(), "Shopify");
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}

#[cfg(test)]
#[path = "admin_tests.rs"]
mod tests;
