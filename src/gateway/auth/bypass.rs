//! The session layer, skipped by the requests that never read their session.
//!
//! For every request it wraps, the session layer parses the cookie jar into a shared, locked jar,
//! builds a session handle and boxes two futures. A forwarded request whose sign-in the identity
//! cache holds reads none of it, and neither does one signed in with a bearer token. So what no
//! route of the gateway's own answers (the gateway's fallback) is served by a router that exists
//! twice, with and without the session layer, and [`SessionBypass`] sends a request around the
//! layer when:
//! - the gateway forwards it: the route table serves its path, and it is neither internal nor
//!   public;
//! - it opens no connection that outlives it (a websocket, a Socket.IO session), which is leased
//!   by its session ([`crate::gateway::proxy::live`]);
//! - it carries a bearer token, or a session cookie (read and verified as the session layer reads
//!   it, [`SessionCookie`]) whose sign-in the identity cache holds.
//!
//! Either way, what was found travels to [`super::authenticate`] as [`Identified`]: the identity
//! cache is asked once per request, which its refresh-ahead relies on (the one request told
//! "miss" must be the one that resolves the sign-in).

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::Router;
use axum::extract::Request;
use axum::response::Response;
use axum::routing::future::RouteFuture;
use futures::future::Either;
use tower::Service;

use super::Authenticated;
use super::cache::CacheKey;
use super::session::SessionCookie;
use crate::gateway::GatewayState;
use crate::gateway::forwarding::Forwarding;

/// The credential a request signs in with and what the identity cache held for it, found before
/// the session layer.
#[derive(Clone)]
pub(super) struct Identified {
    pub credential: CacheKey,
    pub cached: Option<Authenticated>,
}

impl Identified {
    /// Whether the session layer may be skipped: nothing left to resolve, or nothing to resolve
    /// it from a session.
    fn bypasses_sessions(&self) -> bool {
        self.cached.is_some() || matches!(self.credential, CacheKey::Token(_))
    }
}

/// The gateway's fallback, around its session layer when the request allows: `S` is the
/// fallback itself, [`Forwarding`] when served.
#[derive(Clone)]
pub struct SessionBypass<S = Forwarding> {
    state: GatewayState,
    cookie: SessionCookie,
    with_sessions: Router,
    without: S,
}

impl<S> SessionBypass<S> {
    /// `without` is the fallback, `with_sessions` a router serving it in the session layer.
    pub fn new(state: GatewayState, with_sessions: Router, without: S) -> Self {
        let cookie = SessionCookie::new(&state.config);
        Self {
            state,
            cookie,
            with_sessions,
            without,
        }
    }

    /// What the gateway knows of a forwarded request's sign-in before the session layer; `None`
    /// for a request that goes through the session layer whatever it carries.
    fn identify(&self, request: &Request) -> Option<Identified> {
        let state = &self.state;
        let path = request.uri().path();
        if !state.proxy.forwards(path)
            || crate::gateway::proxy::routes::is_internal(path)
            || state.public.matches(path)
            || crate::gateway::proxy::live::outlives_its_request(request)
        {
            return None;
        }
        let headers = request.headers();
        let credential =
            super::middleware::credential(headers, || self.cookie.session_id(headers))?;
        let cached = state.auth_cache.get(&credential);
        Some(Identified { credential, cached })
    }
}

impl<S> Service<Request> for SessionBypass<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<RouteFuture<Infallible>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // A router is always ready; the fallback says for itself (`Forwarding` always is).
        self.without.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let Some(identified) = self.identify(&request) else {
            return Either::Left(self.with_sessions.call(request));
        };
        let bypass = identified.bypasses_sessions();
        request.extensions_mut().insert(identified);
        if bypass {
            Either::Right(self.without.call(request))
        } else {
            Either::Left(self.with_sessions.call(request))
        }
    }
}

#[cfg(test)]
#[path = "bypass_tests.rs"]
mod tests;
