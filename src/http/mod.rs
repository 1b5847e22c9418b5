//! The HTTP conventions every role shares (SPEC §4): the error shape, `X-Request-Id`, body limits,
//! request logs and metrics. [`stack`] wraps a role's router in all of them.

pub mod conventions;
pub mod error;
pub mod extract;
pub mod limits;
pub mod linger;
pub mod pagination;
pub mod paths;
pub mod request_id;
pub mod security;

use axum::Router;

pub use error::{ApiError, ErrorBody};

use crate::config::Config;

/// Wraps `router` in the shared conventions ([`conventions`]): request id, security headers, the
/// path's normal form, request span and log, metrics, the §4 error shape for every error response,
/// body limits, panic recovery.
///
/// Every handler is made a route here, once (`with_state`): a router holding a bare handler (the
/// UI's pages, the docs) would otherwise clone it, box it into a route and apply these layers to it
/// again on every request.
pub fn stack(router: Router, config: &Config) -> Router {
    let limits = limits::BodyLimits::from_config(&config.server);
    let security = security::SecurityHeaders::from_config(config);
    router
        .with_state(())
        .layer(conventions::ConventionsLayer::new(security, limits))
}

#[cfg(test)]
mod tests;
