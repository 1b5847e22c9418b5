//! The one error type of the HTTP layer, rendered in the shape the web app already parses
//! (SPEC §4, the NestJS default): `{"statusCode": 404, "message": "Order not found", "error": "Not Found"}`.

use std::any::Any;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The §4 error body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub status_code: u16,
    /// One message, or a list of them for validation errors.
    pub message: ErrorMessage,
    /// The status's reason phrase (`Not Found`).
    pub error: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum ErrorMessage {
    One(String),
    Many(Vec<String>),
}

/// An error a handler returns. Internal causes are logged, never shown to the client.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: ErrorMessage,
    /// Boxed: most errors carry no headers, and `Result<_, ApiError>` stays small.
    headers: Option<Box<HeaderMap>>,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: ErrorMessage::One(message.into()),
            headers: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 400 listing every problem with the input.
    pub fn validation(messages: Vec<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: ErrorMessage::Many(messages),
            headers: None,
        }
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, message)
    }

    pub fn service_unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// A 503 for a dependency that is down or restarting (`message` says which, for the client):
    /// the cause is logged, never shown, and `Retry-After` invites a retry once it may be back.
    pub fn unavailable(message: impl Into<String>, cause: impl std::fmt::Display) -> Self {
        tracing::warn!(error = %cause, "a dependency is unavailable");
        Self::service_unavailable(message)
            .with_header(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS))
    }

    /// A 500 whose cause is logged with the request's id and hidden from the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "Internal server error")
    }

    /// Adds a response header (`Retry-After`, `WWW-Authenticate`, …).
    pub fn with_header(mut self, name: header::HeaderName, value: HeaderValue) -> Self {
        self.headers.get_or_insert_default().insert(name, value);
        self
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            status_code: self.status.as_u16(),
            message: self.message.clone(),
            error: reason(self.status),
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.message {
            ErrorMessage::One(m) => write!(f, "{} {m}", self.status.as_u16()),
            ErrorMessage::Many(m) => write!(f, "{} {}", self.status.as_u16(), m.join("; ")),
        }
    }
}

/// How long a client is asked to wait before trying again after a dependency failed.
const RETRY_AFTER_SECS: u32 = 5;

impl From<crate::infra::db::DbError> for ApiError {
    /// A database that is down or restarting is a 503 the client may retry (Shopify re-delivers a
    /// webhook it got one for), not a 500; text the database cannot store (a NUL character, on
    /// PostgreSQL) is the request's fault, a 400; any other database error is internal. None
    /// shows the driver's message.
    fn from(error: crate::infra::db::DbError) -> Self {
        if error.is_unavailable() {
            ApiError::unavailable("The database is unavailable; try again shortly", error)
        } else if error.is_unstorable_text() {
            ApiError::validation(vec![
                "Text must not contain NUL (\\u0000) characters".to_owned(),
            ])
        } else {
            ApiError::internal(error)
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = self.body();
        let mut response = (self.status, axum::Json(body)).into_response();
        if let Some(headers) = self.headers {
            response.headers_mut().extend(*headers);
        }
        response
    }
}

fn reason(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_owned()
}

/// The router's fallback: NestJS's `Cannot GET /path` 404.
pub async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "Cannot {} {}",
        request.method(),
        request.uri().path()
    ))
}

/// Every error response leaves in the §4 shape, whoever produced it: axum's 405, a body-limit 413,
/// a timeout. Responses that already carry JSON are left alone.
pub fn ensure_error_shape(method: &Method, path: &str, response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let message = match status {
        StatusCode::NOT_FOUND => format!("Cannot {method} {path}"),
        StatusCode::METHOD_NOT_ALLOWED => format!("Method {method} is not allowed on {path}"),
        StatusCode::PAYLOAD_TOO_LARGE => "Request body is too large".to_owned(),
        _ => reason(status),
    };
    let (parts, _) = response.into_parts();
    let mut shaped = ApiError::new(status, message).into_response();
    // Keep what the original said besides its body: Allow, Retry-After, RateLimit-*, …
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json") || ct.contains("+json"))
}

/// A panic in a handler becomes a logged 500 in the §4 shape, never a dropped connection.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response<Body> {
    let detail = crate::infra::panics::message(panic.as_ref());
    ApiError::internal(format_args!("handler panicked: {detail}")).into_response()
}
