//! What the gateway forwards, served as one service: admission and authentication, then the
//! proxy, called one after the other.
//!
//! Everything no route of the gateway's own answers comes here, on every forwarded request. A
//! router with this as its fallback, under the authentication middleware, would look the path up
//! in a route table with nothing in it, record its parameters, clone and box the middleware and
//! the handler, and pass the signed-in user from one to the other in the request's extensions.
//! [`Forwarding`] does none of that, and behaves the same: what [`auth::authenticate`] answers and
//! admits, [`proxy::forward`] sends on.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::extract::{ConnectInfo, Request};
use axum::response::{IntoResponse, Response};
use tower::Service;
use tower_sessions::Session;

use super::{GatewayState, auth, proxy};
use crate::http::ApiError;

/// The gateway's fallback service: authenticate, then forward.
#[derive(Clone)]
pub struct Forwarding(GatewayState);

impl Forwarding {
    pub fn new(state: GatewayState) -> Self {
        Self(state)
    }
}

impl Service<Request> for Forwarding {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request) -> Self::Future {
        // The future boxed as it is, not inside an `async` block of its own: each layer of futures
        // copies the request once more.
        Box::pin(serve(self.0.clone(), request))
    }
}

async fn serve(state: GatewayState, request: Request) -> Result<Response, Infallible> {
    // Put there by the server for every connection, as for the `ConnectInfo` extractor.
    let Some(&ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() else {
        return Ok(ApiError::internal("the client's address is unknown").into_response());
    };
    // Present when the request came through the session layer (`auth::bypass`).
    let session = request.extensions().get::<Session>().cloned();
    let state = &state;
    let response = auth::serve_authenticated(state, peer, session, request, |request, user| {
        proxy::forward(state, peer, request, user)
    })
    .await;
    Ok(response)
}
