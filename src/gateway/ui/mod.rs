//! The operator page (SPEC §6.6): `/ui/`, a small static page that signs in and shows the tenant's
//! orders and print jobs changing live over the Socket.IO stream (`/socket.io`, namespace
//! `/events`). Its files are compiled into the binary, so it works with no internet access.
//!
//! `assets/socket.io.min.js` is the browser build of the npm package `socket.io-client` 4.8.4
//! (`dist/socket.io.min.js`, unmodified, MIT: `assets/socket.io.LICENSE`). To update it, install
//! the new version with npm in a scratch directory and copy that file and the LICENSE over.
//!
//! The page holds no data of its own, so it is served without a session: it is mounted beside the
//! gateway's authentication, and every API call it makes is authenticated as usual.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};

use crate::http::ApiError;

/// Scripts and styles only from forma itself (so no inline script runs, whatever gets into the
/// page), API and Socket.IO calls only to forma itself (`'self'` covers same-origin `ws:`/`wss:`),
/// and the page never framed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The files, as (name, content type, body).
const FILES: [(&str, &str, &[u8]); 4] = [
    (
        "index.html",
        "text/html; charset=utf-8",
        include_bytes!("assets/index.html"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_bytes!("assets/style.css"),
    ),
    (
        "socket.io.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("assets/socket.io.min.js"),
    ),
];

struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// A strong validator from the content: browsers revalidate (`no-cache`) and get a 304 until
    /// a new binary serves new files, so an upgrade never leaves a stale script in a cache.
    etag: HeaderValue,
}

static ASSETS: LazyLock<Vec<Asset>> = LazyLock::new(|| {
    FILES
        .iter()
        .map(|&(name, content_type, body)| {
            let digest = hex::encode(Sha256::digest(body));
            Asset {
                name,
                content_type,
                body,
                etag: HeaderValue::try_from(format!("\"{}\"", &digest[..32]))
                    .unwrap_or(HeaderValue::from_static("\"\"")),
            }
        })
        .collect()
});

/// `/ui` (redirected to `/ui/`, which the page's relative links need), `/ui/` and its files.
pub fn router() -> Router {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(index))
        .route("/ui/{file}", get(file))
}

async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

async fn file(Path(name): Path<String>, headers: HeaderMap) -> Response {
    serve(&name, &headers)
}

fn serve(name: &str, request: &HeaderMap) -> Response {
    let Some(asset) = ASSETS.iter().find(|a| a.name == name) else {
        return ApiError::not_found(format!("{name} not found")).into_response();
    };
    let unchanged = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|tags| {
            tags.split(',')
                .any(|t| t.trim().trim_start_matches("W/") == asset.etag)
        });
    let headers = [
        (header::ETAG, asset.etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ),
    ];
    if unchanged {
        return (StatusCode::NOT_MODIFIED, headers).into_response();
    }
    (
        headers,
        [(header::CONTENT_TYPE, asset.content_type)],
        asset.body,
    )
        .into_response()
}

#[cfg(test)]
mod browser_tests;
#[cfg(test)]
mod tests;
