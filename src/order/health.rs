//! The order service's `/health`: its own dependencies.

use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::OrderState;
use crate::health::HealthReport;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new().routes(routes!(order_health))
}

/// The order service's health: its database and Redis.
#[utoipa::path(get, path = "/health", tag = "health", responses(
    (status = 200, description = "Healthy or degraded", body = HealthReport),
    (status = 503, description = "A critical dependency is down", body = HealthReport)))]
async fn order_health(
    axum::extract::State(state): axum::extract::State<OrderState>,
) -> HealthReport {
    let report = state.readiness.report().await;
    report.log_failures();
    report.public()
}
