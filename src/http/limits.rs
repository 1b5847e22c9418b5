//! Request body limits (SPEC §4): 1 MiB by default, 5 MiB for webhooks. Enforced on the body stream
//! itself, so a proxied body is limited without being buffered, and a lying `Content-Length` does
//! not get past it.

use axum::body::{Body, HttpBody};
use axum::extract::{DefaultBodyLimit, Request};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::Limited;

use super::ApiError;
use crate::config::ServerConfig;

/// Path prefix of the webhook endpoints, which get the larger limit.
pub const WEBHOOKS_PREFIX: &str = "/api/v1/webhooks/";

#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub default: usize,
    pub webhooks: usize,
}

impl BodyLimits {
    pub fn from_config(server: &ServerConfig) -> Self {
        Self {
            default: server.body_limit_bytes,
            webhooks: server.webhook_body_limit_bytes,
        }
    }

    pub fn for_path(&self, path: &str) -> usize {
        if path.starts_with(WEBHOOKS_PREFIX) || path == WEBHOOKS_PREFIX.trim_end_matches('/') {
            self.webhooks
        } else {
            self.default
        }
    }
}

/// Puts the path's limit on the request's body stream; a declared length over it is a 413 at once.
/// The limit replaces axum's own default limit of its body extractors (`DefaultBodyLimit`), which
/// would cut a webhook short. A body already at its end (a GET's) has nothing to limit and is left
/// as it is.
pub fn enforce(limits: &BodyLimits, mut request: Request) -> Result<Request, BodyTooLarge> {
    let limit = limits.for_path(request.uri().path());
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(BodyTooLarge(limit));
    }
    if request.body().is_end_stream() {
        return Ok(request);
    }
    DefaultBodyLimit::disable().apply(&mut request);
    let (parts, body) = request.into_parts();
    Ok(Request::from_parts(
        parts,
        Body::new(Limited::new(body, limit)),
    ))
}

/// Reads a whole body that [`enforce`] has limited: a body over the limit is a 413, one that broke
/// off (the client went away) a 400.
pub async fn collect(body: Body) -> Result<axum::body::Bytes, ApiError> {
    axum::body::to_bytes(body, usize::MAX).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body is too large")
        } else {
            ApiError::bad_request("The request body could not be read")
        }
    })
}

/// A declared body length over the limit (the limit in bytes): a 413.
#[derive(Debug, Clone, Copy)]
pub struct BodyTooLarge(pub usize);

impl IntoResponse for BodyTooLarge {
    fn into_response(self) -> Response {
        too_large(self.0)
    }
}

fn too_large(limit: usize) -> Response {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("Request body is larger than the limit of {limit} bytes"),
    )
    .into_response()
}
