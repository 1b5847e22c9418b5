//! How the gateway reaches the order service.

use std::time::Instant;

use async_trait::async_trait;

use super::http::ServiceEndpoints;
use crate::config::Config;
use crate::health::{self, CheckResult, HealthStatus};
use crate::order::OrderState;

#[async_trait]
pub trait OrderClient: Send + Sync {
    /// Whether the order service is ready to serve.
    async fn health(&self) -> CheckResult;
}

/// Role `all`: the order service lives in this process.
pub struct InProcessOrderClient {
    order: OrderState,
}

impl InProcessOrderClient {
    pub fn new(order: OrderState) -> Self {
        Self { order }
    }
}

#[async_trait]
impl OrderClient for InProcessOrderClient {
    async fn health(&self) -> CheckResult {
        let started = Instant::now();
        let report = health::readiness(&self.order.ctx).await;
        match report.status {
            HealthStatus::Down => {
                CheckResult::down("the order service's own dependencies are down")
            }
            HealthStatus::Ok | HealthStatus::Degraded => CheckResult::ok(started.elapsed()),
        }
        .with_message("in-process")
    }
}

/// Split roles: the order service's instances, over HTTP.
pub struct HttpOrderClient {
    endpoints: ServiceEndpoints,
}

impl HttpOrderClient {
    pub fn new(instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        Ok(Self {
            endpoints: ServiceEndpoints::new(instances, config)?,
        })
    }
}

#[async_trait]
impl OrderClient for HttpOrderClient {
    async fn health(&self) -> CheckResult {
        self.endpoints.health().await
    }
}
