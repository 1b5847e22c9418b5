//! Importing a shop's past orders (SPEC §6.3): `POST /api/v1/shopify/backfill {since}` starts a
//! run in the background and answers 202 with it; `GET /api/v1/shopify/backfill/{id}` shows its
//! progress (pages read, orders imported and skipped) and its end (DONE or FAILED).
//!
//! - The run pages through the Admin API's `orders.json?status=any&created_at_min={since}&limit=50`
//!   and follows Shopify's `Link: <…page_info=…>; rel="next"` header. Only the link's `page_info`
//!   is taken: the next URL is built on the shop's own address, so a link never sends the token
//!   elsewhere.
//! - Each order goes through the ingestion of `orders/create` ([`ingest::create`]): an order forma
//!   has already (from a webhook, an earlier run, or a run at the same time) is left as it is, so
//!   runs can repeat and overlap live webhooks without making a duplicate.
//! - Orders Shopify says are cancelled or fulfilled are skipped, not imported: they need no
//!   printing. So are documents that are not orders forma can read (logged).
//! - A page Shopify cannot answer (rate limited, 5xx, unreachable) is asked again up to four
//!   times, 1 s doubling to 8 s apart; after that, or on a refusal, the run is FAILED with the
//!   error and keeps what it imported. A run cut short by a shutdown is FAILED too: run it again.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::admin::{API_VERSION, ShopifyError};
use super::payload::ShopifyOrder;
use super::tokens::{self, ShopCredentials, TokenCipher, TokenError};
use super::{Delivery, oauth, topics};
use crate::config::{Secret, ShopifyConfig};
use crate::http::extract::{Json, Path};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::infra::db::{Db, DbError};
use crate::on_pool;
use crate::order::audit::{self, AuditEntry, Origin, actions};
use crate::order::orders::ingest::{self, Outcome};
use crate::order::{OrderCore, OrderState};

/// Orders per page: Shopify's default, well under its maximum of 250.
pub const PAGE_SIZE: u32 = 50;
/// Attempts at one page before the run fails.
const ATTEMPTS: u32 = 5;
/// The first wait between two attempts at a page; it doubles.
const FIRST_RETRY_WAIT: Duration = Duration::from_secs(1);

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(start_backfill))
        .routes(routes!(get_backfill))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum BackfillStatus {
    Running,
    Done,
    Failed,
}

impl BackfillStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            BackfillStatus::Running => "RUNNING",
            BackfillStatus::Done => "DONE",
            BackfillStatus::Failed => "FAILED",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "RUNNING" => BackfillStatus::Running,
            "DONE" => BackfillStatus::Done,
            _ => BackfillStatus::Failed,
        }
    }
}

/// A backfill run and its progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillRun {
    pub id: Uuid,
    pub shop: String,
    /// Orders created at or after this moment are imported.
    pub since: DateTime<Utc>,
    pub status: BackfillStatus,
    /// Pages of orders read so far.
    pub pages: i64,
    /// Orders forma did not have, created by this run.
    pub imported: i64,
    /// Orders not imported: cancelled or fulfilled in Shopify, or unreadable.
    pub skipped: i64,
    /// Why the run failed.
    pub error: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackfillRequest {
    /// Import the orders created at or after this moment (RFC 3339).
    #[schema(example = "2026-01-01T00:00:00Z")]
    pub since: String,
    /// The shop to import from; by default the tenant's shop installed last.
    #[schema(example = "example.myshopify.com")]
    pub shop: Option<String>,
}

const COLUMNS: &str =
    "id, shop, since, status, pages, imported, skipped, error, started_at, finished_at";

type RunRow = (
    Uuid,
    String,
    DateTime<Utc>,
    String,
    i64,
    i64,
    i64,
    Option<String>,
    DateTime<Utc>,
    Option<DateTime<Utc>>,
);

