//! The Redis adapter's link to Redis, which outlives Redis restarts.
//!
//! Invariants:
//! - The link reconnects by itself, and subscribes again to every channel the adapter listens on
//!   (redis's `ConnectionManager`). socketioxide-redis's own driver holds one connection that
//!   never reconnects: after Redis restarted, an order replica heard no other replica's emits
//!   and every emit of its own failed, until the process restarted.
//! - A publish that fails is logged, not returned: the adapter publishes an emit to the other
//!   replicas before it hands it to this replica's sockets, and an error would skip them too. While
//!   Redis is away, this replica's sockets still hear their tenant's news.
//! - A watchdog pings Redis every [`WATCH_EVERY`], so a link that broke while nothing was emitted
//!   is mended (and subscribed again) without waiting for the next emit.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take: an emit never waits longer on Redis.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// How often the watchdog pings Redis.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A [`Driver`] on a connection that reconnects. Clones share the connection and the handlers.
#[derive(Clone)]
pub struct ManagedDriver {
    handlers: Handlers,
    conn: ConnectionManager,
}

impl ManagedDriver {
    /// Connects through `client`, which must speak RESP3 (pub/sub messages arrive as pushes).
    pub async fn connect(client: &redis::Client) -> redis::RedisResult<Self> {
        let handlers = Handlers::default();
        let routed = handlers.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_max_delay(MAX_RECONNECT_DELAY)
            // One attempt per trigger: an emit while Redis is away fails at once instead of
            // waiting out a series; the watchdog triggers the next.
            .set_number_of_retries(1)
            .set_push_sender(move |push: PushInfo| {
                route(push, &routed);
                Ok::<(), std::convert::Infallible>(())
            })
            .set_automatic_resubscription();
        let conn = ConnectionManager::new_with_config(client.clone(), config).await?;
        Ok(Self { handlers, conn })
    }

    /// Pings Redis every [`WATCH_EVERY`] until `stop`: a failed ping makes the connection
    /// reconnect and subscribe again.
    pub async fn watch(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut healthy = true;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut conn = self.conn.clone();
            let ping = redis::cmd("PING").query_async::<String>(&mut conn).await;
            match (ping, healthy) {
                (Ok(_), false) => {
                    tracing::info!("the Socket.IO Redis adapter reaches Redis again");
                    healthy = true;
                }
                (Err(error), true) => {
                    tracing::warn!(%error, "the Socket.IO Redis adapter lost Redis; other replicas' emits wait until it returns");
                    healthy = false;
                }
                _ => {}
            }
        }
    }

    fn handlers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, mpsc::Sender<ChanItem>>> {
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Hands a message Redis pushed to the adapter's handler of its channel.
fn route(push: PushInfo, handlers: &Handlers) {
    if !matches!(push.kind, PushKind::Message | PushKind::SMessage) {
        return;
    }
    let mut data = push.data.into_iter();
    let (Some(channel), Some(message)) = (data.next(), data.next()) else {
        return;
    };
    let (Ok(channel), Ok(message)) = (
        String::from_redis_value(channel),
        Vec::<u8>::from_redis_value(message),
    ) else {
        tracing::warn!("an unreadable message on a Socket.IO adapter channel was dropped");
        return;
    };
    let handler = handlers
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&channel)
        .cloned();
    match handler {
        Some(handler) => {
            if let Err(error) = handler.try_send((channel, message)) {
                tracing::warn!(%error, "a Socket.IO adapter channel is full; a message was dropped");
            }
        }
        None => tracing::debug!(channel, "a message for a channel no longer listened to"),
    }
}

impl Driver for ManagedDriver {
    type Error = redis::RedisError;

    async fn publish(&self, chan: String, val: Vec<u8>) -> Result<(), Self::Error> {
        let published = self
            .conn
            .clone()
            .publish::<_, _, redis::Value>(&chan, val)
            .await;
        if let Err(error) = published {
            tracing::warn!(%error, "a Socket.IO emit did not reach the other replicas");
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        chan: String,
        size: usize,
    ) -> Result<MessageStream<ChanItem>, Self::Error> {
        let (tx, rx) = mpsc::channel(size.max(1));
        self.handlers().insert(chan.clone(), tx);
        if let Err(error) = self.conn.clone().subscribe(&chan).await {
            self.handlers().remove(&chan);
            return Err(error);
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers().remove(&chan);
        self.conn.clone().unsubscribe(&chan).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.conn.clone();
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }
}
