//! Shopify, simulated: order documents as Shopify writes them, webhook deliveries with the
//! headers and HMAC signature Shopify sends, and the part of its Admin API forma uses
//! ([`ShopifyAdminSim`]): fulfillments, the app's OAuth install, webhook registrations, and the
//! orders list with its `Link` pagination.

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
        "updated_at": chrono::Utc::now().to_rfc3339(),
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
    /// When the change happened in Shopify (RFC 3339), as `X-Shopify-Triggered-At` says.
    pub triggered_at: String,
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
            triggered_at: chrono::Utc::now().to_rfc3339(),
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
            .header("x-shopify-triggered-at", &self.triggered_at)
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

/// The app the simulated shop installs through OAuth.
#[derive(Debug, Clone)]
pub struct OAuthApp {
    /// The app's client id (`shopify.api_key`).
    pub api_key: String,
    /// The app's client secret (`shopify.api_secret`): it signs the redirects.
    pub api_secret: String,
    /// The shop the consent screen belongs to: every shop is this simulator.
    pub shop: String,
}

/// A webhook registered through `POST …/webhooks.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: u64,
    pub topic: String,
    pub address: String,
}

#[derive(Default)]
struct AdminInner {
    /// Order id → its fulfillment orders' ids.
    orders: BTreeMap<u64, Vec<u64>>,
    /// The order documents `orders.json` lists, by id.
    documents: BTreeMap<u64, Value>,
    app: Option<OAuthApp>,
    /// Authorization codes not yet exchanged, with the scopes they grant.
    codes: BTreeMap<String, String>,
    webhooks: Vec<Webhook>,
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

/// Shopify's Admin API, simulated: the endpoints forma uses, under `/admin/api/{version}/` for any
/// shop and version, behind `X-Shopify-Access-Token`. Orders are registered with
/// [`ShopifyAdminSim::add_order`], each with one open fulfillment order; a fulfillment fulfills
/// whole fulfillment orders and closes them. Order documents added with
/// [`ShopifyAdminSim::add_order_document`] are listed by `orders.json` by id, in pages
/// linked by `Link` headers. It records every Admin API request, and can be told to fail (answer
/// 500) or to be slow.
///
/// With [`ShopifyAdminSim::set_app`], the app's OAuth install works too: `/admin/oauth/authorize`
/// answers the merchant's approval at once (a redirect to the `redirect_uri` with `code`, `shop`,
/// `state`, `timestamp` and a correct `hmac`), and `POST /admin/oauth/access_token` exchanges the
/// code, once, for the one access token this simulator accepts. Cheap to clone.
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
        // The OAuth endpoints carry no access token: they are how one is obtained.
        let oauth = Router::new()
            .route("/admin/oauth/authorize", get(authorize))
            .route("/admin/oauth/access_token", post(exchange_code))
            .with_state(state.clone());
        let router = Router::new()
            .route("/admin/api/{version}/orders.json", get(list_orders))
            .route("/admin/api/{version}/webhooks.json", post(register_webhook))
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
        let addr = super::serve_on_loopback(oauth.merge(router), stop).await?;
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

    /// Lets the app `app` be installed through OAuth.
    pub fn set_app(&self, app: OAuthApp) {
        lock(&self.inner).app = Some(app);
    }

    /// Adds an order document (see [`order_document`]) to those `orders.json` lists.
    pub fn add_order_document(&self, document: Value) {
        let id = document
            .get("id")
            .and_then(Value::as_u64)
            .unwrap_or_default();
        lock(&self.inner).documents.insert(id, document);
    }

    /// The webhooks registered so far, oldest first.
    pub fn webhooks(&self) -> Vec<Webhook> {
        lock(&self.inner).webhooks.clone()
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

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: Option<String>,
    scope: Option<String>,
    redirect_uri: Option<String>,
    state: Option<String>,
}

/// The consent screen, approved at once: back to `redirect_uri` with a code, signed.
async fn authorize(
    State(state): State<AdminState>,
    axum::extract::Query(query): axum::extract::Query<AuthorizeQuery>,
) -> Response {
    let mut inner = lock(&state.inner);
    let Some(app) = inner.app.clone() else {
        return answer(
            StatusCode::NOT_FOUND,
            json!({"errors": "No app can be installed here"}),
        );
    };
    let redirect = query
        .redirect_uri
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok());
    let (Some(mut redirect), Some(nonce)) = (redirect, query.state) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": "redirect_uri and state are required"}),
        );
    };
    if query.client_id.as_deref() != Some(app.api_key.as_str()) {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": "Invalid client_id"}),
        );
    }
    let code = uuid::Uuid::new_v4().simple().to_string();
    inner
        .codes
        .insert(code.clone(), query.scope.unwrap_or_default());
    let mut pairs = vec![
        ("code".to_owned(), code),
        ("host".to_owned(), host_of(&app.shop)),
        ("shop".to_owned(), app.shop.clone()),
        ("state".to_owned(), nonce),
        (
            "timestamp".to_owned(),
            chrono::Utc::now().timestamp().to_string(),
        ),
    ];
    let hmac = crate::order::shopify::oauth::sign_query(app.api_secret.as_bytes(), &pairs);
    pairs.push(("hmac".to_owned(), hmac));
    redirect.query_pairs_mut().extend_pairs(pairs);
    (
        StatusCode::FOUND,
        [(axum::http::header::LOCATION, redirect.to_string())],
    )
        .into_response()
}

/// Shopify's `host` parameter: the base64 of the shop's admin address.
fn host_of(shop: &str) -> String {
    use base64::Engine;
    let name = shop.trim_end_matches(".myshopify.com");
    base64::engine::general_purpose::STANDARD.encode(format!("admin.shopify.com/store/{name}"))
}

