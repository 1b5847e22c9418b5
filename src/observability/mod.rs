//! Logs and metrics: structured logs with the request id on every line, Prometheus text metrics.

pub mod logging;
pub mod metrics;
