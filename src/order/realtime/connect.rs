//! Admitting a socket to `/events`: the handshake request must carry the user context the gateway
//! verified (in-process in role `all`, signed headers when split), checked by the same extractor
//! as every API handler. The socket then joins its tenant's room and is counted while connected.

use std::fmt;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use socketioxide::adapter::Adapter;
use socketioxide::extract::SocketRef;

use super::{NAMESPACE, tenant_room};
use crate::app::AppContext;
use crate::identity::context::UserContext;

/// Why a socket was refused; its text is the `connect_error` message the client sees.
#[derive(Debug)]
pub struct Refused;

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Unauthorized")
    }
}

/// The connect middleware: admits the socket when its handshake carried a verified user context,
/// and remembers whose it is.
pub async fn admit<A: Adapter>(ctx: Arc<AppContext>, socket: SocketRef<A>) -> Result<(), Refused> {
    // The parts of the request that opened the engine.io session (the polling handshake or the
    // websocket upgrade), signed by the gateway for exactly that request.
    let mut parts = socket.req_parts().clone();
    match UserContext::from_request_parts(&mut parts, &ctx).await {
        Ok(user) => {
            socket.extensions.insert(user);
            Ok(())
        }
        Err(_) => Err(Refused),
    }
}

/// The connect handler, after [`admit`]: the socket joins its tenant's room.
pub async fn connected<A: Adapter>(socket: SocketRef<A>) {
    let Some(user) = socket.extensions.get::<UserContext>() else {
        // Unreachable behind `admit`; a socket without a tenant must not linger.
        let _ = socket.disconnect();
        return;
    };
    socket.join(tenant_room(user.tenant_id));
    connections().increment(1.0);
    socket.on_disconnect(|| async { connections().decrement(1.0) });
    tracing::debug!(socket = %socket.id, tenant = %user.tenant_id, "socket connected");
}

/// `socketio_connections{namespace="/events"}`: sockets connected to this replica now.
fn connections() -> metrics::Gauge {
    metrics::gauge!("socketio_connections", "namespace" => NAMESPACE)
}
