//! SimplyPrint, simulated: the part of its API forma uses (`queue/AddItem`, `queue/GetItems`,
//! `queue/RemoveItem`, `jobs/GetDetails`, all under `/{company_id}/` with `X-API-KEY`), and its
//! webhooks (`job.started`, `job.done`, `job.failed`, `job.cancelled`, with `X-SP-Token`).
//!
//! It records every request, and can be told to fail (answer 500) or to be slow, so tests see what
//! forma does when the print farm misbehaves.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// A queue item, and the job it becomes when printed (one and the same here, by id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub id: u64,
    pub file_id: String,
    /// The tag forma put on it (its own print-job id).
    pub note: String,
    /// `queued`, `printing`, `done`, `failed`, `cancelled`, or `removed`.
    pub status: String,
}

/// One request the simulator received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub api_key: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Inner {
    items: BTreeMap<u64, Item>,
    next_id: u64,
    requests: Vec<Recorded>,
    /// Requests still to answer 500.
    failures: usize,
    failing: bool,
    delay: Duration,
}

/// A running simulator. Cheap to clone.
#[derive(Clone)]
pub struct SimplyPrintSim {
    pub addr: SocketAddr,
    pub company_id: String,
    pub api_key: String,
    inner: Arc<Mutex<Inner>>,
    http: reqwest::Client,
}

#[derive(Clone)]
struct AppState {
    company_id: String,
    api_key: String,
    inner: Arc<Mutex<Inner>>,
}

impl SimplyPrintSim {
    /// Starts it on a free loopback port until `stop`.
    pub async fn start(
        company_id: &str,
        api_key: &str,
        stop: CancellationToken,
    ) -> std::io::Result<Self> {
        let inner = Arc::new(Mutex::new(Inner {
            next_id: 1000,
            ..Inner::default()
        }));
        let state = AppState {
            company_id: company_id.to_owned(),
            api_key: api_key.to_owned(),
            inner: inner.clone(),
        };
        let router = Router::new()
            .route("/{company}/queue/AddItem", post(add_item))
            .route("/{company}/queue/GetItems", get(get_items))
            .route("/{company}/queue/RemoveItem", post(remove_item))
            .route("/{company}/jobs/GetDetails", get(job_details))
            .layer(axum::middleware::from_fn_with_state(state.clone(), gate))
            .with_state(state);
        let addr = super::serve_on_loopback(router, stop).await?;
        Ok(Self {
            addr,
            company_id: company_id.to_owned(),
            api_key: api_key.to_owned(),
            inner,
            http: crate::infra::tls::http_client()
                .build()
                .map_err(std::io::Error::other)?,
        })
    }

