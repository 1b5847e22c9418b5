//! The internal API (SPEC §7): what other services call on the order service when split. Mounted
//! only by the `order` role (in role `all` the gateway calls in-process), never proxied by the
//! gateway, and absent from the OpenAPI document: it is not public.
//!
//! Every handler takes an [`InternalCaller`], which proves the caller holds `internal.key`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRef, FromRequestParts};
use axum::http::HeaderName;
use axum::http::request::Parts;
use axum::routing::post;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::OrderState;
use super::audit;
use crate::app::AppContext;
use crate::http::ApiError;

pub const X_INTERNAL_KEY: HeaderName = HeaderName::from_static("x-internal-key");

/// The internal route table.
pub fn routes() -> Router<OrderState> {
    Router::new().route(
        "/internal/audit-logs",
        post(audit::routes::record_from_service),
    )
}

/// A caller that presented the internal key; anything else is a 401.
#[derive(Debug, Clone, Copy)]
pub struct InternalCaller;

impl<S> FromRequestParts<S> for InternalCaller
where
    S: Send + Sync,
    Arc<AppContext>: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let app = Arc::<AppContext>::from_ref(state);
        // An empty key would let an empty header in: treat it as no key, and refuse everyone.
        let expected = app
            .config
            .internal
            .key
            .as_ref()
            .map(|k| k.expose().as_bytes())
            .filter(|k| !k.is_empty());
        let Some(expected) = expected else {
            tracing::warn!("refused an internal call: internal.key is not configured");
            return Err(ApiError::unauthorized("Invalid internal key"));
        };
        let Some(presented) = parts.headers.get(&X_INTERNAL_KEY) else {
            return Err(ApiError::unauthorized("Missing internal key"));
        };
        if keys_match(expected, presented.as_bytes()) {
            Ok(InternalCaller)
        } else {
            tracing::warn!("refused an internal call: wrong internal key");
            Err(ApiError::unauthorized("Invalid internal key"))
        }
    }
}

/// Constant time in the content, and comparing digests hides the key's length too.
fn keys_match(expected: &[u8], presented: &[u8]) -> bool {
    let expected = Sha256::digest(expected);
    let presented = Sha256::digest(presented);
    expected.as_slice().ct_eq(presented.as_slice()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_key_matches() {
        assert!(keys_match(b"secret-key", b"secret-key"));
        assert!(!keys_match(b"secret-key", b"secret-kez"));
        assert!(!keys_match(b"secret-key", b"secret-key-and-more"));
        assert!(!keys_match(b"secret-key", b""));
    }
}
