//! Admitting a socket to `/events`: the handshake request must carry the user context the gateway
//! verified (in-process in role `all`, signed headers when split), checked by the same extractor
//! as every API handler. The socket then joins its tenant's room and is counted while connected.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use hyper::upgrade::OnUpgrade;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use uuid::Uuid;

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

/// The tenant of the user context a session-opening request carried, verified by
/// [`trim_handshake`]: all a socket needs of its user for its whole life. A client may leave
/// `/events` and join it again on one connection, each time as a socket of the same id; `watched`
/// tells whether the connection's lease already ends it.
#[derive(Debug, Clone)]
struct Verified {
    tenant: Uuid,
    watched: Arc<AtomicBool>,
}

/// Before engine.io sees a request that opens a session (the polling handshake or a direct
/// websocket upgrade): its user context is checked here, by the same extractor as every API
/// handler (signed by the gateway for exactly that request), and the request is cut down to what
/// engine.io and [`admit`] read ([`kept_for_engine_io`]).
pub async fn trim_handshake(
    State(ctx): State<Arc<AppContext>>,
    request: Request,
    next: Next,
) -> Response {
    if !crate::http::paths::opens_engine_io_session(request.uri().query()) {
        return next.run(request).await;
    }
    let (mut kept, mut rest) = kept_for_engine_io(request);
    let verified = UserContext::from_request_parts(&mut rest, &ctx).await.ok();
    let extensions = kept.extensions_mut();
    if let Some(lease) = rest.extensions.remove::<Lease>() {
        extensions.insert(lease);
    }
    if let Some(user) = verified {
        extensions.insert(Verified {
            tenant: user.tenant_id,
            watched: Arc::default(),
        });
    }
    next.run(kept).await
}

/// A session-opening request as engine.io keeps it for the session's whole life, with the rest of
/// it for the caller to take what its own connect handler reads. As received it holds every
/// header (cookies, forwarding, tracing) and every extension the HTTP stack and the gateway
/// added: kilobytes per connection, for nothing. Kept: the method, the path and query (engine.io
/// reads `EIO`, `transport`, `sid`), the version, the websocket key (for the 101's accept), a
/// body's type, and the connection's upgrade. What is kept is copied, not sliced: the server
/// parses a request into slices of its connection's 8 KiB read buffer, and one slice kept alive
/// keeps the whole buffer.
pub fn kept_for_engine_io(request: Request) -> (Request, Parts) {
    let (mut parts, body) = request.into_parts();
    let mut kept = Request::new(body);
    *kept.method_mut() = parts.method.clone();
    let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    *kept.uri_mut() = Uri::try_from(target).unwrap_or_else(|_| parts.uri.clone());
    *kept.version_mut() = parts.version;
    const KEPT: [header::HeaderName; 2] = [header::SEC_WEBSOCKET_KEY, header::CONTENT_TYPE];
    *kept.headers_mut() = HeaderMap::with_capacity(KEPT.len());
    for name in KEPT {
        if let Some(value) = parts.headers.get(&name) {
            let copied =
                HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
            kept.headers_mut().insert(name, copied);
        }
    }
    if let Some(upgrade) = parts.extensions.remove::<OnUpgrade>() {
        kept.extensions_mut().insert(upgrade);
    }
    (kept, parts)
}

/// The connect middleware: admits the socket when the request that opened its session carried a
/// verified user context ([`trim_handshake`]) whose sign-in still holds.
pub async fn admit<A: Adapter>(socket: SocketRef<A>) -> Result<(), Refused> {
    let parts = socket.req_parts();
    let revoked = parts
        .extensions
        .get::<Lease>()
        .is_some_and(Lease::is_stopped);
    match parts.extensions.get::<Verified>() {
        Some(_) if !revoked => Ok(()),
        _ => Err(Refused),
    }
}

/// The connect handler, after [`admit`]: the socket joins its tenant's room.
pub async fn connected<A: Adapter>(socket: SocketRef<A>, io: SocketIo<A>) {
    let Some(verified) = socket.req_parts().extensions.get::<Verified>() else {
        // Unreachable behind `admit`; a socket without a tenant must not linger.
        let _ = socket.disconnect();
        return;
    };
    let tenant = verified.tenant;
    socket.on_disconnect(|| async { connections().decrement(1.0) });
    socket.join(tenant_room(tenant));
    connections().increment(1.0);
    // In role `all` the gateway's lease on the session that opened this connection: signing out
    // (or any revocation) ends its socket, whatever transport it is on now. Ended by the lease
    // rather than watched by a task per socket; found by its id (the connection's, the same for
    // each time the client joins), because the socket holds the lease and a callback holding the
    // socket would keep both alive for good. Registered once per connection: a client joining
    // again and again must not grow the lease's callbacks.
    let sid = socket.id;
    if let Some(lease) = socket.req_parts().extensions.get::<Lease>() {
        if !verified.watched.swap(true, Ordering::SeqCst) {
            lease.on_stop(move || end(io, sid));
        } else if lease.is_stopped() {
            // Admitted as the lease stopped, after its callback ran.
            end(io, sid);
        }
    }
    tracing::debug!(socket = %socket.id, %tenant, "socket connected");
}

/// How often, and how long apart, ending a revoked socket is tried again while its client does
/// not read (its send queue is full, and the disconnect packet cannot be queued).
const END_TRIES: u32 = 30;
const END_RETRY_EVERY: Duration = Duration::from_secs(1);

/// Ends socket `sid` of a revoked sign-in: out of every room at once, so it hears nothing more,
/// then disconnected, again later while its client is not reading.
fn end<A: Adapter>(io: SocketIo<A>, sid: Sid) {
    let ended = move |io: &SocketIo<A>| {
        let Some(socket) = io.of(NAMESPACE).and_then(|ns| ns.get_socket(sid)) else {
            return true;
        };
        socket.leave_all();
        socket.disconnect().is_ok()
    };
    if ended(&io) {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        for _ in 0..END_TRIES {
            tokio::time::sleep(END_RETRY_EVERY).await;
            if ended(&io) {
                return;
            }
        }
        tracing::warn!(socket = %sid, "a revoked socket could not be disconnected; it is out of every room");
    });
}

/// `socketio_connections{namespace="/events"}`: sockets connected to this replica now.
fn connections() -> metrics::Gauge {
    metrics::gauge!("socketio_connections", "namespace" => NAMESPACE)
}
