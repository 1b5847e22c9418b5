//! Installing the Shopify app (SPEC §6.3): OAuth's authorization code grant, and the shops it
//! connects.
//!
//! - `GET /api/v1/shopify/install?shop=` (integrations.manage) checks the shop's domain
//!   (`{name}.myshopify.com`), records a state nonce for the user's tenant and redirects the
//!   browser to the shop's consent screen. It is a navigation, not a call from script. It also
//!   sets the state in a cookie ([`STATE_COOKIE`]) scoped to the callback, so the install can only
//!   finish in the browser that began it.
//! - `GET /api/v1/shopify/callback` is where Shopify sends the browser back; it carries no
//!   session. Before anything is stored it checks, in this order: Shopify's HMAC of the query, the
//!   shop's domain, that the browser holds the state's cookie, and the state (made for this shop,
//!   under ten minutes old, unused; consumed by the same statement that finds it, so a replay finds
//!   it used). Without the cookie, a link to a shop's consent screen begun by someone else (a
//!   CSRF) would connect the shop of whoever approves it to the sender's tenant, with its orders.
//!   Then it exchanges the code for
//!   the shop's access token and registers the webhooks forma acts on, and only then stores the
//!   shop with its token sealed ([`super::tokens`]): a failure on the way leaves no shop stored. It
//!   answers a small HTML page saying the shop is connected.
//! - `GET /api/v1/shopify/shops` and `DELETE /api/v1/shopify/shops/{id}` (integrations.manage):
//!   the tenant's shops, and disconnecting one (its token deleted; Shopify keeps the app installed
//!   until the merchant removes it, and its webhooks still reach the shop's tenant).
//!
//! Every install needs `shopify.api_key`, `shopify.api_secret`, `shopify.app_url` and
//! `shopify.token_key`; while one is missing both endpoints answer 503 naming it.

use std::time::Duration;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tower_sessions::cookie::{self, Cookie, SameSite};
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::admin::{API_VERSION, ShopifyError};
use super::tokens::{self, Installation, Shop, TokenCipher};
use super::topics;
use crate::config::{Secret, ShopifyConfig, env_var_for};
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::infra::db::{Db, DbError};
use crate::on_pool;
use crate::order::OrderState;
use crate::order::audit::{self, AuditEntry, Origin, actions};

/// What forma asks a shop for: its orders, and fulfilling them (the fulfillment orders of the
/// merchant's own locations, through which fulfillments are made).
pub const SCOPES: &str = "read_orders,read_fulfillments,write_fulfillments,\
                          read_merchant_managed_fulfillment_orders,\
                          write_merchant_managed_fulfillment_orders";
/// Where Shopify sends the browser back, below `shopify.app_url`.
pub const CALLBACK_PATH: &str = "/api/v1/shopify/callback";
/// Where the webhooks are registered, below `shopify.app_url`.
pub const WEBHOOK_PATH: &str = "/api/v1/webhooks/shopify";
/// The topics registered at an install.
pub const WEBHOOK_TOPICS: [&str; 4] = [
    topics::ORDERS_CREATE,
    topics::ORDERS_UPDATED,
    topics::ORDERS_CANCELLED,
    topics::APP_UNINSTALLED,
];
/// How long an install may take from the redirect to the callback.
pub const STATE_TTL: chrono::TimeDelta = chrono::TimeDelta::minutes(10);
/// The cookie holding the state of the install the browser began, sent back to the callback only.
pub const STATE_COOKIE: &str = "forma.shopify-state";
/// States are deleted a day after they were made, used or not.
const STATE_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(1);
/// How long one call to Shopify may take.
const SHOPIFY_TIMEOUT: Duration = Duration::from_secs(20);

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(install))
        .routes(routes!(callback))
        .routes(routes!(list_shops))
        .routes(routes!(disconnect_shop))
}