fn run_of(row: RunRow) -> BackfillRun {
    let (id, shop, since, status, pages, imported, skipped, error, started_at, finished_at) = row;
    BackfillRun {
        id,
        shop,
        since,
        status: BackfillStatus::parse(&status),
        pages,
        imported,
        skipped,
        error,
        started_at,
        finished_at,
    }
}

async fn insert_run(
    db: &Db,
    tenant_id: Uuid,
    shop: &str,
    since: DateTime<Utc>,
) -> Result<BackfillRun, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO shopify_backfills (id, tenant_id, shop, since, status, started_at) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING {COLUMNS}"
    ));
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, RunRow>(sql)
            .bind(Uuid::now_v7())
            .bind(tenant_id)
            .bind(shop)
            .bind(since)
            .bind(BackfillStatus::Running.as_str())
            .bind(Utc::now())
            .fetch_one(pool)
            .await
    })?;
    Ok(run_of(row))
}

/// The tenant's run `id`.
pub async fn find_run(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<Option<BackfillRun>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM shopify_backfills WHERE id = $1 AND tenant_id = $2"
    ));
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, RunRow>(sql)
            .bind(id)
            .bind(tenant_id)
            .fetch_optional(pool)
            .await
    })?;
    Ok(row.map(run_of))
}

/// What one page did.
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    imported: i64,
    skipped: i64,
}

async fn record_page(db: &Db, id: Uuid, tally: Tally) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE shopify_backfills SET pages = pages + 1, imported = imported + $2, \
                 skipped = skipped + $3 WHERE id = $1",
        )
        .bind(id)
        .bind(tally.imported)
        .bind(tally.skipped)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

