//! The Redis connection shared by the distributed implementations of the ports.

use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::config::SecretUrl;

/// A lazily connected, self-reconnecting Redis connection. Cheap to clone.
#[derive(Clone)]
pub struct RedisHandle {
    client: redis::Client,
    manager: std::sync::Arc<OnceCell<ConnectionManager>>,
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
            manager: Default::default(),
            prefix: key_prefix.to_owned(),
            url: url.clone(),
        })
    }

    /// The prefix every key forma writes starts with.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    /// A connection; reconnects by itself after Redis restarts.
    pub async fn connection(&self) -> Result<ConnectionManager, RedisError> {
        let manager = self
            .manager
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
