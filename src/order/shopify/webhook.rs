//! `POST /api/v1/webhooks/shopify[/{topic}]` (SPEC §6.3).
//!
//! - The HMAC-SHA256 of the raw body (base64, `X-Shopify-Hmac-Sha256`) is checked first, in
//!   constant time: a wrong or missing one is a 401 and nothing is read further or stored. The
//!   body arrives here byte for byte (the gateway streams it), in `all` and split alike. The
//!   secrets tried are those of the shop the webhook names ([`webhook_secrets`]).
//! - The shop (`X-Shopify-Shop-Domain`) decides the tenant; an unknown shop is a 404.
//! - The topic comes from `X-Shopify-Topic`, or from the path when the header is absent.
//! - A delivery seen before (`X-Shopify-Webhook-Id`, or `X-Shopify-Event-Id` for its topic) is
//!   acknowledged and ignored; so is a topic forma does not act on.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::payload::ShopifyOrder;
use super::{Delivery, signature_is_valid, topics, webhook_secrets};
use crate::http::extract::{Json, Path};
use crate::http::{ApiError, ErrorBody};
use crate::order::OrderState;
use crate::order::orders::ingest;

pub const X_SHOPIFY_HMAC: &str = "x-shopify-hmac-sha256";
pub const X_SHOPIFY_TOPIC: &str = "x-shopify-topic";
pub const X_SHOPIFY_SHOP_DOMAIN: &str = "x-shopify-shop-domain";
pub const X_SHOPIFY_WEBHOOK_ID: &str = "x-shopify-webhook-id";
pub const X_SHOPIFY_EVENT_ID: &str = "x-shopify-event-id";
pub const X_SHOPIFY_TRIGGERED_AT: &str = "x-shopify-triggered-at";

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(shopify_webhook))
        .routes(routes!(shopify_webhook_with_topic))
}

/// What forma did with a delivery.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShopifyAck {
    pub received: bool,
    /// `created`, `exists`, `duplicate`, `updated`, `cancelled`, `unchanged` or `ignored`.
    pub outcome: String,
}

/// Whether `body` is the document of shop `shop`, as Shopify writes it in `app/uninstalled`: its
/// `myshopify_domain`, or its `domain`, names the shop.
fn is_document_of_shop(body: &[u8], shop: &str) -> bool {
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(body) else {
        return false;
    };
    let shop = super::normalize_domain(shop);
    ["myshopify_domain", "domain"].iter().any(|key| {
        document
            .get(key)
            .and_then(serde_json::Value::as_str)
            .is_some_and(|named| super::normalize_domain(named) == shop)
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// A Shopify webhook; the topic from `X-Shopify-Topic`.
#[utoipa::path(post, path = "/api/v1/webhooks/shopify", tag = "webhooks",
    request_body(content = Object, description = "Shopify's order document, as signed"),
    params(
        ("X-Shopify-Hmac-Sha256" = String, Header, description = "base64 HMAC-SHA256 of the raw body"),
        ("X-Shopify-Topic" = String, Header, description = "orders/create, orders/updated, orders/cancelled, app/uninstalled"),
        ("X-Shopify-Shop-Domain" = String, Header, description = "the shop, which decides the tenant"),
        ("X-Shopify-Webhook-Id" = Option<String>, Header, description = "the delivery, for deduplication"),
        ("X-Shopify-Event-Id" = Option<String>, Header, description = "the event, for deduplication per topic")),
    responses(
        (status = 200, description = "Acknowledged", body = ShopifyAck),
        (status = 400, description = "No topic or shop, not an order document, an orders/cancelled of an order not cancelled, or an app/uninstalled of another shop", body = ErrorBody),
        (status = 401, description = "Missing or wrong HMAC", body = ErrorBody),
        (status = 404, description = "The shop is not connected to forma", body = ErrorBody)))]
async fn shopify_webhook(
    State(state): State<OrderState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ShopifyAck>, ApiError> {
    receive(&state, &headers, None, &body).await
}

/// A Shopify webhook with its topic in the path (`/api/v1/webhooks/shopify/orders/create`).
#[utoipa::path(post, path = "/api/v1/webhooks/shopify/{resource}/{action}", tag = "webhooks",
    params(
        ("resource" = String, Path, description = "the topic's first part, e.g. orders"),
        ("action" = String, Path, description = "the topic's second part, e.g. create")),
    request_body(content = Object, description = "Shopify's order document, as signed"),
    responses(
        (status = 200, description = "Acknowledged", body = ShopifyAck),
        (status = 400, description = "No shop, not an order document, an orders/cancelled of an order not cancelled, or an app/uninstalled of another shop", body = ErrorBody),
        (status = 401, description = "Missing or wrong HMAC", body = ErrorBody),
        (status = 404, description = "The shop is not connected to forma", body = ErrorBody)))]