async fn finish(db: &Db, id: Uuid, outcome: Result<(), String>) {
    let (status, error) = match &outcome {
        Ok(()) => (BackfillStatus::Done, None),
        Err(e) => (BackfillStatus::Failed, Some(e.as_str())),
    };
    let finished = on_pool!(db, pool => {
        sqlx::query(
            "UPDATE shopify_backfills SET status = $2, error = $3, finished_at = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(error)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(drop)
    });
    match (finished, error) {
        (Err(e), _) => {
            tracing::error!(run = %id, error = %e, "could not record the end of a Shopify backfill")
        }
        (Ok(()), Some(error)) => tracing::warn!(run = %id, error, "a Shopify backfill failed"),
        (Ok(()), None) => tracing::info!(run = %id, "a Shopify backfill is done"),
    }
}

/// What a run works with.
struct Job {
    core: OrderCore,
    shopify: Arc<ShopifyConfig>,
    run_id: Uuid,
    tenant_id: Uuid,
    shop: ShopCredentials,
    since: DateTime<Utc>,
}

impl Job {
    /// Reads every page and imports its orders.
    async fn run(&self) -> Result<(), String> {
        let http = oauth::http_client().map_err(|e| e.to_string())?;
        let mut page_info: Option<String> = None;
        loop {
            let url = self
                .orders_url(page_info.as_deref())
                .map_err(|e| e.to_string())?;
            let (orders, next) = fetch_page(&http, url, &self.shop.token)
                .await
                .map_err(|e| e.to_string())?;
            let mut tally = Tally::default();
            for document in orders {
                match self.import(document).await.map_err(|e| e.to_string())? {
                    Imported::Created => tally.imported += 1,
                    Imported::Existing => {}
                    Imported::Skipped => tally.skipped += 1,
                }
            }
            record_page(&self.core.db, self.run_id, tally)
                .await
                .map_err(|e| e.to_string())?;
            match next {
                // The same page again would never end.
                Some(next) if page_info.as_deref() == Some(next.as_str()) => {
                    return Err("Shopify named the same page as the next one".to_owned());
                }
                Some(next) => page_info = Some(next),
                None => return Ok(()),
            }
        }
    }

    /// The first page asks for the orders since the run's moment; the next ones name only the
    /// page (Shopify refuses other filters beside `page_info`).
    fn orders_url(&self, page_info: Option<&str>) -> Result<url::Url, ShopifyError> {
        let segments = ["admin", "api", API_VERSION, "orders.json"];
        let mut url = oauth::shop_url(&self.shopify, &self.shop.domain, &segments)?;
        {
            let mut query = url.query_pairs_mut();
            query.append_pair("limit", &PAGE_SIZE.to_string());
            match page_info {
                Some(page_info) => {
                    query.append_pair("page_info", page_info);
                }
                None => {
                    let since = self.since.to_rfc3339_opts(SecondsFormat::Secs, true);
                    query
                        .append_pair("status", "any")
                        .append_pair("created_at_min", &since);
                }
            }
        }
        Ok(url)
    }

    /// One order of a page, through the ingestion of `orders/create`.
    async fn import(&self, document: Value) -> Result<Imported, DbError> {
        let id = document.get("id").cloned().unwrap_or(Value::Null);
        let order = match serde_json::from_value::<ShopifyOrder>(document) {
            Ok(order) => order,
            Err(e) => {
                tracing::warn!(run = %self.run_id, order = %id, error = %e, "a backfilled document is not an order");
                return Ok(Imported::Skipped);
            }
        };
        if order.is_closed() {
            return Ok(Imported::Skipped);
        }
        let new = match order.to_new_order(self.tenant_id, &self.shop.domain) {
            Ok(new) => new,
            Err(problems) => {
                tracing::warn!(run = %self.run_id, order = %id, problems = problems.join("; "), "a backfilled order cannot be imported");
                return Ok(Imported::Skipped);
            }
        };
        // No delivery ids: nothing marks the order as seen but the order itself, which a webhook
        // of the same order finds, and this finds when a webhook made it.
        let delivery = Delivery {
            tenant_id: self.tenant_id,
            topic: topics::ORDERS_CREATE.to_owned(),
            webhook_id: None,
            event_id: None,
        };
        Ok(match ingest::create(&self.core, &delivery, &new).await? {
            Outcome::Created => Imported::Created,
            Outcome::Ignored => Imported::Skipped,
            _ => Imported::Existing,
        })
    }
}

enum Imported {
    Created,
    Existing,
    Skipped,
}

#[derive(Deserialize)]
struct OrdersPage {
    orders: Vec<Value>,
}

/// One page of orders and the `page_info` of the next, asking again while Shopify is unavailable.
async fn fetch_page(
    http: &reqwest::Client,
    url: url::Url,
    token: &Secret,
) -> Result<(Vec<Value>, Option<String>), ShopifyError> {
    let mut wait = FIRST_RETRY_WAIT;
    let mut attempt = 1;
    loop {
        let request = http
            .get(url.clone())
            .header("X-Shopify-Access-Token", token.expose());
        match oauth::call::<OrdersPage>(request).await {
            Ok((page, headers)) => return Ok((page.orders, next_page_info(&headers))),
            Err(ShopifyError::Unavailable(e)) if attempt < ATTEMPTS => {
                tracing::info!(
                    error = e,
                    attempt,
                    "Shopify did not answer a page of orders; asking again"
                );
                tokio::time::sleep(wait).await;
                wait *= 2;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The `page_info` of the `rel="next"` link of Shopify's `Link` header.
pub fn next_page_info(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all(reqwest::header::LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|link| {
            let (target, params) = link.split_once(';')?;
            let next = params
                .split(';')
                .map(str::trim)
                .any(|p| p == "rel=\"next\"" || p == "rel=next");
            if !next {
                return None;
            }
            let target = target.trim().strip_prefix('<')?.strip_suffix('>')?;
            let url = url::Url::parse(target).ok()?;
            url.query_pairs()
                .find(|(k, _)| k == "page_info")
                .map(|(_, v)| v.into_owned())
                .filter(|v| !v.is_empty())
        })
}

fn token_error(error: TokenError) -> ApiError {
    match error {
        TokenError::Db(e) => e.into(),
        other => ApiError::internal(other),
    }
}

/// The shop to import from: the tenant's installed shop (`shop` when given), else the configured
/// one when it is the tenant's.
async fn shop_of(
    state: &OrderState,
    tenant_id: Uuid,
    shop: Option<&str>,
) -> Result<ShopCredentials, ApiError> {
    let shopify = &state.shopify;
    let cipher = TokenCipher::from_config(shopify).map_err(ApiError::service_unavailable)?;
    let found = tokens::credentials_of(&state.core.db, shopify, cipher.as_ref(), tenant_id, shop)
        .await
        .map_err(token_error)?;
    if let Some(credentials) = found {
        return Ok(credentials);
    }
    Err(ApiError::conflict(match shop {
        Some(shop) => format!("{shop} is not a connected Shopify shop of this tenant"),
        None => "No Shopify shop is connected to this tenant; install the app first".to_owned(),
    }))
}

/// Import the orders created in Shopify since a moment. The run goes on in the background; follow
/// it at `GET /api/v1/shopify/backfill/{id}`. Orders forma has already are left as they are.
#[utoipa::path(post, path = "/api/v1/shopify/backfill", tag = "shopify",
    request_body = BackfillRequest,
    responses(
        (status = 202, description = "The run, started", body = BackfillRun),
        (status = 400, description = "since is not an RFC 3339 timestamp", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing integrations.manage", body = ErrorBody),
        (status = 409, description = "No connected shop to import from", body = ErrorBody)))]
async fn start_backfill(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    body: Result<Json<BackfillRequest>, ApiError>,
) -> Result<(StatusCode, Json<BackfillRun>), ApiError> {
    ctx.require(Permission::IntegrationsManage)?;
    let Json(body) = body?;
    let since = DateTime::parse_from_rfc3339(body.since.trim())
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::validation(vec![
                "since must be an RFC 3339 timestamp, like 2026-01-01T00:00:00Z".to_owned(),
            ])
        })?;
    let shop = shop_of(&state, ctx.tenant_id, body.shop.as_deref()).await?;
    let db = &state.core.db;
    let run = insert_run(db, ctx.tenant_id, &shop.domain, since).await?;
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        actions::BACKFILL_STARTED,
        "shopify-backfill",
        run.id,
        json!({"shop": run.shop, "since": run.since}),
    );
    if let Err(e) = audit::record(db, &entry).await {
        tracing::error!(error = %e, action = entry.action, "could not write an audit log entry");
    }
    let job = Job {
        core: state.core.clone(),
        shopify: state.shopify.clone(),
        run_id: run.id,
        tenant_id: ctx.tenant_id,
        shop,
        since,
    };
    state
        .workers
        .spawn("shopify-backfill", move |stop| async move {
            let outcome = tokio::select! {
                outcome = job.run() => outcome,
                () = stop.cancelled() => Err("stopped by a shutdown; run the backfill again".to_owned()),
            };
            finish(&job.core.db, job.run_id, outcome).await;
        });
    Ok((StatusCode::ACCEPTED, Json(run)))
}

/// A backfill run and its progress.
#[utoipa::path(get, path = "/api/v1/shopify/backfill/{id}", tag = "shopify",
    params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The run", body = BackfillRun),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing integrations.manage", body = ErrorBody),
        (status = 404, description = "No such run in this tenant", body = ErrorBody)))]
async fn get_backfill(
    State(state): State<OrderState>,
    ctx: UserContext,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<Json<BackfillRun>, ApiError> {
    ctx.require(Permission::IntegrationsManage)?;
    let Path(id) = id?;
    find_run(&state.core.db, ctx.tenant_id, id)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found("Backfill not found"))
}

#[cfg(test)]
#[path = "backfill_tests.rs"]
mod tests;
