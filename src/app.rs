//! Start-up: everything a role needs before it can serve, built once and shared.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use axum::Router;
use axum::extract::FromRef;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::config::Config;
use crate::config::Role;
use crate::events::bus::{self, EventBus};
use crate::health::{self, CheckResult, HealthReport};
use crate::identity;
use crate::identity::context::ContextVerifier;
use crate::infra::db::Db;
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;
use crate::observability::metrics;

/// Whether this process's event bus runs (every configuration has one, SPEC §2), and if not, why.
#[derive(Clone)]
pub enum BusState {
    Ready(Arc<EventBus>),
    /// Its storage did not answer yet (Redis or PostgreSQL unreachable); opening it is retried
    /// with backoff, and events wait in the outbox meanwhile.
    Starting(String),
}

/// The longest wait between two attempts to open the bus.
const BUS_RETRY_MAX: Duration = Duration::from_secs(30);

/// What every part of a running role shares, built once at start-up. `roles.rs` hands the
/// services' router states only the parts their handlers use.
pub struct AppContext {
    pub role: Role,
    pub config: Arc<Config>,
    pub db: Db,
    /// Present when `redis.url` is configured: the distributed implementation of the ports.
    pub redis: Option<RedisHandle>,
    pub metrics: PrometheusHandle,
    bus: std::sync::RwLock<BusState>,
    pub workers: Workers,
    pub started: Instant,
}

impl AppContext {
    /// Connects the database, applies migrations, creates the first tenant and admin on an empty
    /// database, and prepares the Redis connection when one is configured.
    pub async fn start(role: Role, config: Config) -> anyhow::Result<Arc<Self>> {
        let started = Instant::now();
        let metrics = metrics::install();
        let db = Db::connect(config.database.url.expose(), config.database.pool_size()).await?;
        db.migrate().await?;
        identity::bootstrap::ensure_first_admin(&db, config.admin_password.as_ref())
            .await
            .context("creating the first tenant and admin user")?;
        let redis = match &config.redis.url {
            Some(url) => Some(
                RedisHandle::open(url, &config.redis.key_prefix)?
                    .per_connection_thread(config.server.connection_threads()),
            ),
            None => None,
        };
        let bus = match bus::open(&db, redis.as_ref()).await {
            Ok(bus) => BusState::Ready(Arc::new(bus)),
            Err(e) => {
                tracing::error!(error = %e, "the event bus could not start; retrying, events wait in the outbox");
                BusState::Starting(e.to_string())
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
            bus: std::sync::RwLock::new(bus),
            workers,
            started,
        }))
    }

    /// The event bus, when this process has one running.
    pub fn bus(&self) -> Option<Arc<EventBus>> {
        match &*self
            .bus
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            BusState::Ready(bus) => Some(bus.clone()),
            _ => None,
        }
    }

    pub fn bus_state(&self) -> BusState {
        self.bus
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_bus_state(&self, state: BusState) {
        *self
            .bus
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = state;
    }

    /// Calls `on_ready` with the bus once it runs: at once when it does already, else after the
    /// background retries (1 s, doubling to 30 s) open its storage. `on_ready`'s failure at once
    /// fails start-up; later, it is logged.
    pub fn when_bus_ready<F>(self: &Arc<Self>, on_ready: F) -> anyhow::Result<()>
    where
        F: FnOnce(Arc<EventBus>) -> anyhow::Result<()> + Send + 'static,
    {
        match self.bus_state() {
            BusState::Ready(bus) => on_ready(bus),
            BusState::Starting(_) => {
                let ctx = self.clone();
                self.workers.spawn("bus-open", move |stop| async move {
                    let mut wait = Duration::from_secs(1);
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => return,
                            () = tokio::time::sleep(wait) => {}
                        }
                        match bus::open(&ctx.db, ctx.redis.as_ref()).await {
                            Ok(bus) => {
                                let bus = Arc::new(bus);
                                ctx.set_bus_state(BusState::Ready(bus.clone()));
                                tracing::info!("the event bus is running");
                                if let Err(e) = on_ready(bus) {
                                    tracing::error!(error = %e, "starting the bus's workers failed");
                                }
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, retry_in = ?wait, "the event bus still cannot start");
                                ctx.set_bus_state(BusState::Starting(e.to_string()));
                                wait = (wait * 2).min(BUS_RETRY_MAX);
                            }
                        }
                    }
                });
                Ok(())
            }
        }
    }

    pub fn uptime_seconds(&self) -> u64 {
        self.started.elapsed().as_secs()
    }
}

/// The process's own health, for the probes and health endpoints of the services it runs: all
/// they may ask of the process (whether its database, Redis and bus answer; its metrics), without a
/// way to reach them for anything else.
#[derive(Clone)]
pub struct Readiness(Arc<AppContext>);

impl Readiness {
    pub fn of(ctx: &Arc<AppContext>) -> Self {
        Self(ctx.clone())
    }

    pub async fn report(&self) -> HealthReport {
        health::readiness(&self.0).await
    }

    /// The checks of the process's own dependencies, for a service to add its own to.
    pub async fn own_checks(&self) -> BTreeMap<String, CheckResult> {
        health::own_dependencies(&self.0).await
    }

    /// The report of `checks`, with this process's version and uptime.
    pub fn report_of(&self, checks: BTreeMap<String, CheckResult>) -> HealthReport {
        HealthReport::new(&self.0, checks)
    }

    /// This process's metrics in the Prometheus text format.
    pub fn metrics(&self) -> String {
        self.0.metrics.render()
    }

    /// Liveness, readiness and metrics of this process, as every role serves them.
    pub fn probes(&self) -> Router {
        let (probes, _) = health::probe_routes().split_for_parts();
        probes.with_state(self.clone())
    }
}

/// The event bus once it runs (it starts after the routes do), for the queue dashboard.
#[derive(Clone)]
pub struct BusHandle(Arc<AppContext>);

impl BusHandle {
    pub fn of(ctx: &Arc<AppContext>) -> Self {
        Self(ctx.clone())
    }

    /// `None` until the bus runs.
    pub fn get(&self) -> Option<Arc<EventBus>> {
        self.0.bus()
    }
}

/// For what holds the whole context rather than a router state (the Socket.IO handshake).
impl FromRef<Arc<AppContext>> for ContextVerifier {
    fn from_ref(ctx: &Arc<AppContext>) -> Self {
        ContextVerifier::from_config(&ctx.config)
    }
}
