//! Sendcloud, simulated: the part of its API v2 forma uses (`POST /parcels`, `GET /parcels`,
//! `GET /parcels?order_number=`, `GET /parcels/{id}`, `POST /parcels/{id}/cancel`, all under
//! `/api/v2` with HTTP Basic auth), the labels its parcels point at, and its signed
//! `parcel_status_changed` webhooks.
//!
//! It records every API request, and can be told to fail (answer 500), to answer cancellations
//! alone with 503, or to be slow, so tests see what forma does when the carrier side misbehaves.
//! Parcels are announced at once: each gets a tracking number, a PostNL carrier and a label,
//! status 1000 "Ready to send".

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{Secret, SendcloudConfig};
use crate::shipping::sendcloud::{SENDCLOUD_SIGNATURE, sign, status};

const API: &str = "/api/v2";
const CARRIER: &str = "postnl";
/// The one shipping method of the simulated integration (`GET /shipping_methods` would list it).
pub const SHIPPING_METHOD_ID: u64 = 8;
const SHIPPING_METHOD_NAME: &str = "PostNL Standard 0-23kg";

/// One content line of a parcel, as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemRecord {
    pub description: String,
    pub quantity: u64,
    pub sku: Option<String>,
    pub value: String,
    pub weight: String,
}

/// A parcel the simulator holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParcelRecord {
    pub id: i64,
    pub order_number: String,
    pub name: String,
    pub company_name: Option<String>,
    pub address: String,
    pub house_number: Option<String>,
    pub address_2: Option<String>,
    pub city: String,
    pub postal_code: String,
    pub country: String,
    pub telephone: Option<String>,
    pub email: Option<String>,
    pub weight: Option<String>,
    pub items: Vec<ItemRecord>,
    pub status_id: i64,
    pub status_message: String,
    pub tracking_number: String,
    pub carrier: String,
    /// The shipping method it was announced with (`shipment.id`).
    pub shipping_method_id: u64,
}

/// One API request the simulator received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The user of the Basic credentials, when any were sent.
    pub public_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    /// `http://127.0.0.1:port`, for the URLs parcels point at.
    origin: String,
    parcels: BTreeMap<i64, ParcelRecord>,
    next_id: i64,
    requests: Vec<Recorded>,
    /// Requests still to answer 500.
    failures: usize,
    failing: bool,
    /// Cancellations answer 503 while the rest of the API works.
    cancellations_unavailable: bool,
    /// Cancellations of announced parcels are queued for the carrier (1999) instead of done.
    cancellations_queued: bool,
    delay: Duration,
    webhook_url: Option<String>,
    /// New parcels are announced later, as Sendcloud does for some carriers: created "being
    /// announced", without a tracking number until [`SendcloudSim::advance`] labels them.
    announce_later: bool,
}

/// A running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SendcloudSim {
    pub addr: SocketAddr,
    pub public_key: String,
    pub secret_key: String,
    /// What the integration signs its webhooks with.
    pub webhook_secret: String,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

#[derive(Clone)]
struct AppState {
    public_key: String,
    secret_key: String,
    inner: Arc<Mutex<Inner>>,
}

impl AppState {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl SendcloudSim {
    /// Starts it on a free loopback port until `stop`, with fresh credentials.
    pub async fn start(stop: CancellationToken) -> std::io::Result<Self> {
        let fresh = || uuid::Uuid::new_v4().simple().to_string();
        Self::start_with(&fresh(), &fresh(), &fresh(), stop).await
    }

