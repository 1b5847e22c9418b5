//! Shopify, simulated: order documents as Shopify writes them, webhook deliveries with the
//! headers and HMAC signature Shopify sends, and the fulfillment part of its Admin API
//! ([`ShopifyAdminSim`]).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// One line of a simulated order.
#[derive(Debug, Clone)]
pub struct Line {
    pub id: u64,
    pub sku: String,
    pub name: String,
    pub quantity: u32,
    pub price: String,
}

/// A Shopify order document (the body of `orders/create`), trimmed to what Shopify always sends
/// plus what forma reads.
pub fn order_document(id: u64, number: u64, lines: &[Line]) -> Value {
    let total: f64 = lines
        .iter()
        .map(|l| l.price.parse::<f64>().unwrap_or_default() * f64::from(l.quantity))
        .sum();
    json!({
        "id": id,
        "admin_graphql_api_id": format!("gid://shopify/Order/{id}"),
        "name": format!("#{number}"),
        "order_number": number,
        "email": format!("customer{number}@example.com"),
        "created_at": chrono::Utc::now().to_rfc3339(),
        "currency": "EUR",
        "total_price": format!("{total:.2}"),
        "financial_status": "paid",
        "fulfillment_status": null,
        "customer": {"id": id + 1, "first_name": "Ada", "last_name": format!("Customer {number}"), "email": format!("customer{number}@example.com")},
        "shipping_address": {
            "first_name": "Ada", "last_name": format!("Customer {number}"),
            "address1": "Veldstraat 1", "city": "Gent", "zip": "9000",
            "country": "Belgium", "country_code": "BE", "phone": "+32 9 000 00 00"
        },
        "line_items": lines.iter().map(|l| json!({
            "id": l.id, "sku": l.sku, "name": l.name, "title": l.name,
            "quantity": l.quantity, "current_quantity": l.quantity, "price": l.price,
            "requires_shipping": true
        })).collect::<Vec<_>>(),
    })
}

/// A webhook delivery as Shopify makes it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub shop_domain: String,
    pub webhook_id: String,
    pub event_id: String,
    pub body: Vec<u8>,
}

impl Delivery {
    /// A new delivery of `body` for `topic` (fresh delivery and event ids).
    pub fn new(topic: &str, shop_domain: &str, body: &Value) -> Self {
        Self {
            topic: topic.to_owned(),
            shop_domain: shop_domain.to_owned(),
            webhook_id: uuid::Uuid::new_v4().to_string(),
            event_id: uuid::Uuid::new_v4().to_string(),
            body: body.to_string().into_bytes(),
        }
    }

    /// Posts the delivery to `url`, signed with `secret`, as Shopify does; returns the response.
    pub async fn send(
        &self,
        client: &reqwest::Client,
        url: &str,
        secret: &[u8],
    ) -> Result<reqwest::Response, reqwest::Error> {
        let signature = crate::order::shopify::sign(secret, &self.body);
        client
            .post(url)
            .header("content-type", "application/json")
            .header("x-shopify-topic", &self.topic)
            .header("x-shopify-shop-domain", &self.shop_domain)
            .header("x-shopify-webhook-id", &self.webhook_id)
            .header("x-shopify-event-id", &self.event_id)
            .header("x-shopify-api-version", "2025-10")
            .header("x-shopify-hmac-sha256", signature)
            .body(self.body.clone())
            .send()
            .await
    }
}

/// A fulfillment the Admin API simulator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fulfillment {
    pub id: u64,
    pub order_id: u64,
    pub fulfillment_order_ids: Vec<u64>,
    pub tracking_number: Option<String>,
    pub tracking_url: Option<String>,
    pub tracking_company: Option<String>,
}

/// One request the Admin API simulator received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub access_token: Option<String>,
    pub body: Value,
}

struct FulfillmentOrderLine {
    id: u64,
    line_item_id: u64,
    quantity: u32,
    fulfillable_quantity: u32,
}

struct FulfillmentOrder {
    id: u64,
    order_id: u64,
    status: String,
    line_items: Vec<FulfillmentOrderLine>,
}

#[derive(Default)]
struct AdminInner {
    /// Order id → its fulfillment orders' ids.
    orders: BTreeMap<u64, Vec<u64>>,
    fulfillment_orders: BTreeMap<u64, FulfillmentOrder>,
    fulfillments: Vec<Fulfillment>,
    next_id: u64,
    requests: Vec<Recorded>,
    /// Requests still to answer 500.
    failures: usize,
    failing: bool,
    delay: Duration,
}

