//! Analytics (SPEC §6.5): a tenant's figures over a period, computed by the database.
//!
//! - The period is `[from, to]`, both inclusive, on the orders' creation time; every figure of the
//!   overview is about the orders (and print jobs) created in it, so the numbers add up.
//! - Revenue is per currency (amounts in different currencies are never added) and leaves out
//!   cancelled orders; it is summed exactly, in ten-thousandths, and answered as a decimal string.
//! - Time to fulfillment runs from the order's creation to the event-log entry of its move to
//!   FULFILLED (written in the transaction of that move): `orders.updated_at` moves with any
//!   later write, the log entry does not.
//! - The time series has one bucket per UTC day or ISO week (from Monday) touching the period,
//!   empty ones included; too many buckets is a 400 rather than a huge answer.

pub mod print_jobs;
pub mod repository;
pub mod routes;
#[cfg(test)]
mod routes_tests;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, Days, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::order::inventory::StockFigures;
use crate::order::orders::state::Status;

/// The most buckets a time series may have: a daily series of almost three years.
pub const MAX_BUCKETS: i64 = 1000;
/// How many SKUs the overview ranks.
pub const TOP_SKUS: i64 = 10;

/// The period the figures are about: orders created at or after `from` and at or before `to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The width of a time-series bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Interval {
    /// A UTC calendar day.
    #[default]
    Day,
    /// An ISO week: Monday 00:00 UTC to the next Monday.
    Week,
}

impl Interval {
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "day" => Some(Self::Day),
            "week" => Some(Self::Week),
            _ => None,
        }
    }

    fn days(self) -> u64 {
        match self {
            Self::Day => 1,
            Self::Week => 7,
        }
    }

    /// The first day of the bucket that holds `instant`.
    pub fn bucket_of(self, instant: DateTime<Utc>) -> NaiveDate {
        let day = instant.date_naive();
        match self {
            Self::Day => day,
            Self::Week => day - Days::new(u64::from(day.weekday().num_days_from_monday())),
        }
    }

    /// How many buckets touch `period`, without listing them (it may be absurdly long).
    pub fn bucket_count(self, period: Period) -> i64 {
        let first = self.bucket_of(period.from);
        let last = self.bucket_of(period.to);
        (last - first).num_days() / self.days() as i64 + 1
    }

    /// The first day of every bucket touching `period`, in order.
    pub fn buckets(self, period: Period) -> Vec<NaiveDate> {
        let last = self.bucket_of(period.to);
        let mut day = self.bucket_of(period.from);
        let mut all = Vec::new();
        while day <= last {
            all.push(day);
            match day.checked_add_days(Days::new(self.days())) {
                Some(next) => day = next,
                None => break,
            }
        }
        all
    }

    /// The first day after the bucket starting on `start`.
    pub fn end_of(self, start: NaiveDate) -> NaiveDate {
        start
            .checked_add_days(Days::new(self.days()))
            .unwrap_or(NaiveDate::MAX)
    }
}

/// An amount summed in ten-thousandths of the currency unit: exact for any price Shopify sends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Units(pub i128);

impl Units {
    pub const PER_UNIT: i128 = 10_000;

    /// The SPEC §4 money string: at least two decimals, more only when they are not zero
    /// (`"1234.50"`, `"0.125"`).
    pub fn to_decimal(self) -> String {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let whole = abs / Self::PER_UNIT as u128;
        let mut fraction = format!("{:04}", abs % Self::PER_UNIT as u128);
        while fraction.len() > 2 && fraction.ends_with('0') {
            fraction.pop();
        }
        format!("{sign}{whole}.{fraction}")
    }
}

/// Orders created in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderFigures {
    pub total: i64,
    /// Every order status, with how many of the orders have it now (zero included).
    pub by_status: BTreeMap<String, i64>,
}

/// What the period's orders that were not cancelled are worth, in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revenue {
    /// ISO 4217 code, as Shopify sent it.
    pub currency: String,
    /// Decimal string, e.g. `"1234.50"`.
    pub amount: String,
    /// The orders it is the total of.
    pub orders: i64,
}