    /// Starts it with the given integration keys.
    pub async fn start_with(
        public_key: &str,
        secret_key: &str,
        webhook_secret: &str,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 1000,
            ..Inner::default()
        }));
        let state = AppState {
            public_key: public_key.to_owned(),
            secret_key: secret_key.to_owned(),
            inner: inner.clone(),
        };
        let api = Router::new()
            .route(
                &format!("{API}/parcels"),
                post(create_parcel).get(list_parcels),
            )
            .route(&format!("{API}/parcels/{{id}}"), get(get_parcel))
            .route(&format!("{API}/parcels/{{id}}/cancel"), post(cancel_parcel))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), gate));
        // Served without credentials, unlike Sendcloud's, so a demo user can open them from the UI.
        let public = Router::new()
            .route(&format!("{API}/labels/label_printer/{{id}}"), get(label))
            .route("/tracking/{code}", get(tracking));
        let router = api.merge(public).with_state(state);
        let addr = super::serve_on_loopback(router, stop).await?;
        inner.lock().unwrap_or_else(PoisonError::into_inner).origin = format!("http://{addr}");
        Ok(Self {
            addr,
            public_key: public_key.to_owned(),
            secret_key: secret_key.to_owned(),
            webhook_secret: webhook_secret.to_owned(),
            inner,
            http: crate::infra::tls::http_client()
                .build()
                .map_err(std::io::Error::other)?,
        })
    }

    /// What forma's `sendcloud.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}{API}", self.addr)
    }

    /// Numbers the next parcels from `first`: a simulator started again on a database that
    /// already holds its earlier ids must not give the same ones out (Sendcloud never does).
    pub fn number_from(&self, first: i64) {
        self.lock().next_id = first.saturating_sub(1);
    }

    /// forma's `sendcloud` settings for this simulator.
    pub fn config(&self) -> SendcloudConfig {
        SendcloudConfig {
            public_key: Some(self.public_key.clone()),
            secret_key: Some(Secret::new(self.secret_key.clone())),
            webhook_secret: Some(Secret::new(self.webhook_secret.clone())),
            base_url: Some(self.base_url()),
            timeout_ms: None,
            shipping_method_id: Some(SHIPPING_METHOD_ID),
            apply_shipping_rules: false,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn parcels(&self) -> Vec<ParcelRecord> {
        self.lock().parcels.values().cloned().collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The next `n` API requests answer 500.
    pub fn fail_next(&self, n: usize) {
        self.lock().failures = n;
    }

    /// Every API request answers 500 until told otherwise.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Every cancellation answers 503 Service Unavailable, the other calls as usual, until told
    /// otherwise.
    pub fn set_cancellations_unavailable(&self, unavailable: bool) {
        self.lock().cancellations_unavailable = unavailable;
    }

    /// A cancellation of an announced parcel is queued for the carrier, as Sendcloud does for
    /// some carriers: 202 `queued`, the parcel "Cancellation requested" (1999) until
    /// [`SendcloudSim::advance`] says what the carrier did.
    pub fn set_cancellations_queued(&self, queued: bool) {
        self.lock().cancellations_queued = queued;
    }

    /// Every API answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Whether new parcels are announced later (being announced, no tracking number yet).
    pub fn set_announcing_later(&self, later: bool) {
        self.lock().announce_later = later;
    }

    /// Where [`SendcloudSim::advance`] delivers its webhooks (forma's
    /// `/api/v1/webhooks/sendcloud`); `None` delivers nothing.
    pub fn set_webhook(&self, url: Option<&str>) {
        self.lock().webhook_url = url.map(str::to_owned);
    }

    /// Moves parcel `id` to `status_id` / `message` (as the carrier would) and, when a webhook URL
    /// is set, delivers `parcel_status_changed` there. Returns forma's HTTP status, `None` when
    /// no webhook URL is set; an error for an unknown parcel or a delivery that did not arrive.
    pub async fn advance(
        &self,
        id: i64,
        status_id: i64,
        message: &str,
    ) -> anyhow::Result<Option<u16>> {
        let (body, url) = {
            let mut inner = self.lock();
            let origin = inner.origin.clone();
            let parcel = inner
                .parcels
                .get_mut(&id)
                .ok_or_else(|| anyhow::anyhow!("the simulator has no parcel {id}"))?;
            parcel.status_id = status_id;
            parcel.status_message = message.to_owned();
            if parcel.tracking_number.is_empty() && status::is_labelled(status_id) {
                parcel.tracking_number = format!("3SFORMA{id:08}");
            }
            let body = status_changed_body(&origin, parcel);
            (body, inner.webhook_url.clone())
        };
        match url {
            Some(url) => Ok(Some(self.deliver(&url, &body).await?)),
            None => Ok(None),
        }
    }

    /// The `parcel_status_changed` body Sendcloud would send now for parcel `id`.
    pub fn status_changed(&self, id: i64) -> Option<Vec<u8>> {
        let inner = self.lock();
        let parcel = inner.parcels.get(&id)?;
        Some(status_changed_body(&inner.origin, parcel))
    }

    /// Posts `body` to `url` signed with the webhook secret, as Sendcloud does; returns the status.
    pub async fn deliver(&self, url: &str, body: &[u8]) -> Result<u16, reqwest::Error> {
        let response = self
            .http
            .post(url)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                SENDCLOUD_SIGNATURE,
                sign(self.webhook_secret.as_bytes(), body),
            )
            .body(body.to_vec())
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

fn status_changed_body(origin: &str, parcel: &ParcelRecord) -> Vec<u8> {
    let timestamp = chrono::Utc::now().timestamp_millis();
    json!({
        "action": "parcel_status_changed",
        "timestamp": timestamp,
        "carrier_status_change_timestamp": timestamp,
        "parcel": parcel_json(origin, parcel),
    })
    .to_string()
    .into_bytes()
}

/// A parcel as Sendcloud writes one.
fn parcel_json(origin: &str, p: &ParcelRecord) -> Value {
    let label = format!("{origin}{API}/labels/label_printer/{}", p.id);
    json!({
        "id": p.id,
        "name": p.name,
        "company_name": p.company_name.clone().unwrap_or_default(),
        "address": p.address,
        "address_2": p.address_2.clone().unwrap_or_default(),
        "address_divided": {"street": p.address, "house_number": p.house_number.clone().unwrap_or_default()},
        "city": p.city,
        "postal_code": p.postal_code,
        "telephone": p.telephone.clone().unwrap_or_default(),
        "email": p.email.clone().unwrap_or_default(),
        "country": {"iso_2": p.country, "iso_3": "", "name": p.country},
        "order_number": p.order_number,
        "weight": p.weight.clone().unwrap_or_else(|| "1.000".to_owned()),
        "tracking_number": p.tracking_number,
        "tracking_url": if p.tracking_number.is_empty() {
            String::new()
        } else {
            format!("{origin}/tracking/{}", p.tracking_number)
        },
        "carrier": {"code": p.carrier},
        "shipment": {"id": p.shipping_method_id, "name": SHIPPING_METHOD_NAME},
        "status": {"id": p.status_id, "message": p.status_message},
        "label": {"normal_printer": [format!("{label}?start_from=0")], "label_printer": label},
        "parcel_items": p.items.iter().map(|i| json!({
            "description": i.description, "quantity": i.quantity, "sku": i.sku.clone().unwrap_or_default(),
            "value": i.value, "weight": i.weight,
        })).collect::<Vec<_>>(),
        "data": {},
    })
}

/// Sendcloud's error shape.
fn error(status: StatusCode, request: &str, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "request": request, "message": message}});
    (status, axum::Json(body)).into_response()
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// The user and password of a Basic `Authorization` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

/// Records the request, plays the configured misbehaviour, and checks the credentials.
async fn gate(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    let credentials = basic_credentials(&headers);
    let (delay, fail) = {
        let mut inner = state.lock();
        inner.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            public_key: credentials.as_ref().map(|(user, _)| user.clone()),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
        let fail = inner.failing || inner.failures > 0;
        inner.failures = inner.failures.saturating_sub(1);
        (inner.delay, fail)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let path = parts.uri.path().trim_start_matches('/').to_owned();
    if fail {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &path,
            "Simulated failure",
        );
    }
    let authorized = credentials
        .is_some_and(|(user, password)| user == state.public_key && password == state.secret_key);
    if !authorized {
        return error(
            StatusCode::UNAUTHORIZED,
            &path,
            "Invalid username/password.",
        );
    }
    next.run(Request::from_parts(parts, bytes.into())).await
}

/// A required text field of the parcel, or Sendcloud's complaint about it.
fn required(parcel: &Value, field: &str) -> Result<String, String> {
    match parcel.get(field) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(format!("{field}: This field is required.")),
    }
}

