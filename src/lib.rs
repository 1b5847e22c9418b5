//! forma: the backend of a 3D-print-on-demand business, as one binary whose `--role` decides what
//! runs (SPEC §1). Module map:
//!
//! - [`cli`], [`config`]: the command line and the layered configuration.
//! - [`roles`]: the one place that decides what each role mounts.
//! - [`app`], [`server`]: start-up (database, migrations, ports) and the HTTP server's lifecycle.
//! - [`http`]: what every response shares: the error shape, request ids, body limits.
//! - [`observability`]: logs and Prometheus metrics.
//! - [`health`]: liveness, readiness and the health report shape.
//! - [`gateway`], [`order`], [`print`]: the services (print runs inside the order role for now).
//! - [`clients`]: the traits one service calls another through, in-process or over HTTP.
//! - [`identity`]: tenants, users, roles and permissions.
//! - [`infra`]: the ports with an embedded and a distributed implementation each.
//! - [`openapi`]: the merged OpenAPI document and the docs UI.

#![forbid(unsafe_code)]
// Outside tests nothing that comes from outside the process may panic the process.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod app;
pub mod cli;
pub mod clients;
pub mod config;
pub mod demo;
pub mod events;
pub mod gateway;
pub mod health;
pub mod http;
pub mod identity;
pub mod infra;
pub mod observability;
pub mod openapi;
pub mod order;
pub mod print;
pub mod roles;
pub mod server;
pub mod shipping;
pub mod simulators;

#[cfg(test)]
mod outage_tests;
#[cfg(test)]
pub mod testing;
#[cfg(test)]
mod wiring_tests;

/// The version reported by `/health` and `--version`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