    /// What forma's `simplyprint.base_url` should be.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Numbers the next items from `first`: a simulator started again on a database that already
    /// holds its earlier ids must not give the same ones out (the real farm never does).
    pub fn number_from(&self, first: u64) {
        self.lock().next_id = first.saturating_sub(1);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn items(&self) -> Vec<Item> {
        self.lock().items.values().cloned().collect()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The next `n` requests answer 500.
    pub fn fail_next(&self, n: usize) {
        self.lock().failures = n;
    }

    /// Every request answers 500 until told otherwise.
    pub fn set_failing(&self, failing: bool) {
        self.lock().failing = failing;
    }

    /// Every answer waits this long first.
    pub fn set_delay(&self, delay: Duration) {
        self.lock().delay = delay;
    }

    /// Moves item `id` to `status` (as the farm would) without telling anyone.
    pub fn set_status(&self, id: u64, status: &str) -> Option<Item> {
        let mut inner = self.lock();
        let item = inner.items.get_mut(&id)?;
        item.status = status.to_owned();
        Some(item.clone())
    }

    /// Moves item `id` as `event` says (`job.started`, `job.done`, `job.failed`,
    /// `job.cancelled`) and delivers that webhook to `url` with `token`; returns forma's status.
    pub async fn report(
        &self,
        id: u64,
        event: &str,
        url: &str,
        token: &str,
    ) -> Result<u16, reqwest::Error> {
        let status = match event {
            "job.started" => "printing",
            "job.done" => "done",
            "job.failed" => "failed",
            "job.cancelled" => "cancelled",
            other => other,
        };
        let item = self.set_status(id, status);
        let (uid, status) = item
            .map(|i| (i.note, i.status))
            .unwrap_or_else(|| (String::new(), status.to_owned()));
        let body = json!({
            "webhook_id": uuid::Uuid::new_v4().to_string(),
            "event": event,
            "timestamp": chrono::Utc::now().timestamp(),
            "data": {
                "job": {"id": id, "uid": uid, "status": status},
                "printer": {"id": 1, "name": "Simulated printer"},
                "user": {"id": 1},
            }
        });
        self.deliver(url, token, &body).await
    }

    /// Delivers a webhook body as SimplyPrint would.
    pub async fn deliver(
        &self,
        url: &str,
        token: &str,
        body: &Value,
    ) -> Result<u16, reqwest::Error> {
        let response = self
            .http
            .post(url)
            .header("x-sp-token", token)
            .json(body)
            .send()
            .await?;
        Ok(response.status().as_u16())
    }
}

fn answer(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// Records the request, checks the company and key, and plays the configured misbehaviour.
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
    let api_key = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let (delay, fail) = {
        let mut inner = state.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.requests.push(Recorded {
            method: parts.method.to_string(),
            path: parts.uri.to_string(),
            api_key: api_key.clone(),
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
            json!({"status": false, "message": "Simulated failure"}),
        );
    }
    let company = parts.uri.path().split('/').nth(1).unwrap_or_default();
    if api_key.as_deref() != Some(state.api_key.as_str()) || company != state.company_id {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"status": false, "message": "Invalid API key or company"}),
        );
    }
    next.run(axum::extract::Request::from_parts(parts, bytes.into()))
        .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddItem {
    file_id: Option<String>,
    #[serde(default)]
    note: String,
}

async fn add_item(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let Ok(item) = serde_json::from_slice::<AddItem>(&body) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"status": false, "message": "Invalid body"}),
        );
    };
    let Some(file_id) = item.file_id.filter(|f| !f.is_empty()) else {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"status": false, "message": "fileId is required"}),
        );
    };
    let mut inner = state.inner.lock().unwrap_or_else(PoisonError::into_inner);
    inner.next_id += 1;
    let id = inner.next_id;
    inner.items.insert(
        id,
        Item {
            id,
            file_id,
            note: item.note,
            status: "queued".to_owned(),
        },
    );
    answer(
        StatusCode::OK,
        json!({"status": true, "message": null, "created_id": id}),
    )
}

async fn get_items(State(state): State<AppState>) -> Response {
    let inner = state.inner.lock().unwrap_or_else(PoisonError::into_inner);
    let items: Vec<Value> = inner
        .items
        .values()
        .filter(|i| i.status == "queued")
        .map(|i| json!({"id": i.id, "filename": i.file_id, "note": i.note}))
        .collect();
    answer(
        StatusCode::OK,
        json!({"status": true, "queue": {"items": items}}),
    )
}

#[derive(Deserialize)]
struct RemoveItem {
    job: Value,
}

async fn remove_item(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let id = serde_json::from_slice::<RemoveItem>(&body)
        .ok()
        .and_then(|r| match r.job {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.parse().ok(),
            _ => None,
        });
    let mut inner = state.inner.lock().unwrap_or_else(PoisonError::into_inner);
    match id.and_then(|id| inner.items.get_mut(&id)) {
        Some(item) => {
            item.status = "removed".to_owned();
            answer(StatusCode::OK, json!({"status": true}))
        }
        None => answer(
            StatusCode::NOT_FOUND,
            json!({"status": false, "message": "No such queue item"}),
        ),
    }
}

async fn job_details(
    State(state): State<AppState>,
    Path(_company): Path<String>,
    Query(query): Query<BTreeMap<String, String>>,
) -> Response {
    let inner = state.inner.lock().unwrap_or_else(PoisonError::into_inner);
    let item = query
        .get("id")
        .and_then(|id| id.parse::<u64>().ok())
        .and_then(|id| inner.items.get(&id));
    match item {
        Some(item) => answer(
            StatusCode::OK,
            json!({"status": true, "job": {"id": item.id, "uid": item.note, "status": item.status}}),
        ),
        None => answer(
            StatusCode::NOT_FOUND,
            json!({"status": false, "message": "No such job"}),
        ),
    }
}