fn optional(parcel: &Value, field: &str) -> Option<String> {
    required(parcel, field).ok()
}

/// Reads a `POST /parcels` body as Sendcloud validates it.
fn parcel_from_request(body: &[u8], id: i64) -> Result<ParcelRecord, String> {
    let document: Value = serde_json::from_slice(body).map_err(|_| "Invalid JSON.".to_owned())?;
    let parcel = document
        .get("parcel")
        .ok_or("parcel: This field is required.")?;
    // A label is made with a shipping method, which the request names.
    let shipping_method_id = match parcel.get("shipment").and_then(|m| m.get("id")) {
        None | Some(Value::Null) if parcel.get("request_label") == Some(&Value::Bool(true)) => {
            return Err("shipment: This field is required when requesting a label.".to_owned());
        }
        None | Some(Value::Null) => SHIPPING_METHOD_ID,
        Some(id) if id.as_u64() == Some(SHIPPING_METHOD_ID) => SHIPPING_METHOD_ID,
        Some(id) => return Err(format!("shipment: Invalid shipping method {id}.")),
    };
    let country = required(parcel, "country")?;
    if country.len() != 2 || !country.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(format!("country: \"{country}\" is not a valid choice."));
    }
    let items = parcel
        .get("parcel_items")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|item| {
            Ok(ItemRecord {
                description: required(item, "description")
                    .map_err(|e| format!("parcel_items: {e}"))?,
                quantity: item
                    .get("quantity")
                    .and_then(Value::as_u64)
                    .filter(|q| *q > 0)
                    .ok_or("parcel_items: quantity must be a positive integer.")?,
                sku: optional(item, "sku"),
                value: required(item, "value").map_err(|e| format!("parcel_items: {e}"))?,
                weight: required(item, "weight").map_err(|e| format!("parcel_items: {e}"))?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(ParcelRecord {
        id,
        order_number: required(parcel, "order_number")?,
        name: required(parcel, "name")?,
        company_name: optional(parcel, "company_name"),
        address: required(parcel, "address")?,
        house_number: optional(parcel, "house_number"),
        address_2: optional(parcel, "address_2"),
        city: required(parcel, "city")?,
        postal_code: required(parcel, "postal_code")?,
        country,
        telephone: optional(parcel, "telephone"),
        email: optional(parcel, "email"),
        weight: optional(parcel, "weight"),
        items,
        status_id: status::READY_TO_SEND,
        status_message: "Ready to send".to_owned(),
        tracking_number: format!("3SFORMA{id:08}"),
        carrier: CARRIER.to_owned(),
        shipping_method_id,
    })
}

async fn create_parcel(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let mut inner = state.lock();
    let id = inner.next_id + 1;
    match parcel_from_request(&body, id) {
        Ok(mut parcel) => {
            inner.next_id = id;
            if inner.announce_later {
                parcel.status_id = status::BEING_ANNOUNCED;
                parcel.status_message = "Being announced".to_owned();
                parcel.tracking_number = String::new();
            }
            let json = parcel_json(&inner.origin, &parcel);
            inner.parcels.insert(id, parcel);
            answer(StatusCode::OK, json!({"parcel": json}))
        }
        Err(message) => error(StatusCode::BAD_REQUEST, "api/v2/parcels", &message),
    }
}

async fn list_parcels(
    State(state): State<AppState>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = state.lock();
    let wanted = query.get("order_number");
    let parcels: Vec<Value> = inner
        .parcels
        .values()
        .filter(|p| wanted.is_none_or(|n| *n == p.order_number))
        .map(|p| parcel_json(&inner.origin, p))
        .collect();
    answer(
        StatusCode::OK,
        json!({"next": null, "previous": null, "parcels": parcels}),
    )
}

async fn get_parcel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let inner = state.lock();
    match id.parse::<i64>().ok().and_then(|id| inner.parcels.get(&id)) {
        Some(parcel) => answer(
            StatusCode::OK,
            json!({"parcel": parcel_json(&inner.origin, parcel)}),
        ),
        None => error(
            StatusCode::NOT_FOUND,
            &format!("api/v2/parcels/{id}"),
            "No Parcel matches the given query.",
        ),
    }
}

/// Cancels a parcel the carrier does not have yet; once it moves, Sendcloud refuses.
async fn cancel_parcel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let mut inner = state.lock();
    if inner.cancellations_unavailable {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("api/v2/parcels/{id}/cancel"),
            "Service temporarily unavailable.",
        );
    }
    let queued = inner.cancellations_queued;
    let Some(parcel) = id
        .parse::<i64>()
        .ok()
        .and_then(|id| inner.parcels.get_mut(&id))
    else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("api/v2/parcels/{id}/cancel"),
            "No Parcel matches the given query.",
        );
    };
    match parcel.status_id {
        status::READY_TO_SEND if queued => {
            parcel.status_id = status::CANCELLATION_REQUESTED;
            parcel.status_message = "Cancellation requested".to_owned();
            answer(
                StatusCode::ACCEPTED,
                json!({"status": "queued", "message": "Parcel cancellation has been queued"}),
            )
        }
        status::READY_TO_SEND | status::CANCELLED => {
            parcel.status_id = status::CANCELLED;
            parcel.status_message = "Cancelled".to_owned();
            answer(
                StatusCode::OK,
                json!({"status": "cancelled", "message": "Parcel has been cancelled"}),
            )
        }
        _ => answer(
            StatusCode::BAD_REQUEST,
            json!({"status": "failed", "message": "Shipped parcels, or parcels being shipped, can no longer be cancelled."}),
        ),
    }
}

/// A label file: enough of a PDF for a viewer to recognise it.
async fn label(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let inner = state.lock();
    let Some(parcel) = id.parse::<i64>().ok().and_then(|id| inner.parcels.get(&id)) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let body = format!(
        "%PDF-1.4\n% Simulated Sendcloud label\n% parcel {} {} {}\n% {}, {} {} {}\n%%EOF\n",
        parcel.id,
        parcel.carrier,
        parcel.tracking_number,
        parcel.name,
        parcel.postal_code,
        parcel.city,
        parcel.country
    );
    ([(header::CONTENT_TYPE, "application/pdf")], body).into_response()
}

/// The page a tracking URL opens.
async fn tracking(State(state): State<AppState>, Path(code): Path<String>) -> Response {
    let inner = state.lock();
    match inner.parcels.values().find(|p| p.tracking_number == code) {
        Some(parcel) => format!(
            "{} parcel {}: {}\n",
            parcel.carrier, parcel.tracking_number, parcel.status_message
        )
        .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