/// Whether `shop` is a shop's own domain, `{name}.myshopify.com` (the host tokens are sent to).
pub fn is_shop_domain(shop: &str) -> bool {
    let Some(name) = shop.strip_suffix(".myshopify.com") else {
        return false;
    };
    let mut bytes = name.bytes();
    shop.len() <= 255
        && bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn not_a_shop() -> ApiError {
    ApiError::validation(vec![
        "shop must be a shop's domain, like example.myshopify.com".to_owned(),
    ])
}

/// The app's settings an install needs.
struct AppSettings {
    api_key: String,
    api_secret: Secret,
    /// `shopify.app_url`, without a trailing slash.
    app_url: String,
    cipher: TokenCipher,
}

impl AppSettings {
    /// The settings, or a 503 naming every one that is missing.
    fn from_config(shopify: &ShopifyConfig) -> Result<Self, ApiError> {
        let api_key = shopify
            .api_key
            .as_deref()
            .map(str::trim)
            .filter(|k| !k.is_empty());
        let api_secret = shopify
            .api_secret
            .as_ref()
            .filter(|s| !s.expose().is_empty());
        let app_url = shopify
            .app_url
            .as_deref()
            .map(|u| u.trim().trim_end_matches('/'))
            .filter(|u| !u.is_empty());
        let cipher = TokenCipher::from_config(shopify).map_err(ApiError::service_unavailable)?;
        match (api_key, api_secret, app_url, cipher) {
            (Some(api_key), Some(api_secret), Some(app_url), Some(cipher)) => Ok(Self {
                api_key: api_key.to_owned(),
                api_secret: api_secret.clone(),
                app_url: app_url.to_owned(),
                cipher,
            }),
            (api_key, api_secret, app_url, cipher) => {
                let missing: Vec<&str> = [
                    ("shopify.api_key", api_key.is_none()),
                    ("shopify.api_secret", api_secret.is_none()),
                    ("shopify.app_url", app_url.is_none()),
                    ("shopify.token_key", cipher.is_none()),
                ]
                .into_iter()
                .filter_map(|(key, missing)| missing.then_some(key))
                .collect();
                let variables: Vec<String> = missing.iter().map(|k| env_var_for(k)).collect();
                Err(ApiError::service_unavailable(format!(
                    "Installing the Shopify app needs {} (set {})",
                    missing.join(", "),
                    variables.join(", ")
                )))
            }
        }
    }

    fn redirect_uri(&self) -> String {
        format!("{}{CALLBACK_PATH}", self.app_url)
    }
}

/// `{base}/{segments…}` of `shop`: `https://{shop}`, or `shopify.base_url` for every shop when it
/// is set (a local fake).
pub(super) fn shop_url(
    shopify: &ShopifyConfig,
    shop: &str,
    segments: &[&str],
) -> Result<url::Url, ShopifyError> {
    let base = shopify
        .base_url
        .as_deref()
        .map(str::trim)
        .filter(|b| !b.is_empty());
    let mut url = match base {
        Some(base) => url::Url::parse(base)
            .map_err(|e| ShopifyError::Rejected(format!("shopify.base_url: {e}")))?,
        // The shop becomes the host the token is sent to: its own domain and nothing else.
        None if is_shop_domain(shop) => url::Url::parse(&format!("https://{shop}"))
            .map_err(|e| ShopifyError::Rejected(format!("{shop:?}: {e}")))?,
        None => {
            return Err(ShopifyError::Rejected(format!(
                "{shop:?} is not a shop domain"
            )));
        }
    };
    url.path_segments_mut()
        .map_err(|()| ShopifyError::Rejected("the base URL cannot take a path".to_owned()))?
        .pop_if_empty()
        .extend(segments);
    Ok(url)
}

/// A client for calls to Shopify: bounded in time, and never following a redirect (which would
/// carry the access token to wherever it points).
pub(super) fn http_client() -> Result<reqwest::Client, ShopifyError> {
    crate::infra::tls::http_client()
        .connect_timeout(Duration::from_secs(5))
        .timeout(SHOPIFY_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ShopifyError::Unavailable(e.to_string()))
}

/// Sends `request`; Shopify's answer read as `T`, or what went wrong as [`ShopifyError`].
pub(super) async fn call<T: DeserializeOwned>(
    request: reqwest::RequestBuilder,
) -> Result<(T, reqwest::header::HeaderMap), ShopifyError> {
    let response = request
        .header("Accept", "application/json")
        .send()
        .await
        .map_err(|e| ShopifyError::Unavailable(e.without_url().to_string()))?;
    let status = response.status();
    if status == reqwest::StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
        return Err(ShopifyError::Unavailable(format!("answered {status}")));
    }
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(|e| {
        ShopifyError::Unavailable(format!("answer cut short ({status}): {}", e.without_url()))
    })?;
    if !status.is_success() {
        let errors = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v.get("errors").cloned())
            .map(|e| match e {
                Value::String(s) => s,
                other => other.to_string(),
            })
            .unwrap_or_else(|| status.to_string());
        return Err(ShopifyError::Rejected(errors));
    }
    let answer = serde_json::from_slice(&body)
        .map_err(|e| ShopifyError::Unavailable(format!("unreadable answer ({status}): {e}")))?;
    Ok((answer, headers))
}

