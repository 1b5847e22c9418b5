//! The Socket.IO server on its adapter: in-process without Redis, the Redis adapter with it, so an
//! emit on any order replica reaches the sockets of every replica. One setup function per adapter
//! type: socketioxide registers namespaces only on a concrete adapter.
//!
//! The Redis adapter's channels are named under `redis.key_prefix`, so installs (and parallel
//! tests) sharing one Redis never hear each other.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use futures::future::BoxFuture;
use serde_json::Value;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::handler::ConnectHandler;
use socketioxide::layer::SocketIoLayer;
use socketioxide_redis::{CustomRedisAdapter, RedisAdapterConfig, RedisAdapterCtr};
use tower::Layer;

use super::connect::{admit, connected, trim_handshake};
use super::redis_driver::ManagedDriver;
use super::{NAMESPACE, PATH};
use crate::app::AppContext;
use crate::config::SecretUrl;

/// Emits `event` with `payload` to a room, on whichever adapter the server runs.
pub type Emit = Arc<dyn Fn(String, &'static str, Value) -> BoxFuture<'static, ()> + Send + Sync>;

/// Closes every socket of this replica (and its adapter), on whichever adapter the server runs.
pub type Close = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// A running Socket.IO server: the service answering `/socket.io`, its emitter, and its close.
#[derive(Clone)]
pub struct Server {
    pub service: Router,
    pub emit: Emit,
    pub close: Close,
}

/// How long to wait before asking Redis again while the adapter cannot start.
const RETRY_EVERY: Duration = Duration::from_secs(1);
const RETRY_AT_MOST_EVERY: Duration = Duration::from_secs(30);

/// Fills `server` with the server on the configured adapter: at once without Redis, in the
/// background (retrying) with it.
pub fn start(ctx: &Arc<AppContext>, server: Arc<OnceLock<Server>>) -> anyhow::Result<()> {
    let Some(url) = ctx.config.redis.url.clone() else {
        let _ = server.set(local(ctx));
        return Ok(());
    };
    let client = redis_client(&url)?;
    let prefix = format!("{}socket.io", ctx.config.redis.key_prefix);
    let ctx = ctx.clone();
    ctx.clone()
        .workers
        .spawn("socketio-redis-adapter", move |stop| async move {
            let mut wait = RETRY_EVERY;
            loop {
                match on_redis(&ctx, &client, &prefix).await {
                    Ok((running, driver)) => {
                        let _ = server.set(running);
                        tracing::info!("Socket.IO runs on the Redis adapter");
                        driver.watch(stop).await;
                        return;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, ?wait, "the Socket.IO Redis adapter could not start; retrying");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(RETRY_AT_MOST_EVERY);
            }
        });
    Ok(())
}

/// The adapter needs RESP3 (Redis 7 or newer) for its pub/sub pushes, whatever the URL says.
pub fn redis_client(url: &SecretUrl) -> anyhow::Result<redis::Client> {
    use redis::IntoConnectionInfo;
    let info = url
        .expose()
        .into_connection_info()
        .map_err(|e| anyhow::anyhow!("redis.url {}: {e}", url.masked()))?;
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    let info = info.set_redis_settings(settings);
    redis::Client::open(info).map_err(|e| anyhow::anyhow!("redis.url {}: {e}", url.masked()))
}

fn local(ctx: &Arc<AppContext>) -> Server {
    let (layer, io) = socket_io_builder().build_layer();
    io.ns(NAMESPACE, namespace());
    running(ctx, layer, io)
}

/// The server on the Redis adapter, and the adapter's link to Redis (for its watchdog).
async fn on_redis(
    ctx: &Arc<AppContext>,
    client: &redis::Client,
    prefix: &str,
) -> anyhow::Result<(Server, ManagedDriver)> {
    let config = RedisAdapterConfig::new().with_prefix(prefix.to_owned());
    let driver = ManagedDriver::connect(client).await?;
    let adapter = RedisAdapterCtr::new_with_driver(driver.clone(), config);
    let (layer, io) = socket_io_builder()
        .with_adapter::<CustomRedisAdapter<_, ManagedDriver>>(adapter)
        .build_layer();
    io.ns(NAMESPACE, namespace())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok((running(ctx, layer, io), driver))
}

/// What a websocket reads per call: clients send only pongs and the namespace connect, so the
/// 4 KiB default would sit idle in every connection (a larger frame still grows it as it comes).
const WS_READ_BUFFER: usize = 256;

/// The Socket.IO server's settings, before its adapter: its path and its websockets' read buffer.
pub fn socket_io_builder() -> socketioxide::SocketIoBuilder {
    SocketIo::builder()
        .req_path(PATH)
        .ws_read_buffer_size(WS_READ_BUFFER)
}

/// `/events`: [`admit`] decides, [`connected`] joins the tenant's room.
fn namespace<A: Adapter>()
-> impl ConnectHandler<A, (socketioxide::extract::SocketRef<A>, SocketIo<A>)> {
    connected::<A>.with(admit::<A>)
}

fn running<A: Adapter>(ctx: &Arc<AppContext>, layer: SocketIoLayer<A>, io: SocketIo<A>) -> Server {
    // Whatever the layer does not answer itself is not ours: the §4 404.
    let not_found = tower::service_fn(|request| async move {
        Ok::<_, std::convert::Infallible>(axum::response::IntoResponse::into_response(
            crate::http::error::not_found(request).await,
        ))
    });
    let service = Router::new()
        .fallback_service(layer.layer(not_found))
        .layer(axum::middleware::from_fn_with_state(
            ctx.clone(),
            trim_handshake,
        ));
    let emitter = io.clone();
    let emit: Emit = Arc::new(move |room, event, payload| {
        let io = emitter.clone();
        Box::pin(async move {
            let Some(namespace) = io.of(NAMESPACE) else {
                return;
            };
            if let Err(e) = namespace.to(room).emit(event, &payload).await {
                tracing::warn!(error = %e, event, "a Socket.IO emit failed");
            }
        })
    });
    let close: Close = Arc::new(move || {
        let io = io.clone();
        Box::pin(async move { io.close().await })
    });
    Server {
        service,
        emit,
        close,
    }
}