impl AdminInner {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
}

type Shared = Arc<Mutex<AdminInner>>;

fn lock(inner: &Shared) -> MutexGuard<'_, AdminInner> {
    inner.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shopify's Admin API, simulated: the fulfillment endpoints forma uses, under
/// `/admin/api/{version}/` for any shop and version, behind `X-Shopify-Access-Token`. Orders are
/// registered with [`ShopifyAdminSim::add_order`], each with one open fulfillment order; a
/// fulfillment fulfills whole fulfillment orders and closes them. It records every request, and
/// can be told to fail (answer 500) or to be slow. Cheap to clone.
#[derive(Clone)]
pub struct ShopifyAdminSim {
    pub addr: SocketAddr,
    pub access_token: String,
    inner: Shared,
}

#[derive(Clone)]
struct AdminState {
    access_token: String,
    inner: Shared,
}

impl ShopifyAdminSim {
    /// Starts it on a free loopback port until `stop`, accepting `access_token` only.
    pub async fn start(access_token: &str, stop: CancellationToken) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(AdminInner {
            next_id: 5_000_000_000,
            ..AdminInner::default()
        }));
        let state = AdminState {
            access_token: access_token.to_owned(),
            inner: inner.clone(),
        };
        let router = Router::new()
            .route(
                "/admin/api/{version}/orders/{order_id}/fulfillment_orders.json",
                get(list_fulfillment_orders),
            )
            .route(
                "/admin/api/{version}/orders/{order_id}/fulfillments.json",
                get(list_fulfillments),
            )
            .route(
                "/admin/api/{version}/fulfillments.json",
                post(create_fulfillment),
            )
            .fallback(|| async { not_found() })
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state);
        let addr = super::serve_on_loopback(router, stop).await?;
        Ok(Self {
            addr,
            access_token: access_token.to_owned(),
            inner,
        })
    }

    /// What forma's `shopify.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Registers order `order_id` with its `(line item id, quantity)` lines, all in one open
    /// fulfillment order; returns that fulfillment order's id.
    pub fn add_order(&self, order_id: u64, line_items: &[(u64, u32)]) -> u64 {
        let mut inner = lock(&self.inner);
        let id = inner.next_id();
        let line_items = line_items
            .iter()
            .map(|&(line_item_id, quantity)| FulfillmentOrderLine {
                id: inner.next_id(),
                line_item_id,
                quantity,
                fulfillable_quantity: quantity,
            })
            .collect();
        inner.fulfillment_orders.insert(
            id,
            FulfillmentOrder {
                id,
                order_id,
                status: "open".to_owned(),
                line_items,
            },
        );
        inner.orders.entry(order_id).or_default().push(id);
        id
    }

    /// The fulfillments made so far, oldest first.
    pub fn fulfillments(&self) -> Vec<Fulfillment> {
        lock(&self.inner).fulfillments.clone()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.inner).requests.clone()
    }

    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: usize) {
        lock(&self.inner).failures = n;
    }

    /// Every request answers 500 until told otherwise.
    pub fn set_failing(&self, failing: bool) {
        lock(&self.inner).failing = failing;
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        lock(&self.inner).delay = delay;
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

fn not_found() -> Response {
    answer(StatusCode::NOT_FOUND, json!({"errors": "Not Found"}))
}

/// Records the request, plays the configured misbehaviour, and checks the access token.
async fn gate(State(state): State<AdminState>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let access_token = parts
        .headers
        .get("x-shopify-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (delay, fail) = {
        let mut inner = lock(&state.inner);
        inner.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            access_token: access_token.clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
        let fail = inner.failing || inner.failures > 0;
        inner.failures = inner.failures.saturating_sub(1);
        (inner.delay, fail)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fail {
        return answer(
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({"errors": "Internal Server Error"}),
        );
    }
    if access_token.as_deref() != Some(state.access_token.as_str()) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"errors": "[API] Invalid API key or access token"}),
        );
    }
    next.run(Request::from_parts(parts, bytes.into())).await
}

fn fulfillment_order_json(order: &FulfillmentOrder) -> Value {
    json!({
        "id": order.id,
        "order_id": order.order_id,
        "status": order.status,
        "request_status": "unsubmitted",
        "line_items": order.line_items.iter().map(|l| json!({
            "id": l.id,
            "fulfillment_order_id": order.id,
            "line_item_id": l.line_item_id,
            "quantity": l.quantity,
            "fulfillable_quantity": l.fulfillable_quantity,
        })).collect::<Vec<_>>(),
    })
}

