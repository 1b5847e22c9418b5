//! Admitting a socket to `/events`: the handshake request must carry the user context the gateway
//! verified (in-process in role `all`, signed headers when split), checked by the same extractor
//! as every API handler. The socket then joins its tenant's room and is counted while connected.

use std::fmt;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use tokio_util::sync::CancellationToken;

use super::{NAMESPACE, tenant_room};
use crate::app::AppContext;
use crate::identity::context::UserContext;
use crate::identity::lease::Lease;

/// Why a socket was refused; its text is the `connect_error` message the client sees.
#[derive(Debug)]
pub struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Unauthorized")
    }
}

/// The user context a session-opening request carried, verified by [`trim_handshake`].
#[derive(Debug, Clone)]
struct Verified(UserContext);

/// Before engine.io sees a request that opens a session (the polling handshake or a direct
/// websocket upgrade): its user context is checked here, by the same extractor as every API
/// handler (signed by the gateway for exactly that request), and the request is cut down to what
/// engine.io and [`admit`] read. engine.io keeps the parts of that request for the session's whole
/// life, and as received they hold every header (cookies, forwarding, tracing) and every
/// extension the HTTP stack and the gateway added: kilobytes per connection, for nothing.
pub async fn trim_handshake(
    State(ctx): State<Arc<AppContext>>,
    request: Request,
    next: Next,
) -> Response {
    if !crate::http::paths::opens_engine_io_session(request.uri().query()) {
        return next.run(request).await;
    }
    let (mut parts, body) = request.into_parts();
    let verified = UserContext::from_request_parts(&mut parts, &ctx).await.ok();
    let mut kept = Request::new(body);
    *kept.method_mut() = parts.method;
    *kept.uri_mut() = parts.uri;
    *kept.version_mut() = parts.version;
    // What engine.io reads: the websocket key (for the 101's accept) and a body's type.
    for name in [header::SEC_WEBSOCKET_KEY, header::CONTENT_TYPE] {
        if let Some(value) = parts.headers.remove(&name) {
            kept.headers_mut().insert(name, value);
        }
    }
    let extensions = kept.extensions_mut();
    if let Some(upgrade) = parts.extensions.remove::<OnUpgrade>() {
        extensions.insert(upgrade);
    }
    if let Some(lease) = parts.extensions.remove::<Lease>() {
        extensions.insert(lease);
    }
    if let Some(user) = verified {
        extensions.insert(Verified(user));
    }
    next.run(kept).await
}

/// The connect middleware: admits the socket when the request that opened its session carried a
/// verified user context ([`trim_handshake`]).
pub async fn admit<A: Adapter>(socket: SocketRef<A>) -> Result<(), Refused> {
    match socket.req_parts().extensions.get::<Verified>() {
        Some(_) => Ok(()),
        None => Err(Refused),
    }
}

/// The connect handler, after [`admit`]: the socket joins its tenant's room.
pub async fn connected<A: Adapter>(socket: SocketRef<A>) {
    let Some(Verified(user)) = socket.req_parts().extensions.get::<Verified>() else {
        // Unreachable behind `admit`; a socket without a tenant must not linger.
        let _ = socket.disconnect();
        return;
    };
    socket.join(tenant_room(user.tenant_id));
    connections().increment(1.0);
    let gone = CancellationToken::new();
    // In role `all` the gateway's lease on the session that opened this socket: signing out (or
    // any revocation) disconnects it, whatever transport it is on now.
    if let Some(lease) = socket.req_parts().extensions.get::<Lease>().cloned() {
        let (socket, gone) = (socket.clone(), gone.clone());
        tokio::spawn(async move {
            tokio::select! {
                () = lease.stopped() => {
                    let _ = socket.disconnect();
                }
                () = gone.cancelled() => {}
            }
        });
    }
    socket.on_disconnect(move || async move {
        connections().decrement(1.0);
        gone.cancel();
    });
    tracing::debug!(socket = %socket.id, tenant = %user.tenant_id, "socket connected");
}

/// `socketio_connections{namespace="/events"}`: sockets connected to this replica now.
fn connections() -> metrics::Gauge {
    metrics::gauge!("socketio_connections", "namespace" => NAMESPACE)
}
