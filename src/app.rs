//! Start-up: everything a role needs before it can serve, built once and shared.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::identity;
use crate::infra::db::Db;
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;
use crate::observability::metrics;
use crate::roles::Role;

/// What every part of a running role shares; handlers reach it through their router's state.
pub struct AppContext {
    pub role: Role,
    pub config: Arc<Config>,
    pub db: Db,
    /// Present when `redis.url` is configured: the distributed implementation of the ports.
    pub redis: Option<RedisHandle>,
    pub metrics: PrometheusHandle,
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
        let workers = Workers::new();
        metrics::spawn_upkeep(&workers, metrics.clone());
        Ok(Arc::new(Self {
            role,
            config: Arc::new(config),
            db,
            redis,
            metrics,
            workers,
            started,
        }))
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}