fn fulfillment_json(f: &Fulfillment) -> Value {
    json!({
        "id": f.id,
        "order_id": f.order_id,
        "status": "success",
        "service": "manual",
        "tracking_company": f.tracking_company,
        "tracking_number": f.tracking_number,
        "tracking_numbers": f.tracking_number.iter().collect::<Vec<_>>(),
        "tracking_url": f.tracking_url,
        "tracking_urls": f.tracking_url.iter().collect::<Vec<_>>(),
    })
}

async fn list_fulfillment_orders(
    State(state): State<AdminState>,
    Path((_version, order_id)): Path<(String, String)>,
) -> Response {
    let inner = lock(&state.inner);
    let Some(ids) = order_id.parse().ok().and_then(|id| inner.orders.get(&id)) else {
        return not_found();
    };
    let orders: Vec<Value> = ids
        .iter()
        .filter_map(|id| inner.fulfillment_orders.get(id))
        .map(fulfillment_order_json)
        .collect();
    answer(StatusCode::OK, json!({"fulfillment_orders": orders}))
}

async fn list_fulfillments(
    State(state): State<AdminState>,
    Path((_version, order_id)): Path<(String, String)>,
) -> Response {
    let inner = lock(&state.inner);
    let Some(order_id) = order_id
        .parse::<u64>()
        .ok()
        .filter(|id| inner.orders.contains_key(id))
    else {
        return not_found();
    };
    let fulfillments: Vec<Value> = inner
        .fulfillments
        .iter()
        .filter(|f| f.order_id == order_id)
        .map(fulfillment_json)
        .collect();
    answer(StatusCode::OK, json!({"fulfillments": fulfillments}))
}

#[derive(Deserialize)]
struct NewFulfillmentBody {
    fulfillment: NewFulfillment,
}

#[derive(Deserialize)]
struct NewFulfillment {
    line_items_by_fulfillment_order: Vec<ByFulfillmentOrder>,
    #[serde(default)]
    tracking_info: Option<TrackingInfo>,
}

#[derive(Deserialize)]
struct ByFulfillmentOrder {
    fulfillment_order_id: Value,
}

#[derive(Deserialize, Default)]
struct TrackingInfo {
    number: Option<String>,
    url: Option<String>,
    company: Option<String>,
}

async fn create_fulfillment(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Ok(NewFulfillmentBody { fulfillment }) = serde_json::from_slice(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": {"fulfillment": "Required parameter missing or invalid"}}),
        );
    };
    let ids: Option<Vec<u64>> = fulfillment
        .line_items_by_fulfillment_order
        .iter()
        .map(|by| match &by.fulfillment_order_id {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        })
        .collect();
    let mut inner = lock(&state.inner);
    let Some(ids) = ids.filter(|ids| !ids.is_empty()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": {"fulfillment": "Required parameter missing or invalid"}}),
        );
    };
    let mut order_ids = BTreeSet::new();
    for id in &ids {
        let Some(order) = inner.fulfillment_orders.get(id) else {
            return not_found();
        };
        if !matches!(order.status.as_str(), "open" | "in_progress") {
            return answer(
                StatusCode::UNPROCESSABLE_ENTITY,
                json!({"errors": [format!("Fulfillment order {id} has an unfulfillable status= {}.", order.status)]}),
            );
        }
        order_ids.insert(order.order_id);
    }
    let (Some(&order_id), 1) = (order_ids.first(), order_ids.len()) else {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": ["All fulfillment orders must belong to the same order."]}),
        );
    };
    for id in &ids {
        if let Some(order) = inner.fulfillment_orders.get_mut(id) {
            order.status = "closed".to_owned();
            for line in &mut order.line_items {
                line.fulfillable_quantity = 0;
            }
        }
    }
    let tracking = fulfillment.tracking_info.unwrap_or_default();
    let made = Fulfillment {
        id: inner.next_id(),
        order_id,
        fulfillment_order_ids: ids,
        tracking_number: tracking.number,
        tracking_url: tracking.url,
        tracking_company: tracking.company,
    };
    let body = json!({"fulfillment": fulfillment_json(&made)});
    inner.fulfillments.push(made);
    answer(StatusCode::CREATED, body)
}
