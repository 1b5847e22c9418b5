//! Health (SPEC §5.4): the report shape every role's `/health` answers with, liveness, readiness,
//! and `/metrics`. The gateway's aggregated `/health` lives in `gateway::health`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{FromRef, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::app::{AppContext, BusState, Readiness};
use crate::http::extract::Json;

/// How long one dependency may take to answer a health check.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    Ok,
    Degraded,
    Down,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    Ok,
    Down,
    /// Not configured: neither healthy nor failing.
    Disabled,
}

/// One dependency's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    pub status: CheckStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<u64>,
    /// Whether this dependency being down makes the whole service down (503).
    pub critical: bool,
    /// What an anonymous caller may read: which state, never where or why in detail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Why, for operators: addresses, driver errors. Logged, and shown only in the authenticated
    /// view (`GET /api/v1/admin/health`), never in the public `/health`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// The gateway's circuit breaker towards this service: `closed`, `open` or `half_open`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit: Option<String>,
}

impl CheckResult {
    pub fn ok(latency: Duration) -> Self {
        Self {
            status: CheckStatus::Ok,
            latency_ms: Some(latency.as_millis() as u64),
            critical: true,
            message: None,
            detail: None,
            circuit: None,
        }
    }

    /// A failed check; `detail` says why, for the logs and the authenticated view only.
    pub fn down(detail: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Down,
            latency_ms: None,
            critical: true,
            message: Some("unavailable".to_owned()),
            detail: Some(detail.into()),
            circuit: None,
        }
    }

    /// Not configured; `message` (public) says which setting turns it on.
    pub fn disabled(message: impl Into<String>) -> Self {
        Self {
            status: CheckStatus::Disabled,
            latency_ms: None,
            critical: false,
            message: Some(message.into()),
            detail: None,
            circuit: None,
        }
    }

    /// Marks the dependency as one whose failure only degrades the service.
    pub fn non_critical(mut self) -> Self {
        self.critical = false;
        self
    }

    /// A public remark (`in-process`, `served by the order service`): nothing internal.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

/// `{status, version, uptimeSeconds, checks}`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HealthReport {
    pub status: HealthStatus,
    pub version: String,
    pub uptime_seconds: u64,
    pub checks: BTreeMap<String, CheckResult>,
}

impl HealthReport {
    /// Down if a critical check is down, degraded if any other is, else ok.
    pub fn new(ctx: &AppContext, checks: BTreeMap<String, CheckResult>) -> Self {
        let down = |c: &&CheckResult| c.status == CheckStatus::Down;
        let status = if checks.values().filter(down).any(|c| c.critical) {
            HealthStatus::Down
        } else if checks.values().any(|c| c.status == CheckStatus::Down) {
            HealthStatus::Degraded
        } else {
            HealthStatus::Ok
        };
        Self {
            status,
            version: crate::VERSION.to_owned(),
            uptime_seconds: ctx.uptime_seconds(),
            checks,
        }
    }

    /// The report as anyone may read it: the same states, without the details.
    pub fn public(mut self) -> Self {
        for check in self.checks.values_mut() {
            check.detail = None;
        }
        self
    }

    /// Logs every failing check with its detail: the place operators find what `public` hides.
    pub fn log_failures(&self) {
        for (name, check) in &self.checks {
            if check.status == CheckStatus::Down || check.detail.is_some() {
                tracing::warn!(
                    check = name.as_str(),
                    status = ?check.status,
                    detail = check.detail.as_deref().unwrap_or_default(),
                    "health check reports a problem"
                );
            }
        }
    }

    pub fn http_status(&self) -> StatusCode {
        match self.status {
            HealthStatus::Down => StatusCode::SERVICE_UNAVAILABLE,
            HealthStatus::Ok | HealthStatus::Degraded => StatusCode::OK,
        }
    }
}

impl IntoResponse for HealthReport {
    fn into_response(self) -> axum::response::Response {
        (self.http_status(), Json(self)).into_response()
    }
}

