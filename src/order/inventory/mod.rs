//! Inventory (SPEC §6.5b): popular products printed ahead into stock, and order lines served from
//! that stock first.
//!
//! - Per product mapping a stock target, the stock on hand (never negative), a batch size and a
//!   `replenish` flag ([`repository`], `GET`/`PUT /api/v1/inventory` in [`routes`]).
//! - The [`scheduler`] tops stock up: one pass at a time across every replica, creating stock
//!   batches whose print jobs the print service creates when it hears
//!   `inventory.stock-replenishment-scheduled` ([`batches`]).
//! - A stock job's `print-job.completed` counts once; the batch's last one adds its units to stock
//!   and publishes `inventory.stock-batch-completed` ([`batches::on_stock_job_event`]).
//! - A new order's lines take what stock there is in the order's own transaction ([`serving`]);
//!   cancelling the order gives the units back.

pub mod batches;
#[cfg(test)]
mod batches_tests;
pub mod repository;
pub mod routes;
#[cfg(test)]
mod routes_tests;
pub mod scheduler;
pub mod serving;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// Largest stock target and batch size: past it a number is a typing mistake, not a plan.
pub const MAX_UNITS: i64 = 100_000;
/// Largest batch: a batch is printed as one go, so it is held to what one order line may print.
pub const MAX_BATCH_SIZE: i64 = crate::print::plan::MAX_PRINTS_PER_LINE as i64;

/// One product's stock as the API shows it (SPEC §6.5b).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InventoryEntry {
    pub mapping_id: Uuid,
    pub sku: String,
    pub product_name: String,
    pub stock_target: i64,
    pub stock_on_hand: i64,
    /// Units per stock batch.
    pub batch_size: i64,
    /// Whether the scheduler tops this product up.
    pub replenish: bool,
    /// Units in stock batches being printed now.
    pub in_production: i64,
    /// Stock batches being printed now.
    pub open_batches: i64,
}

/// `PUT /api/v1/inventory/{mappingId}`: every field optional, the rest is kept. `stockOnHand` is a
/// manual correction (a count of the shelf), audited with its actor.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryUpdate {
    pub stock_target: Option<i64>,
    pub batch_size: Option<i64>,
    pub stock_on_hand: Option<i64>,
    pub replenish: Option<bool>,
}

impl InventoryUpdate {
    /// Every problem of the body, for one 400.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        let mut check = |name: &str, value: Option<i64>, min: i64, max: i64| {
            if let Some(v) = value {
                if !(min..=max).contains(&v) {
                    problems.push(format!("{name} must be between {min} and {max}"));
                }
            }
        };
        check("stockTarget", self.stock_target, 0, MAX_UNITS);
        check("stockOnHand", self.stock_on_hand, 0, MAX_UNITS);
        check("batchSize", self.batch_size, 1, MAX_BATCH_SIZE);
        if self.stock_target.is_none()
            && self.batch_size.is_none()
            && self.stock_on_hand.is_none()
            && self.replenish.is_none()
        {
            problems.push(
                "nothing to change: give stockTarget, batchSize, stockOnHand or replenish"
                    .to_owned(),
            );
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// What the print service needs to create one stock print job: the order service chose its id
/// when it scheduled it, so creating it twice creates it once. The wire format of
/// `GET /internal/stock-jobs/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StockJobPlan {
    pub tenant_id: Uuid,
    pub print_job_id: Uuid,
    pub stock_batch_id: Uuid,
    pub file_id: String,
    pub file_name: String,
    pub print_profile: Option<String>,
}

/// Stock figures of a period for analytics: units served from stock per SKU, and what is on hand
/// per SKU now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StockFigures {
    pub served_from_stock: Vec<SkuUnits>,
    pub total_served_from_stock: i64,
    pub on_hand: Vec<SkuUnits>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SkuUnits {
    pub sku: String,
    pub units: i64,
}
