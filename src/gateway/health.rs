//! The gateway's `/health` (SPEC §5.4): every configured service, the database and Redis, checked
//! concurrently with a short timeout. The report is cached for a moment and computed by one caller
//! at a time, so a flood of health checks does not become a flood downstream.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use axum::extract::State;
use tokio::sync::Mutex;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::GatewayState;
use super::auth::CurrentUser;
use super::proxy::breaker::BreakerState;
use crate::clients::http::ServiceEndpoints;
use crate::config::Config;
use crate::health::{CheckResult, CheckStatus, HealthReport};
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};

/// How long a computed report is served again.
const CACHE_TTL: Duration = Duration::from_secs(2);

/// The downstream services besides the order service, and the cached report.
pub struct HealthAggregator {
    print: Option<ServiceEndpoints>,
    shipping: Option<ServiceEndpoints>,
    gridflock: Option<ServiceEndpoints>,
    cached: Mutex<Option<(Instant, HealthReport)>>,
}

impl HealthAggregator {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let endpoints =
            |urls: &crate::config::UrlList| -> anyhow::Result<Option<ServiceEndpoints>> {
                if urls.is_empty() {
                    Ok(None)
                } else {
                    Ok(Some(ServiceEndpoints::new(urls.0.clone(), config)?))
                }
            };
        Ok(Self {
            print: endpoints(&config.services.print_url)?,
            shipping: endpoints(&config.services.shipping_url)?,
            gridflock: endpoints(&config.services.gridflock_url)?,
            cached: Mutex::new(None),
        })
    }

    pub async fn report(&self, state: &GatewayState) -> HealthReport {
        let mut cached = self.cached.lock().await;
        if let Some((at, report)) = cached.as_ref() {
            if at.elapsed() < CACHE_TTL {
                return report.clone();
            }
        }
        let report = self.compute(state).await;
        report.log_failures();
        *cached = Some((Instant::now(), report.clone()));
        report
    }

    async fn compute(&self, state: &GatewayState) -> HealthReport {
        // Print and shipping still live in the order role until their URLs are configured.
        let fallback = |service: &Option<ServiceEndpoints>| {
            let service = service.clone();
            async move {
                match service {
                    Some(endpoints) => Some(endpoints.health().await.non_critical()),
                    None => None,
                }
            }
        };
        let (order, print, shipping, gridflock, own) = tokio::join!(
            state.order.health(),
            fallback(&self.print),
            fallback(&self.shipping),
            fallback(&self.gridflock),
            state.readiness.own_checks(),
        );
        let served_by_order = || {
            order
                .clone()
                .non_critical()
                .with_message("served by the order service")
        };
        let mut checks = BTreeMap::new();
        checks.insert("print".to_owned(), print.unwrap_or_else(served_by_order));
        checks.insert(
            "shipping".to_owned(),
            shipping.unwrap_or_else(served_by_order),
        );
        checks.insert(
            "gridflock".to_owned(),
            gridflock.unwrap_or_else(|| {
                CheckResult::disabled("services.gridflock_url is not set: its routes answer 503")
            }),
        );
        checks.insert("order".to_owned(), order);
        for upstream in state.proxy.http_upstreams() {
            if let Some(check) = checks.get_mut(upstream.service().as_str()) {
                let circuit = upstream.breaker().state();
                check.circuit = Some(circuit.as_str().to_owned());
                // Its instances may answer a probe, but users get 503s: not ok. Degraded rather
                // than down, since the gateway itself serves and the breaker will try again.
                if circuit == BreakerState::Open && check.status == CheckStatus::Ok {
                    check.status = CheckStatus::Down;
                    check.critical = false;
                    check.message = Some("circuit open: requests are answered 503".to_owned());
                }
            }
        }
        checks.extend(own);
        if state.limiter.is_shared() {
            let limiter = if state.limiter.is_degraded() {
                CheckResult::down("Redis unreachable")
                    .with_message("limits are counted per replica until Redis answers")
            } else {
                CheckResult::ok(Duration::ZERO)
            };
            checks.insert("rateLimit".to_owned(), limiter.non_critical());
        }
        state.readiness.report_of(checks)
    }
}

pub fn routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(gateway_health))
        .routes(routes!(health_details))
}

/// Health of the gateway and everything behind it: the order service (and print, shipping and
/// GridFlock when configured), the database and Redis.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Healthy or degraded", body = HealthReport),
    (status = 503, description = "A critical dependency is down", body = HealthReport)))]
async fn gateway_health(State(state): State<GatewayState>) -> HealthReport {
    state.health.report(&state).await.public()
}

/// The gateway's health report with what the public `/health` leaves out: which address failed
/// and how. The deployment's, not a tenant's: super admins only. Always 200: the report itself
/// says down.
#[utoipa::path(get, path = "/api/v1/admin/health", tag = "health", responses(
    (status = 200, description = "The full report, details included", body = HealthReport),
    (status = 401, description = "Not signed in", body = ErrorBody),
    (status = 403, description = "Not a super admin", body = ErrorBody)))]
async fn health_details(
    State(state): State<GatewayState>,
    CurrentUser(auth): CurrentUser,
) -> Result<Json<HealthReport>, ApiError> {
    if !auth.context.is_super_admin {
        return Err(ApiError::forbidden(
            "The deployment's health details are for super admins",
        ));
    }
    Ok(Json(state.health.report(&state).await))
}