/// The process's own dependencies: its database and, when configured, Redis. Checked concurrently.
pub async fn own_dependencies(ctx: &AppContext) -> BTreeMap<String, CheckResult> {
    let database = async {
        match tokio::time::timeout(CHECK_TIMEOUT, ctx.db.ping()).await {
            Ok(Ok(latency)) => CheckResult::ok(latency),
            Ok(Err(e)) => CheckResult::down(e.to_string()),
            Err(_) => CheckResult::down(format!("no answer within {CHECK_TIMEOUT:?}")),
        }
    };
    let redis = async {
        match &ctx.redis {
            None => CheckResult::disabled("redis.url is not set: embedded ports in use"),
            // The ports that use Redis fall back or retry; losing it degrades, it does not kill.
            Some(redis) => match redis.ping(CHECK_TIMEOUT).await {
                Ok(latency) => CheckResult::ok(latency).non_critical(),
                Err(e) => CheckResult::down(e.to_string()).non_critical(),
            },
        }
    };
    let (database, redis) = tokio::join!(database, redis);
    let bus = bus_check(ctx).await;
    let mut checks = BTreeMap::from([
        ("database".to_owned(), database),
        ("redis".to_owned(), redis),
        ("bus".to_owned(), bus),
    ]);
    // The print farm's integration lives where the print service runs: not at a lone gateway.
    if ctx.role != crate::config::Role::Gateway {
        let simplyprint = &ctx.config.simplyprint;
        let check = if simplyprint.api_key.is_some() && simplyprint.company_id.is_some() {
            CheckResult::ok(Duration::ZERO)
                .non_critical()
                .with_message("connected")
        } else {
            CheckResult::disabled(
                "disconnected: print jobs wait QUEUED until simplyprint.api_key and \
                 simplyprint.company_id are set",
            )
        };
        checks.insert("simplyprint".to_owned(), check);
    }
    checks
}

/// Events may wait this long in the outbox before the bus counts as not keeping up.
const OUTBOX_LAG_LIMIT: Duration = Duration::from_secs(60);

/// Whether this process's bus runs and, where events are published (the order role), keeps up:
/// events waiting in the outbox longer than [`OUTBOX_LAG_LIMIT`] mean the bus lost its storage
/// or cannot keep up. Losing it degrades the service, it does not take it down: events wait.
async fn bus_check(ctx: &AppContext) -> CheckResult {
    match ctx.bus_state() {
        BusState::Starting(why) => CheckResult::down(why)
            .non_critical()
            .with_message("starting: events wait in the outbox"),
        BusState::Ready(_) if ctx.role == crate::config::Role::Gateway => {
            CheckResult::ok(Duration::ZERO).non_critical()
        }
        BusState::Ready(_) => {
            match tokio::time::timeout(CHECK_TIMEOUT, crate::events::outbox::backlog(&ctx.db)).await
            {
                Ok(Ok(backlog)) if backlog.lag > OUTBOX_LAG_LIMIT => CheckResult::down(format!(
                    "{} events waiting, the oldest for {}s",
                    backlog.pending,
                    backlog.lag.as_secs()
                ))
                .non_critical()
                .with_message("events are waiting to be published"),
                Ok(Ok(_)) => CheckResult::ok(Duration::ZERO).non_critical(),
                // The database check says why.
                _ => CheckResult::ok(Duration::ZERO).non_critical(),
            }
        }
    }
}

/// The readiness of this process alone.
pub async fn readiness(ctx: &AppContext) -> HealthReport {
    HealthReport::new(ctx, own_dependencies(ctx).await)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Liveness {
    pub status: HealthStatus,
}

/// Liveness, readiness and metrics, mounted by every role.
pub fn probe_routes<S>() -> OpenApiRouter<S>
where
    S: Clone + Send + Sync + 'static,
    Readiness: FromRef<S>,
{
    OpenApiRouter::new()
        .routes(routes!(live))
        .routes(routes!(live_short))
        .routes(routes!(ready))
        .routes(routes!(ready_short))
        .routes(routes!(metrics))
}

/// The process answers.
#[utoipa::path(get, path = "/health/live", tag = "health",
    responses((status = 200, description = "The process is alive", body = Liveness)))]
async fn live() -> Json<Liveness> {
    Json(Liveness {
        status: HealthStatus::Ok,
    })
}

/// Same as `/health/live`.
#[utoipa::path(get, path = "/live", tag = "health",
    responses((status = 200, description = "The process is alive", body = Liveness)))]
async fn live_short() -> Json<Liveness> {
    live().await
}

/// The process's own dependencies (database, Redis) answer.
#[utoipa::path(get, path = "/health/ready", tag = "health", responses(
    (status = 200, description = "Ready to serve", body = HealthReport),
    (status = 503, description = "A dependency is down", body = HealthReport)))]
async fn ready(State(readiness): State<Readiness>) -> HealthReport {
    let report = readiness.report().await;
    report.log_failures();
    report.public()
}

/// Same as `/health/ready`.
#[utoipa::path(get, path = "/ready", tag = "health", responses(
    (status = 200, description = "Ready to serve", body = HealthReport),
    (status = 503, description = "A dependency is down", body = HealthReport)))]
async fn ready_short(state: State<Readiness>) -> HealthReport {
    ready(state).await
}

/// Prometheus text exposition of this process's metrics.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
async fn metrics(State(readiness): State<Readiness>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        readiness.metrics(),
    )
}
