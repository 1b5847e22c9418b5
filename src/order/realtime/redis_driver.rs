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
//! - A link that answers listens on every channel the adapter listens on: the watchdog counts
//!   the link's subscriptions (`CLIENT INFO`, Redis 6.2 or newer) and subscribes again when some
//!   are missing. The manager subscribes again after it reconnects, but says nothing when that
//!   fails (Redis refused it, e.g. an ACL that denied the channels at that moment): the replica
//!   would stay deaf to the others until it restarted.

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
    /// Whether `CLIENT INFO` failed once (said once, not every [`WATCH_EVERY`]).
    uncounted: Arc<std::sync::atomic::AtomicBool>,
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
        Ok(Self {
            handlers,
            link,
            uncounted: Arc::default(),
        })
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
                Ok(_) => {
                    if failed > 0 {
                        tracing::info!("the Socket.IO Redis adapter reaches Redis again");
                        failed = 0;
                    }
                    self.listen_again(&mut conn).await;
                }
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

    /// Subscribes `conn` again to the adapter's channels when it listens on fewer of them.
    async fn listen_again(&self, conn: &mut ConnectionManager) {
        let channels: Vec<String> = self.handlers().keys().cloned().collect();
        if channels.is_empty() {
            return;
        }
        let listening = match redis::cmd("CLIENT")
            .arg("INFO")
            .query_async::<String>(conn)
            .await
        {
            Ok(info) => subscriptions(&info),
            Err(error) => {
                if !self
                    .uncounted
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
                {
                    tracing::warn!(%error, "the Socket.IO Redis adapter cannot count its subscriptions (CLIENT INFO): a resubscription Redis refused after a reconnect is not mended");
                }
                return;
            }
        };
        if listening.is_none_or(|n| n >= channels.len()) {
            return;
        }
        for channel in &channels {
            if let Err(error) = conn.subscribe(channel).await {
                tracing::warn!(%error, "the Socket.IO Redis adapter could not listen again yet");
                return;
            }
        }
        tracing::warn!(
            channels = channels.len(),
            "the Socket.IO Redis adapter's link had stopped listening; it listens again"
        );
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

/// The channels a connection listens on, as `CLIENT INFO` tells it (`sub=`).
fn subscriptions(client_info: &str) -> Option<usize> {
    client_info
        .split_whitespace()
        .find_map(|field| field.strip_prefix("sub="))
        .and_then(|n| n.parse().ok())
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;
    use socketioxide_redis::drivers::Driver;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::testing::{free_port, redis_server};

    async fn acl(admin: &mut redis::aio::MultiplexedConnection, rule: &str) {
        redis::cmd("ACL")
            .arg("SETUSER")
            .arg("default")
            .arg(rule)
            .query_async::<()>(admin)
            .await
            .unwrap();
    }

    /// Redis drops the link and refuses its subscriptions while the manager reconnects (here its
    /// channel permissions are taken away, which also closes the link); once they are allowed
    /// again, the link hears the channel again without anyone subscribing by hand.
    #[tokio::test]
    async fn a_link_whose_resubscription_failed_listens_again() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let _redis = redis_server(port, dir.path()).await;
        let url = format!("redis://127.0.0.1:{port}/?protocol=resp3");
        let client = redis::Client::open(url).unwrap();
        let mut admin = client.get_multiplexed_async_connection().await.unwrap();
        let driver = ManagedDriver::connect(&client).await.unwrap();
        let mut news = driver.subscribe("news".to_owned(), 16).await.unwrap();
        let stop = CancellationToken::new();
        let _stop = stop.clone().drop_guard();
        tokio::spawn(driver.clone().watch(stop));
        let client_id = async |driver: &ManagedDriver| {
            let mut conn = driver.link.conn();
            redis::cmd("CLIENT")
                .arg("ID")
                .query_async::<i64>(&mut conn)
                .await
        };
        let first = client_id(&driver).await.unwrap();

        // No channel allowed: Redis closes the link, and the manager's new connection cannot
        // subscribe.
        acl(&mut admin, "resetchannels").await;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if client_id(&driver).await.is_ok_and(|id| id != first) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the link never reconnected"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        acl(&mut admin, "allchannels").await;

        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            redis::cmd("PUBLISH")
                .arg("news")
                .arg("hello")
                .query_async::<i64>(&mut admin)
                .await
                .unwrap();
            let heard = tokio::time::timeout(Duration::from_millis(200), news.next()).await;
            if let Ok(Some((channel, message))) = heard {
                assert_eq!(
                    (channel.as_str(), message.as_slice()),
                    ("news", &b"hello"[..])
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the link never listened again"
            );
        }
    }

    #[test]
    fn subscriptions_are_read_from_client_info() {
        let info = "id=7 addr=127.0.0.1:50000 laddr=127.0.0.1:6379 fd=8 name= db=0 sub=3 psub=0 ssub=0 multi=-1";
        assert_eq!(subscriptions(info), Some(3));
        assert_eq!(subscriptions("id=7 db=0"), None);
    }
}
