//! Start-up: everything a role needs before it can serve, built once and shared.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::events::bus::{self, EventBus};
use crate::identity;
use crate::infra::db::Db;
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;
use crate::observability::metrics;
use crate::roles::Role;

/// Whether this process has an event bus, and if not, why.
pub enum BusState {
    Ready(Arc<EventBus>),
    /// No storage for queues in this configuration.
    NotConfigured(String),
    /// Configured, but it could not start (Redis unreachable at start-up).
    Failed(String),
}

/// What every part of a running role shares; handlers reach it through their router's state.
pub struct AppContext {
    pub role: Role,
    pub config: Arc<Config>,
    pub db: Db,
    /// Present when `redis.url` is configured: the distributed implementation of the ports.
    pub redis: Option<RedisHandle>,
    pub metrics: PrometheusHandle,
    pub bus: BusState,
    pub workers: Workers,
    pub started: Instant,
}

impl AppContext {
    /// Connects the database, applies migrations, creates the first tenant and admin on an empty
    /// database, and prepares the Redis connection when one is configured.
    pub async fn start(role: Role, config: Config) -> anyhow::Result<Arc<Self>> {
        let started = Instant::now();
        let metrics = metrics::install();
        let db = Db::connect(
            config.database.url.expose(),
            config.database.max_connections,
        )
        .await?;
        db.migrate().await?;
        identity::bootstrap::ensure_first_admin(&db, config.admin_password.as_ref())
            .await
            .context("creating the first tenant and admin user")?;
        let redis = match &config.redis.url {
            Some(url) => Some(RedisHandle::open(url, &config.redis.key_prefix)?),
            None => None,
        };
        let bus = match bus::open(&db, redis.as_ref()).await {
            Ok(Some(bus)) => BusState::Ready(Arc::new(bus)),
            Ok(None) => BusState::NotConfigured(
                "PostgreSQL without Redis has no queue storage: set redis.url".to_owned(),
            ),
            Err(e) => {
                tracing::error!(error = %e, "the event bus could not start; events wait in the outbox");
                BusState::Failed(e.to_string())
            }
        };
        let workers = Workers::new();
        metrics::spawn_upkeep(&workers, metrics.clone());
        Ok(Arc::new(Self {
            role,
            config: Arc::new(config),
            db,
            redis,
            metrics,
            bus,
            workers,
            started,
        }))
    }

    /// The event bus, when this process has one.
    pub fn bus(&self) -> Option<&Arc<EventBus>> {
        match &self.bus {
            BusState::Ready(bus) => Some(bus),
            _ => None,
        }
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
