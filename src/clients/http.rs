//! What the HTTP implementations of the service clients share: a service's instances and their
//! health probe.

use std::time::{Duration, Instant};

use futures::future::join_all;

use crate::config::Config;
use crate::health::CheckResult;
use crate::http::request_id::{self, X_REQUEST_ID};

/// The instances of one downstream service.
#[derive(Clone)]
pub struct ServiceEndpoints {
    pub http: reqwest::Client,
    pub instances: Vec<String>,
    pub health_timeout: Duration,
}

impl ServiceEndpoints {
    pub fn new(instances: Vec<String>, config: &Config) -> anyhow::Result<Self> {
        let http = crate::infra::tls::http_client()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_millis(config.services.timeout_ms))
            .build()?;
        Ok(Self {
            http,
            instances,
            health_timeout: Duration::from_millis(config.services.health_timeout_ms),
        })
    }

    /// `GET /health/ready` on every instance at once: ok while at least one answers.
    pub async fn health(&self) -> CheckResult {
        let results = join_all(self.instances.iter().map(|base| self.probe(base))).await;
        let slowest_ok = results
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .max()
            .copied();
        let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
        match slowest_ok {
            None => CheckResult::down(failures.join("; ")),
            Some(latency) if failures.is_empty() => CheckResult::ok(latency),
            Some(latency) => CheckResult::ok(latency).with_message(format!(
                "{} of {} instances down: {}",
                failures.len(),
                self.instances.len(),
                failures.join("; ")
            )),
        }
    }

    async fn probe(&self, base: &str) -> Result<Duration, String> {
        let started = Instant::now();
        let mut request = self
            .http
            .get(format!("{base}/health/ready"))
            .timeout(self.health_timeout);
        if let Some(id) = request_id::current() {
            request = request.header(X_REQUEST_ID, id);
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => Ok(started.elapsed()),
            Ok(response) => Err(format!("{base}: answered {}", response.status())),
            Err(e) if e.is_timeout() => Err(format!(
                "{base}: no answer within {:?}",
                self.health_timeout
            )),
            Err(e) if e.is_connect() => Err(format!("{base}: connection refused")),
            Err(e) => Err(format!("{base}: {e}")),
        }
    }
}
