//! The Redis connection shared by the distributed implementations of the ports.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::{Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::OnceCell;

use crate::config::SecretUrl;
use crate::infra::connection_threads::PerThread;

/// A lazily connected, self-reconnecting Redis connection (one per connection thread, see
/// [`RedisHandle::per_connection_thread`]). Cheap to clone.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    /// A multiplexed connection is driven by a task on the runtime that opened it: a request on a
    /// connection thread that used another thread's would hop there and back on every command.
    managers: Arc<PerThread<OnceCell<ConnectionManager>>>,
    prefix: String,
    url: SecretUrl,
}

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis.url {url}: {source}")]
    Open {
        url: String,
        source: redis::RedisError,
    },
    #[error("redis {url}: {source}")]
    Command {
        url: String,
        source: redis::RedisError,
    },
    #[error("redis {url}: no answer within {timeout:?}")]
    Timeout { url: String, timeout: Duration },
}

impl RedisHandle {
    /// Validates the URL; the connection is made on first use, so start-up does not wait on Redis.
    pub fn open(url: &SecretUrl, key_prefix: &str) -> Result<Self, RedisError> {
        let client = redis::Client::open(url.expose()).map_err(|source| RedisError::Open {
            url: url.masked(),
            source,
        })?;
        Ok(Self {
            client,
            managers: Arc::new(PerThread::new(0, OnceCell::new)),
            prefix: key_prefix.to_owned(),
            url: url.clone(),
        })
    }

    /// The same Redis with a connection of its own for each of `threads` connection threads
    /// (`server.connection_threads`), opened on first use there.
    pub fn per_connection_thread(mut self, threads: usize) -> Self {
        self.managers = Arc::new(PerThread::new(threads, OnceCell::new));
        self
    }

    /// The prefix every key forma writes starts with.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// The calling thread's connection; reconnects by itself after Redis restarts.
    pub async fn connection(&self) -> Result<RedisConnection, RedisError> {
        self.manager().await.map(RedisConnection::new)
    }

    /// The calling thread's connection manager itself, for a library that wants one.
    pub async fn manager(&self) -> Result<ConnectionManager, RedisError> {
        let manager = self
            .managers
            .get()
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(2)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(2);
                ConnectionManager::new_with_config(self.client.clone(), config).await
            })
            .await
            .map_err(|source| RedisError::Command {
                url: self.url.masked(),
                source,
            })?;
        Ok(manager.clone())
    }

    /// A dedicated connection for `SUBSCRIBE` (a subscribed connection can do nothing else). It
    /// does not reconnect: when Redis goes away its message stream ends and the caller opens a
    /// new one.
    pub async fn pubsub(&self) -> Result<redis::aio::PubSub, RedisError> {
        self.client
            .get_async_pubsub()
            .await
            .map_err(|source| RedisError::Command {
                url: self.url.masked(),
                source,
            })
    }

    /// One `PING`, bounded by `timeout`; returns how long it took.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, RedisError> {
        let started = Instant::now();
        let ping = async {
            let mut conn = self.connection().await?;
            redis::cmd("PING")
                .query_async::<String>(&mut conn)
                .await
                .map_err(|source| RedisError::Command {
                    url: self.url.masked(),
                    source,
                })
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(result) => result.map(|_| started.elapsed()),
            Err(_) => Err(RedisError::Timeout {
                url: self.url.masked(),
                timeout,
            }),
        }
    }
}

/// A connection from [`RedisHandle::connection`]. A command that finds its connection dropped
/// (Redis restarted, the network broke) is sent once more, on the connection the manager opens
/// again, rather than failing: otherwise the first request after every outage would fail, on
/// every connection thread's connection. Every command forma sends may run twice in that case:
/// they set, read or delete, and a rate-limit step counted twice costs one request of budget.
#[derive(Clone)]
pub struct RedisConnection(ConnectionManager);

impl RedisConnection {
    pub fn new(manager: ConnectionManager) -> Self {
        Self(manager)
    }
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match self.0.send_packed_command(cmd).await {
                Err(error) if error.is_connection_dropped() => {
                    self.0.send_packed_command(cmd).await
                }
                answered => answered,
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match self.0.send_packed_commands(pipeline, offset, count).await {
                Err(error) if error.is_connection_dropped() => {
                    self.0.send_packed_commands(pipeline, offset, count).await
                }
                answered => answered,
            }
        })
    }

    fn get_db(&self) -> i64 {
        self.0.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{free_port, redis_server};

    #[tokio::test]
    async fn a_command_after_redis_restarted_is_answered_not_failed() {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = redis_server(port, dir.path()).await;
        let url = SecretUrl::new(format!("redis://127.0.0.1:{port}"));
        let handle = RedisHandle::open(&url, "restart:").unwrap();
        let mut conn = handle.connection().await.unwrap();
        redis::cmd("SET")
            .arg("restart:k")
            .arg("kept")
            .exec_async(&mut conn)
            .await
            .unwrap();

        server.kill().await.unwrap();
        let _server = redis_server(port, dir.path()).await;
        // The connection that was open when Redis went away: its first command is sent again
        // on a new one.
        let value: Option<String> = redis::cmd("GET")
            .arg("restart:k")
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(value.as_deref(), Some("kept"));
        let mut pipe = redis::pipe();
        pipe.cmd("GET").arg("restart:k");
        let (again,): (String,) = pipe.query_async(&mut conn).await.unwrap();
        assert_eq!(again, "kept");
    }
}