async fn shopify_webhook_with_topic(
    State(state): State<OrderState>,
    topic: Result<Path<(String, String)>, ApiError>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ShopifyAck>, ApiError> {
    let Path((resource, action)) = topic?;
    receive(
        &state,
        &headers,
        Some(format!("{resource}/{action}")),
        &body,
    )
    .await
}

async fn receive(
    state: &OrderState,
    headers: &HeaderMap,
    path_topic: Option<String>,
    body: &[u8],
) -> Result<Json<ShopifyAck>, ApiError> {
    let shopify = &state.shopify;
    let named_shop = header(headers, X_SHOPIFY_SHOP_DOMAIN);
    let secrets = webhook_secrets(shopify, named_shop.unwrap_or_default());
    if secrets.is_empty() {
        tracing::warn!(
            shop = named_shop,
            "refused a Shopify webhook: no secret signs this shop's webhooks \
             (shopify.api_secret, or shopify.webhook_secret for shopify.shop_domain)"
        );
        return Err(ApiError::unauthorized("Invalid Shopify signature"));
    }
    // Every secret is tried, whichever matches: the time taken tells nothing of which.
    let signed = header(headers, X_SHOPIFY_HMAC).is_some_and(|signature| {
        secrets.iter().fold(false, |valid, secret| {
            signature_is_valid(secret, body, signature) | valid
        })
    });
    if !signed {
        return Err(ApiError::unauthorized("Invalid Shopify signature"));
    }
    let topic = header(headers, X_SHOPIFY_TOPIC)
        .map(str::to_owned)
        .or(path_topic)
        .ok_or_else(|| ApiError::bad_request("Missing X-Shopify-Topic"))?;
    let shop = named_shop.ok_or_else(|| ApiError::bad_request("Missing X-Shopify-Shop-Domain"))?;
    let db = &state.core.db;
    let tenant_id = state
        .shops
        .tenant_of(db, shopify, shop)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("Shop {shop} is not connected to forma")))?;
    let delivery = Delivery {
        tenant_id,
        topic: topic.clone(),
        webhook_id: header(headers, X_SHOPIFY_WEBHOOK_ID).map(str::to_owned),
        event_id: header(headers, X_SHOPIFY_EVENT_ID).map(str::to_owned),
    };
    let outcome = match topic.as_str() {
        topics::ORDERS_CREATE | topics::ORDERS_UPDATED | topics::ORDERS_CANCELLED => {
            let document: ShopifyOrder = serde_json::from_slice(body)
                .map_err(|e| ApiError::validation(vec![format!("Not a Shopify order: {e}")]))?;
            let new = document
                .to_new_order(tenant_id, shop)
                .map_err(ApiError::validation)?;
            // The topic is a header the signature does not cover: an order's signed document
            // sent again under this topic must not cancel the order.
            if topic == topics::ORDERS_CANCELLED && !document.is_cancelled() {
                return Err(ApiError::validation(vec![
                    "An orders/cancelled document must say when the order was cancelled (cancelled_at)".to_owned(),
                ]));
            }
            match topic.as_str() {
                // Cancelled or fulfilled before forma heard of it (a sale at the counter, an
                // order fulfilled by hand while forma was down): nothing to print.
                topics::ORDERS_CREATE if document.is_closed() => {
                    tracing::info!(
                        shop,
                        shopify_order_id = new.shopify_order_id,
                        "orders/create of an order Shopify has closed: not stored"
                    );
                    ingest::Outcome::Ignored
                }
                topics::ORDERS_CREATE => ingest::create(&state.core, &delivery, &new).await?,
                topics::ORDERS_UPDATED => {
                    ingest::update(&state.core, &delivery, &new, document.is_closed()).await?
                }
                _ => {
                    let reason = document
                        .cancel_reason
                        .map(|r| format!("Cancelled in Shopify ({r})"));
                    ingest::cancel(&state.core, &delivery, &new, reason).await?
                }
            }
        }
        topics::APP_UNINSTALLED => {
            // The topic is not signed, the body is: it must be this shop's own document, or any
            // signed order document sent again under this topic would disconnect the shop.
            if !is_document_of_shop(body, shop) {
                return Err(ApiError::validation(vec![
                    "An app/uninstalled document must be the shop's own (its myshopify_domain)"
                        .to_owned(),
                ]));
            }
            let triggered_at = header(headers, X_SHOPIFY_TRIGGERED_AT)
                .and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok())
                .map(|at| at.with_timezone(&chrono::Utc));
            super::tokens::uninstalled(db, &delivery, shop, triggered_at).await?
        }
        other => {
            tracing::debug!(topic = other, "Shopify topic not acted on");
            ingest::Outcome::Ignored
        }
    };
    Ok(Json(ShopifyAck {
        received: true,
        outcome: outcome.as_str().to_owned(),
    }))
}