#[derive(Deserialize)]
struct AccessTokenBody {
    client_id: String,
    client_secret: String,
    code: String,
}

/// Exchanges a code, once, for the simulator's access token.
async fn exchange_code(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<AccessTokenBody>(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": "client_id, client_secret and code are required"}),
        );
    };
    let mut inner = lock(&state.inner);
    let app_matches = inner
        .app
        .as_ref()
        .is_some_and(|app| app.api_key == body.client_id && app.api_secret == body.client_secret);
    if !app_matches {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"errors": "Invalid client credentials"}),
        );
    }
    let Some(scope) = inner.codes.remove(&body.code) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "invalid_request", "error_description": "The authorization code was not found or was already used", "errors": "The authorization code was not found or was already used"}),
        );
    };
    answer(
        StatusCode::OK,
        json!({"access_token": state.access_token, "scope": scope}),
    )
}

#[derive(Deserialize)]
struct NewWebhookBody {
    webhook: NewWebhook,
}

#[derive(Deserialize)]
struct NewWebhook {
    topic: String,
    address: String,
}

async fn register_webhook(State(state): State<AdminState>, body: axum::body::Bytes) -> Response {
    let Ok(NewWebhookBody { webhook }) = serde_json::from_slice(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": {"webhook": "Required parameter missing or invalid"}}),
        );
    };
    let mut inner = lock(&state.inner);
    let taken = inner
        .webhooks
        .iter()
        .any(|w| w.topic == webhook.topic && w.address == webhook.address);
    if taken {
        return answer(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"errors": {"address": ["for this topic has already been taken"]}}),
        );
    }
    let registered = Webhook {
        id: inner.next_id(),
        topic: webhook.topic,
        address: webhook.address,
    };
    let body = json!({"webhook": {
        "id": registered.id, "topic": registered.topic, "address": registered.address,
        "format": "json", "api_version": "2025-10",
    }});
    inner.webhooks.push(registered);
    answer(StatusCode::CREATED, body)
}

/// Where a page of `orders.json` starts: the filter of the first request, and the offset.
#[derive(serde::Serialize, Deserialize)]
struct PageCursor {
    created_at_min: Option<String>,
    offset: usize,
}

#[derive(Deserialize)]
struct OrdersQuery {
    limit: Option<usize>,
    page_info: Option<String>,
    status: Option<String>,
    created_at_min: Option<String>,
}

/// `orders.json` by id, `limit` at a time (at most 250), the next page named by an opaque
/// `page_info` in the `Link` header. As at Shopify, a request with `page_info` may not filter.
async fn list_orders(
    State(state): State<AdminState>,
    Path(version): Path<String>,
    axum::extract::Query(query): axum::extract::Query<OrdersQuery>,
    headers: axum::http::HeaderMap,
) -> Response {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let limit = query.limit.unwrap_or(50);
    if !(1..=250).contains(&limit) {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"errors": "limit must be between 1 and 250"}),
        );
    }
    let cursor = match &query.page_info {
        Some(page_info) => {
            if query.status.is_some() || query.created_at_min.is_some() {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"errors": "page_info cannot be combined with other filters"}),
                );
            }
            let decoded = engine
                .decode(page_info)
                .ok()
                .and_then(|bytes| serde_json::from_slice::<PageCursor>(&bytes).ok());
            match decoded {
                Some(cursor) => cursor,
                None => {
                    return answer(
                        StatusCode::BAD_REQUEST,
                        json!({"errors": "Invalid page_info"}),
                    );
                }
            }
        }
        None => PageCursor {
            created_at_min: query.created_at_min.clone(),
            offset: 0,
        },
    };
    let since = match cursor.created_at_min.as_deref() {
        None => None,
        Some(since) => match chrono::DateTime::parse_from_rfc3339(since) {
            Ok(since) => Some(since),
            Err(_) => {
                return answer(
                    StatusCode::BAD_REQUEST,
                    json!({"errors": "created_at_min is not a date"}),
                );
            }
        },
    };
    let inner = lock(&state.inner);
    let matching: Vec<&Value> = inner
        .documents
        .values()
        .filter(|doc| {
            let created = doc
                .get("created_at")
                .and_then(Value::as_str)
                .and_then(|c| chrono::DateTime::parse_from_rfc3339(c).ok());
            match (since, created) {
                (None, _) => true,
                (Some(since), Some(created)) => created >= since,
                (Some(_), None) => false,
            }
        })
        .collect();
    let page: Vec<Value> = matching
        .iter()
        .skip(cursor.offset)
        .take(limit)
        .map(|doc| (*doc).clone())
        .collect();
    let host = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1");
    let link = |offset: usize, rel: &str| {
        let cursor = PageCursor {
            created_at_min: cursor.created_at_min.clone(),
            offset,
        };
        let page_info = engine.encode(serde_json::to_vec(&cursor).unwrap_or_default());
        format!(
            "<http://{host}/admin/api/{version}/orders.json?limit={limit}&page_info={page_info}>; rel=\"{rel}\""
        )
    };
    let mut links = Vec::new();
    if cursor.offset > 0 {
        links.push(link(cursor.offset.saturating_sub(limit), "previous"));
    }
    if cursor.offset + limit < matching.len() {
        links.push(link(cursor.offset + limit, "next"));
    }
    let mut response = answer(StatusCode::OK, json!({"orders": page}));
    if let Ok(value) = axum::http::HeaderValue::from_str(&links.join(", "))
        && !links.is_empty()
    {
        response
            .headers_mut()
            .insert(axum::http::header::LINK, value);
    }
    response
}
