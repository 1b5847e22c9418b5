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
use crate::observability::metrics::RouteTemplateLayer;

/// A role's router inside the shared conventions, as the server serves it.
pub type Stacked = conventions::Conventions<Router>;

/// Wraps `router` in the shared conventions ([`conventions`]): request id, security headers, the
/// path's normal form, request span and log, metrics, the §4 error shape for every error response,
/// body limits, panic recovery.
///
/// The conventions wrap the router as a whole, not each of its routes: a layer on the router sits
/// inside every route's own box, the gateway's fallback included, and each request then clones and
/// boxes both the layered route and the route beneath it. Only the route template the router
/// matched, which the metrics label requests by, is taken from inside ([`RouteTemplateLayer`]).
///
/// Every handler is made a route here, once (`with_state`): a router holding a bare handler (the
/// UI's pages, the docs) would otherwise clone it, box it into a route and apply its layers to it
/// again on every request.
pub fn stack(router: Router, config: &Config) -> Stacked {
    let limits = limits::BodyLimits::from_config(&config.server);
    let security = security::SecurityHeaders::from_config(config);
    let router = router.with_state(());
    // axum refuses a route layer on a router with no routes (a fallback alone), which has no
    // templates to hand on either.
    let router = if router.has_routes() {
        router.route_layer(RouteTemplateLayer)
    } else {
        router
    };
    conventions::Conventions::new(router, security, limits)
}

#[cfg(test)]
mod tests;