/// How long the period's fulfilled orders took, creation to fulfillment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct FulfillmentFigures {
    /// Orders of the period that are FULFILLED.
    pub fulfilled_orders: i64,
    /// Their mean time from creation to fulfillment, in hours (two decimals); null when none.
    pub average_hours: Option<f64>,
}

/// The tenant's print jobs (for orders and for stock) created in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrintJobFigures {
    pub total: i64,
    /// Every print-job status, with how many jobs have it now (zero included).
    pub by_status: BTreeMap<String, i64>,
    /// COMPLETED ÷ (COMPLETED + FAILED): the share of finished prints that succeeded (cancelled
    /// ones are an operator's decision, not a print's outcome); null while none has finished.
    pub success_rate: Option<f64>,
}

/// A SKU ranked by the units ordered in the period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopSku {
    pub sku: String,
    /// Units on the lines of orders that were not cancelled (cancelled lines left out).
    pub quantity: i64,
    /// How many of those orders have it.
    pub orders: i64,
}

/// `GET /api/v1/analytics/overview`: the period's figures, one section per subject.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Overview {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub orders: OrderFigures,
    /// One entry per currency, by currency code (amounts in different currencies do not compare).
    pub revenue: Vec<Revenue>,
    pub fulfillment: FulfillmentFigures,
    pub print_jobs: PrintJobFigures,
    /// At most ten, most units first.
    pub top_skus: Vec<TopSku>,
    /// Units served from stock in the period (returned units left out) and on hand now, per SKU.
    pub stock: StockFigures,
}

/// An amount in one currency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Amount {
    pub currency: String,
    /// Decimal string, e.g. `"49.90"`.
    pub amount: String,
}

/// One bucket of the time series.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Bucket {
    /// The bucket's first instant (00:00 UTC of its first day).
    pub start: DateTime<Utc>,
    /// The next bucket's first instant.
    pub end: DateTime<Utc>,
    /// Orders created in the bucket and the period, cancelled ones included.
    pub orders: i64,
    /// Those not cancelled, per currency; empty when none.
    pub revenue: Vec<Amount>,
}

/// `GET /api/v1/analytics/orders-timeseries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeseries {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub interval: Interval,
    /// Every bucket touching the period, oldest first, empty ones included.
    pub buckets: Vec<Bucket>,
}

/// Every status of `S` with its count (`count` of it), zero included: a figure's `byStatus`.
fn by_status<S: Status>(count: impl Fn(S) -> i64) -> BTreeMap<String, i64> {
    S::ALL
        .iter()
        .map(|&status| (status.as_str().to_owned(), count(status)))
        .collect()
}

/// 00:00 UTC of `day`.
pub fn midnight(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn amounts_keep_two_decimals_and_any_further_nonzero_ones() {
        assert_eq!(Units(12_345_000).to_decimal(), "1234.50");
        assert_eq!(Units(1_250).to_decimal(), "0.125");
        assert_eq!(Units(0).to_decimal(), "0.00");
        assert_eq!(Units(-49_900).to_decimal(), "-4.99");
    }

    #[test]
    fn weeks_start_on_monday_and_every_touched_bucket_is_listed() {
        // 2026-11-04 is a Wednesday, 2026-11-16 a Monday.
        let period = Period {
            from: at("2026-11-04T10:00:00Z"),
            to: at("2026-11-16T00:00:00Z"),
        };
        let weeks = Interval::Week.buckets(period);
        let starts: Vec<String> = weeks.iter().map(|d| d.to_string()).collect();
        assert_eq!(starts, ["2026-11-02", "2026-11-09", "2026-11-16"]);
        assert_eq!(Interval::Week.bucket_count(period), 3);
        assert_eq!(Interval::Day.bucket_count(period), 13);
        assert_eq!(Interval::Day.buckets(period).len(), 13);
    }
}