/// The messages Shopify may have signed for a callback's `pairs`: every parameter but `hmac` (and
/// the legacy `signature`), sorted, as `key=value` joined by `&`. Shopify's documentation and its
/// libraries differ on escaping the values (as they are, or form-encoded); both are accepted, as
/// either is made with the app's secret alone.
fn signed_messages(pairs: &[(String, String)]) -> [String; 2] {
    let mut signed: Vec<(&str, &str)> = pairs
        .iter()
        .filter(|(k, _)| k != "hmac" && k != "signature")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    signed.sort_unstable();
    let escape = |text: &str, key: bool| {
        let text = text.replace('%', "%25").replace('&', "%26");
        if key { text.replace('=', "%3D") } else { text }
    };
    let plain = signed
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k, true), escape(v, false)))
        .collect::<Vec<_>>()
        .join("&");
    let encoded = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(signed.iter())
        .finish();
    [plain, encoded]
}

fn mac(secret: &[u8]) -> Option<Hmac<Sha256>> {
    <Hmac<Sha256> as KeyInit>::new_from_slice(secret).ok()
}

/// Whether the callback's `hmac` (hex HMAC-SHA256 with the app's secret) signs its other
/// parameters. Compared in constant time by the MAC itself.
pub fn query_is_signed(secret: &[u8], pairs: &[(String, String)]) -> bool {
    let presented = pairs
        .iter()
        .find(|(k, _)| k == "hmac")
        .and_then(|(_, v)| hex::decode(v.trim()).ok());
    let Some(presented) = presented else {
        return false;
    };
    signed_messages(pairs).iter().any(|message| {
        mac(secret).is_some_and(|mut mac| {
            mac.update(message.as_bytes());
            mac.verify_slice(&presented).is_ok()
        })
    })
}

