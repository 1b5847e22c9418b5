//! A TCP stand-in for Redis the test controls: refuses service (accepts and hangs up), hangs
//! (accepts and never answers), or forwards to the real test Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};

use crate::config::SecretUrl;
use crate::infra::redis::RedisHandle;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Refuse,
    Hang,
}

pub struct FakeRedis {
    url: SecretUrl,
    prefix: String,
    connections: Arc<AtomicUsize>,
    forward: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeRedis {
    pub async fn start(mode: Mode) -> Self {
        let real = std::env::var(crate::testing::REDIS_URL_ENV)
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let mut url = url::Url::parse(&real).expect("a Redis URL");
        let upstream = format!(
            "{}:{}",
            url.host_str().expect("a Redis host"),
            url.port().unwrap_or(6379)
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let port = listener.local_addr().expect("an address").port();
        url.set_host(Some("127.0.0.1")).expect("a host");
        url.set_port(Some(port)).expect("a port");

        let connections = Arc::new(AtomicUsize::new(0));
        let forward = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let connections = connections.clone();
            let forward = forward.clone();
            async move {
                let mut held = Vec::new();
                while let Ok((mut socket, _)) = listener.accept().await {
                    if forward.load(Ordering::SeqCst) {
                        let upstream = upstream.clone();
                        tokio::spawn(async move {
                            if let Ok(mut redis) = TcpStream::connect(upstream).await {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut socket, &mut redis).await;
                            }
                        });
                        continue;
                    }
                    connections.fetch_add(1, Ordering::SeqCst);
                    match mode {
                        Mode::Refuse => drop(socket),
                        Mode::Hang => held.push(socket),
                    }
                }
            }
        });
        Self {
            url: SecretUrl::new(url.as_str()),
            prefix: format!("forma_test_{}:", uuid::Uuid::new_v4().simple()),
            connections,
            forward,
            task,
        }
    }

    /// A fresh handle to the fake; every handle shares one key prefix.
    pub fn handle(&self) -> RedisHandle {
        RedisHandle::open(&self.url, &self.prefix).expect("a valid Redis URL")
    }

    /// Connections turned away so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// From now on, new connections reach the real Redis.
    pub fn forward_to_redis(&self) {
        self.forward.store(true, Ordering::SeqCst);
    }
}

impl Drop for FakeRedis {
    fn drop(&mut self) {
        self.task.abort();
    }
}
