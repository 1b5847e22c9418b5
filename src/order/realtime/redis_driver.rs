//! The Redis adapter's link to Redis, which outlives Redis restarts.
//!
//! Invariants:
//! - The link reconnects by itself, and subscribes again to every channel the adapter listens on
//!   (redis's `ConnectionManager`). socketioxide-redis's own driver holds one connection that
//!   never reconnects: after Redis restarted, an order replica heard no other replica's emits
//!   and every emit of its own failed, until the process restarted.
//! - A publish never waits on Redis: it is queued for a task of its own, and the adapter, which
//!   publishes an emit to the other replicas before it hands it to this replica's sockets, goes
//!   on at once. While Redis is away or slow, this replica's sockets still hear their tenant's
//!   news as it happens; what the queue cannot hold is dropped for the other replicas, logged.
//! - A watchdog pings Redis every [`WATCH_EVERY`]. A link that broke while nothing was emitted is
//!   mended before the next emit needs it; one whose pings keep timing out (a connection that
//!   died without a word, which the manager does not take for a broken one) is replaced by a
//!   new one, subscribed to the same channels.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncCommands, FromRedisValue, PushInfo, PushKind};
use socketioxide_redis::drivers::{ChanItem, Driver, MessageStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// How long one attempt to connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one command may take.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two attempts to reconnect.
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(2);
/// How often the watchdog pings Redis.
pub const WATCH_EVERY: Duration = Duration::from_secs(2);
/// Failed pings in a row after which the link is replaced.
const REPLACE_AFTER: u32 = 3;
/// Publishes waiting for Redis at most.
const PUBLISH_QUEUE: usize = 4_096;

type Handlers = Arc<RwLock<HashMap<String, mpsc::Sender<ChanItem>>>>;

/// A [`Driver`] on a connection that reconnects. Clones share the link and the handlers.
#[derive(Clone)]
pub struct ManagedDriver {
    handlers: Handlers,
    link: Arc<Link>,
}

struct Link {
    client: redis::Client,
    conn: RwLock<ConnectionManager>,
    publish: mpsc::Sender<(String, Vec<u8>)>,
}

impl Link {
    fn conn(&self) -> ConnectionManager {
        self.conn
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ManagedDriver {
    /// Connects through `client`, which must speak RESP3 (pub/sub messages arrive as pushes).
    pub async fn connect(client: &redis::Client) -> redis::RedisResult<Self> {
        let handlers = Handlers::default();
        let conn = open(client, &handlers).await?;
        let (publish, queue) = mpsc::channel(PUBLISH_QUEUE);
        let link = Arc::new(Link {
            client: client.clone(),
            conn: RwLock::new(conn),
            publish,
        });
        tokio::spawn(publisher(Arc::downgrade(&link), queue));
        Ok(Self { handlers, link })
    }

    /// Pings Redis every [`WATCH_EVERY`] until `stop`: a failed ping makes the connection
    /// reconnect and subscribe again, and [`REPLACE_AFTER`] in a row replace it.
    pub async fn watch(self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(WATCH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = 0_u32;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let mut conn = self.link.conn();
            match redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) if failed > 0 => {
                    tracing::info!("the Socket.IO Redis adapter reaches Redis again");
                    failed = 0;
                }
                Ok(_) => {}
                Err(error) => {
                    failed += 1;
                    if failed == 1 {
                        tracing::warn!(%error, "the Socket.IO Redis adapter lost Redis; other replicas' emits wait until it returns");
                    }
                    if failed.is_multiple_of(REPLACE_AFTER) {
                        self.replace().await;
                    }
                }
            }
        }
    }

    /// A new link in place of the current one, listening on the same channels.
    async fn replace(&self) {
        let conn = match open(&self.link.client, &self.handlers).await {
            Ok(conn) => conn,
            Err(error) => {
                tracing::debug!(%error, "the Socket.IO Redis adapter could not open a new link yet");
                return;
            }
        };
        let channels: Vec<String> = self.handlers().keys().cloned().collect();
        for channel in &channels {
            if let Err(error) = conn.clone().subscribe(channel).await {
                tracing::debug!(%error, "the new link could not listen yet; kept the old one");
                return;
            }
        }
        *self
            .link
            .conn
            .write()
            .unwrap_or_else(PoisonError::into_inner) = conn;
        tracing::info!(
            channels = channels.len(),
            "the Socket.IO Redis adapter replaced its link to Redis"
        );
    }

    fn handlers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, mpsc::Sender<ChanItem>>> {
        self.handlers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// A connection through `client` whose pushes go to `handlers`.
async fn open(
    client: &redis::Client,
    handlers: &Handlers,
) -> redis::RedisResult<ConnectionManager> {
    let routed = handlers.clone();
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_max_delay(MAX_RECONNECT_DELAY)
        // One attempt per trigger: a command while Redis is away fails at once instead of
        // waiting out a series; the watchdog triggers the next.
        .set_number_of_retries(1)
        .set_push_sender(move |push: PushInfo| {
            route(push, &routed);
            Ok::<(), std::convert::Infallible>(())
        })
        .set_automatic_resubscription();
    ConnectionManager::new_with_config(client.clone(), config).await
}

/// Publishes what is queued, in order, on the link of the moment, until the driver is dropped.
async fn publisher(link: Weak<Link>, mut queue: mpsc::Receiver<(String, Vec<u8>)>) {
    while let Some((channel, message)) = queue.recv().await {
        let Some(mut conn) = link.upgrade().map(|link| link.conn()) else {
            return;
        };
        let published = conn.publish::<_, _, redis::Value>(&channel, message).await;
        if let Err(error) = published {
            tracing::warn!(%error, "a Socket.IO emit did not reach the other replicas");
        }
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
        if self.link.publish.try_send((chan, val)).is_err() {
            tracing::warn!(
                "Redis is too slow for the Socket.IO emits; one did not reach the other replicas"
            );
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
        if let Err(error) = self.link.conn().subscribe(&chan).await {
            self.handlers().remove(&chan);
            return Err(error);
        }
        Ok(MessageStream::new(rx))
    }

    async fn unsubscribe(&self, chan: String) -> Result<(), Self::Error> {
        self.handlers().remove(&chan);
        self.link.conn().unsubscribe(&chan).await
    }

    async fn num_serv(&self, chan: &str) -> Result<u16, Self::Error> {
        let mut conn = self.link.conn();
        let (_, count): (String, u16) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(chan)
            .query_async(&mut conn)
            .await?;
        Ok(count)
    }
}