/// The hex HMAC Shopify adds to a redirect with `pairs`: for the simulator and tests.
pub fn sign_query(secret: &[u8], pairs: &[(String, String)]) -> String {
    let [message, _] = signed_messages(pairs);
    match mac(secret) {
        Some(mut mac) => {
            mac.update(message.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        None => String::new(),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InstallQuery {
    /// The shop's own domain.
    #[param(example = "example.myshopify.com")]
    pub shop: Option<String>,
}

/// Install the Shopify app in a shop: redirects the browser to the shop's consent screen, which
/// sends it back to the callback. The redirect URI is `shopify.app_url` + `/api/v1/shopify/callback`.
#[utoipa::path(get, path = "/api/v1/shopify/install", tag = "shopify",
    params(InstallQuery),
    responses(
        (status = 302, description = "To the shop's consent screen",
            headers(("Location" = String, description = "https://{shop}/admin/oauth/authorize?client_id=…&scope=…&redirect_uri=…&state=…"))),
        (status = 400, description = "No shop, or not a *.myshopify.com domain", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing integrations.manage", body = ErrorBody),
        (status = 503, description = "The app is not configured; the message names the setting", body = ErrorBody)))]
async fn install(
    State(state): State<OrderState>,
    ctx: UserContext,
    query: Result<Query<InstallQuery>, ApiError>,
) -> Result<Response, ApiError> {
    ctx.require(Permission::IntegrationsManage)?;
    let Query(query) = query?;
    let shopify = &state.shopify;
    let app = AppSettings::from_config(shopify)?;
    let shop = query
        .shop
        .map(|s| s.trim().to_owned())
        .filter(|s| is_shop_domain(s))
        .ok_or_else(not_a_shop)?;
    let nonce = new_nonce();
    record_state(&state.core.db, &nonce, &shop, &ctx).await?;
    let mut authorize = shop_url(shopify, &shop, &["admin", "oauth", "authorize"])
        .map_err(|e| ApiError::internal(format!("the authorize URL of {shop}: {e}")))?;
    authorize
        .query_pairs_mut()
        .append_pair("client_id", &app.api_key)
        .append_pair("scope", SCOPES)
        .append_pair("redirect_uri", &app.redirect_uri())
        .append_pair("state", &nonce);
    let location = HeaderValue::from_str(authorize.as_str())
        .map_err(|e| ApiError::internal(format!("the authorize URL of {shop}: {e}")))?;
    Ok((
        StatusCode::FOUND,
        [
            (header::LOCATION, location),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::SET_COOKIE, state_cookie(&app, &nonce, STATE_TTL)?),
        ],
    )
        .into_response())
}

/// The `Set-Cookie` of [`STATE_COOKIE`] holding `nonce` for `max_age` (zero: removed). Only the
/// callback reads it; `SameSite=Lax` lets Shopify's redirect, a top-level navigation, carry it;
/// `Secure` when the app is reached over HTTPS, as Shopify requires of a real app.
fn state_cookie(
    app: &AppSettings,
    nonce: &str,
    max_age: chrono::TimeDelta,
) -> Result<HeaderValue, ApiError> {
    let cookie = Cookie::build((STATE_COOKIE, nonce))
        .path(CALLBACK_PATH)
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(app.app_url.starts_with("https://"))
        .max_age(cookie::time::Duration::seconds(max_age.num_seconds()))
        .build();
    HeaderValue::from_str(&cookie.to_string())
        .map_err(|e| ApiError::internal(format!("the install's state cookie: {e}")))
}

/// Whether the request's cookies hold [`STATE_COOKIE`] with `nonce`: the callback comes to the
/// browser that began the install.
fn browser_began(headers: &HeaderMap, nonce: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .into_iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(Cookie::split_parse)
        .filter_map(Result::ok)
        .filter(|cookie| cookie.name() == STATE_COOKIE)
        .any(|cookie| bool::from(cookie.value().as_bytes().ct_eq(nonce.as_bytes())))
}

/// 32 random bytes, hex: the install's state.
fn new_nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

async fn record_state(db: &Db, nonce: &str, shop: &str, ctx: &UserContext) -> Result<(), DbError> {
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM shopify_oauth_states WHERE created_at < $1")
            .bind(now - STATE_RETENTION)
            .execute(pool)
            .await
            .map(drop)
    })?;
    on_pool!(db, pool => {
        sqlx::query(
            "INSERT INTO shopify_oauth_states (nonce, tenant_id, shop, user_id, user_email, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(nonce)
        .bind(ctx.tenant_id)
        .bind(shop)
        .bind(ctx.user_id)
        .bind(&ctx.email)
        .bind(now)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Who began an install, as its state recorded.
struct Installer {
    tenant_id: Uuid,
    user_id: Option<Uuid>,
    user_email: Option<String>,
}

/// Consumes the state `nonce` of `shop` if it is unused and under [`STATE_TTL`] old: one
/// statement, so of two callbacks with one state only one finds it.
async fn consume_state(db: &Db, nonce: &str, shop: &str) -> Result<Option<Installer>, DbError> {
    let now = Utc::now();
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, (Uuid, Option<Uuid>, Option<String>)>(
            "UPDATE shopify_oauth_states SET used_at = $3 \
             WHERE nonce = $1 AND shop = $2 AND used_at IS NULL AND created_at > $4 \
             RETURNING tenant_id, user_id, user_email",
        )
        .bind(nonce)
        .bind(shop)
        .bind(now)
        .bind(now - STATE_TTL)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row.map(|(tenant_id, user_id, user_email)| Installer {
        tenant_id,
        user_id,
        user_email,
    }))
}

#[derive(Deserialize)]
struct AccessToken {
    access_token: String,
    #[serde(default)]
    scope: String,
}

/// The shop's access token for `code`, and the scopes granted.
async fn exchange_code(
    http: &reqwest::Client,
    shopify: &ShopifyConfig,
    app: &AppSettings,
    shop: &str,
    code: &str,
) -> Result<AccessToken, ShopifyError> {
    let url = shop_url(shopify, shop, &["admin", "oauth", "access_token"])?;
    let body = json!({
        "client_id": app.api_key,
        "client_secret": app.api_secret.expose(),
        "code": code,
    });
    let (token, _) = call::<AccessToken>(http.post(url).json(&body)).await?;
    if token.access_token.is_empty() {
        return Err(ShopifyError::Rejected(
            "Shopify answered no access token".to_owned(),
        ));
    }
    Ok(token)
}

/// Registers [`WEBHOOK_TOPICS`] at `address`; a topic registered there before (a reinstall)
/// counts as registered.
async fn register_webhooks(
    http: &reqwest::Client,
    shopify: &ShopifyConfig,
    shop: &str,
    token: &Secret,
    address: &str,
) -> Result<(), ShopifyError> {
    for topic in WEBHOOK_TOPICS {
        let url = shop_url(
            shopify,
            shop,
            &["admin", "api", API_VERSION, "webhooks.json"],
        )?;
        let body = json!({"webhook": {"topic": topic, "address": address, "format": "json"}});
        let request = http
            .post(url)
            .header("X-Shopify-Access-Token", token.expose())
            .json(&body);
        match call::<Value>(request).await {
            Ok(_) => {}
            Err(ShopifyError::Rejected(e)) if e.contains("already been taken") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn shopify_failed(what: &str, error: &ShopifyError) -> ApiError {
    tracing::warn!(%error, "{what}");
    ApiError::new(StatusCode::BAD_GATEWAY, format!("{what}: {error}"))
}

/// Where Shopify sends the browser back after the merchant approved the install.
#[utoipa::path(get, path = "/api/v1/shopify/callback", tag = "shopify",
    params(
        ("code" = String, Query, description = "The authorization code"),
        ("hmac" = String, Query, description = "Hex HMAC-SHA256 of the other parameters with the app's secret"),
        ("shop" = String, Query, description = "The shop's domain"),
        ("state" = String, Query, description = "The nonce of the install"),
        ("timestamp" = String, Query, description = "When Shopify made the redirect")),
    responses(
        (status = 200, description = "The shop is connected (a small HTML page)", content_type = "text/html"),
        (status = 400, description = "A parameter is missing, or the shop is not a *.myshopify.com domain", body = ErrorBody),
        (status = 401, description = "Missing or wrong HMAC", body = ErrorBody),
        (status = 403, description = "Unknown, expired, used or another shop's state, or a browser that did not begin the install", body = ErrorBody),
        (status = 409, description = "The shop is connected to another tenant", body = ErrorBody),
        (status = 502, description = "Shopify refused the code or the webhooks", body = ErrorBody),
        (status = 503, description = "The app is not configured; the message names the setting", body = ErrorBody)))]
async fn callback(
    State(state): State<OrderState>,
    origin: Origin,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let shopify = &state.shopify;
    let app = AppSettings::from_config(shopify)?;
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    if !query_is_signed(app.api_secret.expose().as_bytes(), &pairs) {
        return Err(ApiError::unauthorized("Invalid Shopify signature"));
    }
    let param = |name: &str| -> Result<&str, ApiError> {
        let mut values = pairs.iter().filter(|(k, _)| k == name).map(|(_, v)| v);
        match (values.next(), values.next()) {
            (Some(value), None) if !value.is_empty() => Ok(value.as_str()),
            _ => Err(ApiError::validation(vec![format!(
                "{name} must be given once"
            )])),
        }
    };
    let shop = param("shop")?;
    if !is_shop_domain(shop) {
        return Err(not_a_shop());
    }
    let (code, nonce) = (param("code")?, param("state")?);
    if !browser_began(&headers, nonce) {
        return Err(ApiError::forbidden(
            "This install was not begun in this browser; begin it again from forma",
        ));
    }
    let db = &state.core.db;
    let installer = consume_state(db, nonce, shop).await?.ok_or_else(|| {
        ApiError::forbidden("Unknown, expired or already used install state; install again")
    })?;
    let http = http_client().map_err(ApiError::internal)?;
    let granted = exchange_code(&http, shopify, &app, shop, code)
        .await
        .map_err(|e| shopify_failed("Shopify did not grant an access token", &e))?;
    let token = Secret::new(granted.access_token);
    let address = format!("{}{WEBHOOK_PATH}", app.app_url);
    register_webhooks(&http, shopify, shop, &token, &address)
        .await
        .map_err(|e| shopify_failed("Registering the webhooks at Shopify failed", &e))?;
    let sealed = app.cipher.seal(shop, &token).map_err(ApiError::internal)?;
    let installation = Installation {
        tenant_id: installer.tenant_id,
        domain: shop,
        sealed_token: &sealed,
        scopes: &granted.scope,
    };
    let id = tokens::connect(db, &installation)
        .await?
        .ok_or_else(|| ApiError::conflict(format!("{shop} is connected to another tenant")))?;
    let mut entry = AuditEntry::new(installer.tenant_id, actions::SHOP_CONNECTED);
    entry.actor_id = installer.user_id;
    entry.actor_email = installer.user_email;
    entry.target_type = Some("shopify-shop".to_owned());
    entry.target_id = Some(id.to_string());
    entry.ip = origin.ip;
    entry.user_agent = origin.user_agent;
    entry.details = json!({"shop": shop, "scopes": granted.scope, "webhooks": WEBHOOK_TOPICS});
    record_audit(db, &entry).await;
    tracing::info!(shop, tenant = %installer.tenant_id, "a Shopify shop was connected");
    let mut page = connected_page(shop);
    page.headers_mut().insert(
        header::SET_COOKIE,
        state_cookie(&app, "", chrono::TimeDelta::zero())?,
    );
    Ok(page)
}

async fn record_audit(db: &Db, entry: &AuditEntry) {
    if let Err(e) = audit::record(db, entry).await {
        tracing::error!(error = %e, action = entry.action, "could not write an audit log entry");
    }
}

/// The page the merchant's browser lands on. `shop` is a checked domain: nothing to escape.
fn connected_page(shop: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Shopify connected · forma</title></head>\n<body><h1>{shop} is connected to forma</h1>\n\
         <p>Its orders now reach forma. You can close this page.</p></body></html>\n"
    );
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        page,
    )
        .into_response()
}

/// The tenant's Shopify shops, by domain. Tokens are never shown.
#[utoipa::path(get, path = "/api/v1/shopify/shops", tag = "shopify",
    params(PageQuery),
    responses(
        (status = 200, description = "One page of shops", body = Page<Shop>),
        (status = 400, description = "A parameter is invalid", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing integrations.manage", body = ErrorBody)))]
async fn list_shops(
    State(state): State<OrderState>,
    ctx: UserContext,
    page: Result<Query<PageQuery>, ApiError>,
) -> Result<Json<Page<Shop>>, ApiError> {
    ctx.require(Permission::IntegrationsManage)?;
    let Query(page) = page?;
    let page = page.validate().map_err(ApiError::validation)?;
    let (items, total) = tokens::list(&state.core.db, ctx.tenant_id, page).await?;
    Ok(Json(Page::new(items, total, page)))
}

/// Disconnect a shop: its access token is deleted and `uninstalledAt` set. Install again to
/// reconnect it.
#[utoipa::path(delete, path = "/api/v1/shopify/shops/{id}", tag = "shopify",
    params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Disconnected"),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing integrations.manage", body = ErrorBody),
        (status = 404, description = "No such shop in this tenant", body = ErrorBody)))]
async fn disconnect_shop(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    id: Result<Path<Uuid>, ApiError>,
) -> Result<StatusCode, ApiError> {
    ctx.require(Permission::IntegrationsManage)?;
    let Path(id) = id?;
    let db = &state.core.db;
    let domain = tokens::disconnect(db, ctx.tenant_id, id)
        .await?
        .ok_or_else(|| ApiError::not_found("Shop not found"))?;
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        actions::SHOP_DISCONNECTED,
        "shopify-shop",
        id,
        json!({"shop": domain}),
    );
    record_audit(db, &entry).await;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
pub(crate) mod tests;
