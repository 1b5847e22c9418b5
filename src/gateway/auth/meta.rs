//! Who made a request, for the sign-in lockout and the audit log: the client's address (through
//! trusted proxies only, as the rate limiter reads it) and its user agent. One extractor, so no
//! handler rebuilds it from the connection and the headers.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};

use crate::gateway::GatewayState;
use crate::gateway::rate_limit::client_ip;
use crate::http::ApiError;

/// The longest user agent kept: enough to tell browsers apart, not a place to store a novel.
const USER_AGENT_MAX: usize = 512;

#[derive(Debug, Clone)]
pub struct RequestMeta {
    pub ip: IpAddr,
    pub user_agent: Option<String>,
}

impl RequestMeta {
    pub fn new(state: &GatewayState, peer: SocketAddr, headers: &HeaderMap) -> Self {
        let trusted = &state.config.rate_limit.trusted_proxies;
        Self {
            ip: client_ip(peer.ip(), headers, trusted),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(|ua| ua.chars().take(USER_AGENT_MAX).collect()),
        }
    }
}

impl FromRequestParts<GatewayState> for RequestMeta {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &GatewayState,
    ) -> Result<Self, Self::Rejection> {
        // Every listener serves with connect info (server.rs); without it this is a wiring bug.
        let ConnectInfo(peer) = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .copied()
            .ok_or_else(|| ApiError::internal("the peer address of the request is unknown"))?;
        Ok(Self::new(state, peer, &parts.headers))
    }
}
