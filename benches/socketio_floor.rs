//! The floor of `benches/socketio.sh`: socketioxide alone, shaped like forma's Socket.IO and like
//! the Node reference (`benches/socketio/server.mjs`), with nothing of forma around it. What a
//! connection costs here is what the library forma is built on costs; forma's figure above it is
//! forma's own, and the floor's ratio to Node is the best forma could reach on this stack.
//!
//! Path `/socket.io`, namespace `/events`, the Redis adapter on `REDIS_URL` under `KEY_PREFIX`. A
//! handshake's cookie `forma.sid=<tenant>` names the tenant (as in the Node reference); the request
//! engine.io keeps for the session's life is cut by forma's own [`kept_for_engine_io`]; the socket
//! joins `tenant:<tenant>`. forma's own Redis client and server settings ([`socket_io_builder`]:
//! path, websocket read buffer) are used, so only forma's code around the library differs.
//! `POST /emit?room=<tenant>&event=<name>` with a JSON body emits it to the room (204), `GET
//! /health` answers 200. Listens on 127.0.0.1:`PORT` only; stops on SIGTERM or Ctrl-C.
//!
//!   cargo bench --bench socketio_floor     (benches/socketio.sh runs it, with `--bench`)

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;

use anyhow::{Result, anyhow};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use forma::config::SecretUrl;
use forma::gateway::auth::session::last_session_cookie;
use forma::order::realtime::{NAMESPACE, kept_for_engine_io, redis_client, socket_io_builder};
use socketioxide::SocketIo;
use socketioxide::extract::SocketRef;
use socketioxide::handler::ConnectHandler;
use socketioxide_redis::{RedisAdapter, RedisAdapterConfig, RedisAdapterCtr};

// As forma's own binary; `--features system-allocator` leaves the allocator to the system, which
// valgrind's heap profiler sees (benches/socketio.sh MODE=dhat).
#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Adapter = RedisAdapter<socketioxide::adapter::Emitter>;

/// The tenant a handshake's cookie named.
#[derive(Clone)]
struct Tenant(String);

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Unauthorized")
    }
}

/// The tenant a handshake's session cookie names, read as forma's gateway reads the cookie.
fn tenant_of(headers: &HeaderMap) -> Option<String> {
    last_session_cookie(headers)
        .map(|cookie| cookie.value().to_owned())
        .filter(|tenant| !tenant.is_empty())
}

/// Keeps of a handshake what engine.io and the connect handler read, as forma does.
async fn trim(request: Request, next: Next) -> Response {
    if !forma::http::paths::opens_engine_io_session(request.uri().query()) {
        return next.run(request).await;
    }
    let tenant = tenant_of(request.headers());
    let (mut kept, _) = kept_for_engine_io(request);
    if let Some(tenant) = tenant {
        kept.extensions_mut().insert(Tenant(tenant));
    }
    next.run(kept).await
}

async fn admit(socket: SocketRef<Adapter>) -> Result<(), Refused> {
    match socket.req_parts().extensions.get::<Tenant>() {
        Some(_) => Ok(()),
        None => Err(Refused),
    }
}

async fn connected(socket: SocketRef<Adapter>) {
    match socket.req_parts().extensions.get::<Tenant>().cloned() {
        Some(Tenant(tenant)) => socket.join(format!("tenant:{tenant}")),
        None => {
            let _ = socket.disconnect();
        }
    }
}

async fn emit(
    State(io): State<SocketIo<Adapter>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let payload: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(payload) => payload,
        Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    };
    let (Some(room), Some(namespace)) = (query.get("room"), io.of(NAMESPACE)) else {
        return (StatusCode::BAD_REQUEST, "room is required").into_response();
    };
    let event = query
        .get("event")
        .cloned()
        .unwrap_or_else(|| "order:created".to_owned());
    match namespace
        .to(format!("tenant:{room}"))
        .emit(&event, &payload)
        .await
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn serve() -> Result<()> {
    let port = common::port()?;
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = std::env::var("KEY_PREFIX").unwrap_or_else(|_| "forma-bench-floor".to_owned());

    // forma's own Redis client (RESP3, for the adapter's pub/sub pushes) and server settings.
    let client = redis_client(&SecretUrl::new(url))?;
    let adapter = RedisAdapterCtr::new_with_redis_config(
        &client,
        RedisAdapterConfig::new().with_prefix(prefix),
    )
    .await?;
    let (layer, io) = socket_io_builder()
        .with_adapter::<Adapter>(adapter)
        .build_layer();
    io.ns(NAMESPACE, connected.with(admit))
        .await
        .map_err(|e| anyhow!("{e}"))?;

    let app = Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/emit", post(emit))
        .with_state(io.clone())
        .layer(layer)
        .layer(axum::middleware::from_fn(trim));
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
    eprintln!("socketioxide floor listening on 127.0.0.1:{port}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            forma::server::shutdown_signal().await;
            io.close().await;
        })
        .await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    common::server_main(
        "socketio_floor",
        "a server for benches/socketio.sh; PORT=… starts it",
        serve,
    )
}
