//! The analytics queries over the order side's tables (`orders`, `line_items`, `event_log`): the
//! database groups and sums, Rust only names and orders what comes back.
//!
//! One query text serves both databases wherever the dialects agree; where they do not (a day
//! from a timestamp, the hours between two) each backend has its own, side by side. Every query
//! starts from the tenant and the creation time of its orders; the indexes of
//! `migrations/*/20261204000002_analytics.sql` hold every column these queries read, so they
//! never visit the tables (`benches/analytics.rs` shows the plans on 100 000 orders).

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;
use futures::TryFutureExt;
use uuid::Uuid;

use super::{
    Amount, Bucket, FulfillmentFigures, Interval, OrderFigures, Overview, Period, Revenue,
    Timeseries, TopSku, Units, by_status, midnight,
};
use crate::clients::print::PrintClient;
use crate::http::ApiError;
use crate::infra::db::{Backend, Db, DbError};
use crate::on_pool;
use crate::order::inventory;
use crate::order::orders::{OrderStatus, state::Status};

/// A money string in ten-thousandths, summed exactly: PostgreSQL sums NUMERIC; SQLite reads the
/// decimal as a double, which is exact to the ten-thousandth far beyond any real order's total,
/// and adds the rounded (integral) values. The sum comes back as a double on both: exact up to
/// 2^53 ten-thousandths (nine hundred billion in the currency) per group.
macro_rules! units_of {
    ($column:literal) => {
        concat!(
            "CAST(SUM(ROUND(CAST(",
            $column,
            " AS NUMERIC) * 10000)) AS DOUBLE PRECISION)"
        )
    };
}

/// The period's orders by status and currency: the source of the status counts and the revenue.
const ORDERS_BY_STATUS_AND_CURRENCY: &str = concat!(
    "SELECT status, currency, COUNT(*) AS orders, ",
    units_of!("total_price"),
    " AS units FROM orders \
     WHERE tenant_id = $1 AND created_at >= $2 AND created_at <= $3 \
     GROUP BY status, currency"
);

/// The period's fulfilled orders and their mean hours from creation to the log entry of their
/// move to FULFILLED. The lookup's conditions are, word for word, those of the partial index
/// `event_log_fulfilled` (one entry per fulfilled order), which answers it without the table.
const FULFILLMENT_SQLITE: &str = "\
    SELECT COUNT(*) AS fulfilled, CAST(AVG(hours) AS DOUBLE PRECISION) AS hours FROM ( \
        SELECT (julianday(( \
            SELECT MIN(e.created_at) FROM event_log e \
            WHERE e.order_id = o.id AND e.event_type = 'order.status_changed' \
              AND e.details ->> '$.newStatus' = 'FULFILLED' \
        )) - julianday(o.created_at)) * 24.0 AS hours \
        FROM orders o \
        WHERE o.tenant_id = $1 AND o.status = 'FULFILLED' \
          AND o.created_at >= $2 AND o.created_at <= $3 \
    ) AS fulfilled";
const FULFILLMENT_POSTGRES: &str = "\
    SELECT COUNT(*) AS fulfilled, CAST(AVG(hours) AS DOUBLE PRECISION) AS hours FROM ( \
        SELECT EXTRACT(EPOCH FROM ( \
            SELECT MIN(e.created_at) FROM event_log e \
            WHERE e.order_id = o.id AND e.event_type = 'order.status_changed' \
              AND CAST(e.details AS JSONB) ->> 'newStatus' = 'FULFILLED' \
        ) - o.created_at) / 3600.0 AS hours \
        FROM orders o \
        WHERE o.tenant_id = $1 AND o.status = 'FULFILLED' \
          AND o.created_at >= $2 AND o.created_at <= $3 \
    ) AS fulfilled";

/// The SKUs with the most units on the period's lines, cancelled orders and lines left out.
const TOP_SKUS: &str = "\
    SELECT l.sku, CAST(SUM(l.quantity) AS BIGINT) AS units, COUNT(DISTINCT l.order_id) AS orders \
    FROM orders o JOIN line_items l ON l.order_id = o.id \
    WHERE o.tenant_id = $1 AND o.created_at >= $2 AND o.created_at <= $3 \
      AND o.status <> 'CANCELLED' AND l.status <> 'CANCELLED' \
    GROUP BY l.sku \
    ORDER BY units DESC, l.sku \
    LIMIT $4";

/// The first day (`YYYY-MM-DD`, UTC) of the bucket of `created_at`, per backend and interval;
/// the same rule as [`Interval::bucket_of`], which lists the buckets.
fn bucket_expression(backend: Backend, interval: Interval) -> &'static str {
    match (backend, interval) {
        (Backend::Sqlite, Interval::Day) => "date(created_at)",
        // The next Sunday (the day itself if it is one), six days back: the week's Monday.
        (Backend::Sqlite, Interval::Week) => "date(created_at, 'weekday 0', '-6 days')",
        (Backend::Postgres, Interval::Day) => {
            "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')"
        }
        (Backend::Postgres, Interval::Week) => {
            "to_char(date_trunc('week', created_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD')"
        }
    }
}

fn timeseries_sql(backend: Backend, interval: Interval) -> String {
    let bucket = bucket_expression(backend, interval);
    let units = units_of!("CASE WHEN status <> 'CANCELLED' THEN total_price END");
    format!(
        "SELECT {bucket} AS bucket, currency, COUNT(*) AS orders, {units} AS units FROM orders \
         WHERE tenant_id = $1 AND created_at >= $2 AND created_at <= $3 \
         GROUP BY bucket, currency"
    )
}

/// Every query of the analytics with a name, as run on `backend`: for `benches/analytics.rs`,
/// which shows their plans. Their parameters are the tenant, `from`, `to` (and the top SKUs'
/// limit).
pub fn statements(backend: Backend) -> Vec<(&'static str, String)> {
    let fulfillment = match backend {
        Backend::Sqlite => FULFILLMENT_SQLITE,
        Backend::Postgres => FULFILLMENT_POSTGRES,
    };
    vec![
        (
            "orders by status and currency",
            ORDERS_BY_STATUS_AND_CURRENCY.to_owned(),
        ),
        ("fulfillment", fulfillment.to_owned()),
        ("top SKUs", TOP_SKUS.to_owned()),
        ("timeseries by day", timeseries_sql(backend, Interval::Day)),
        (
            "timeseries by week",
            timeseries_sql(backend, Interval::Week),
        ),
    ]
}

/// A sum of ten-thousandths as the database returns it (a double with an integral value).
fn units(sum: Option<f64>) -> Option<Units> {
    sum.map(|s| Units(s.round() as i128))
}

/// The overview of the tenant's `period`; its parts are read concurrently, the print jobs' from
/// the print service.
pub async fn overview(
    db: &Db,
    print: &dyn PrintClient,
    tenant_id: Uuid,
    period: Period,
) -> Result<Overview, ApiError> {
    let ((orders, revenue), fulfillment, print_jobs, top_skus, stock) = tokio::try_join!(
        orders_and_revenue(db, tenant_id, period).err_into(),
        fulfillment(db, tenant_id, period).err_into(),
        super::print_jobs::figures(print, tenant_id, period),
        top_skus(db, tenant_id, period).err_into(),
        inventory::repository::stock_figures(db, tenant_id, period.from, period.to).err_into(),
    )?;
    Ok(Overview {
        from: period.from,
        to: period.to,
        orders,
        revenue,
        fulfillment,
        print_jobs,
        top_skus,
        stock,
    })
}

async fn orders_and_revenue(
    db: &Db,
    tenant_id: Uuid,
    period: Period,
) -> Result<(OrderFigures, Vec<Revenue>), DbError> {
    let rows: Vec<(String, String, i64, Option<f64>)> = on_pool!(db, pool => {
        sqlx::query_as(ORDERS_BY_STATUS_AND_CURRENCY)
            .bind(tenant_id)
            .bind(period.from)
            .bind(period.to)
            .fetch_all(pool)
            .await
    })?;
    let mut counts: HashMap<String, i64> = HashMap::new();
    let mut revenue: BTreeMap<String, (Units, i64)> = BTreeMap::new();
    for (status, currency, orders, sum) in rows {
        *counts.entry(status.clone()).or_default() += orders;
        if status != OrderStatus::Cancelled.as_str() {
            let entry = revenue.entry(currency).or_default();
            entry.0 = Units(entry.0.0 + units(sum).unwrap_or_default().0);
            entry.1 += orders;
        }
    }
    let figures = OrderFigures {
        total: counts.values().sum(),
        by_status: by_status(|status: OrderStatus| {
            counts.get(status.as_str()).copied().unwrap_or(0)
        }),
    };
    let revenue = revenue
        .into_iter()
        .map(|(currency, (amount, orders))| Revenue {
            currency,
            amount: amount.to_decimal(),
            orders,
        })
        .collect();
    Ok((figures, revenue))
}

async fn fulfillment(
    db: &Db,
    tenant_id: Uuid,
    period: Period,
) -> Result<FulfillmentFigures, DbError> {
    let sql = match db.backend() {
        Backend::Sqlite => FULFILLMENT_SQLITE,
        Backend::Postgres => FULFILLMENT_POSTGRES,
    };
    let (fulfilled, hours): (i64, Option<f64>) = on_pool!(db, pool => {
        sqlx::query_as(sql)
            .bind(tenant_id)
            .bind(period.from)
            .bind(period.to)
            .fetch_one(pool)
            .await
    })?;
    Ok(FulfillmentFigures {
        fulfilled_orders: fulfilled,
        // Two decimals: SQLite's day fractions are exact to a few microseconds, not more.
        average_hours: hours.map(|h| (h * 100.0).round() / 100.0),
    })
}

async fn top_skus(db: &Db, tenant_id: Uuid, period: Period) -> Result<Vec<TopSku>, DbError> {
    let rows: Vec<(String, i64, i64)> = on_pool!(db, pool => {
        sqlx::query_as(TOP_SKUS)
            .bind(tenant_id)
            .bind(period.from)
            .bind(period.to)
            .bind(super::TOP_SKUS)
            .fetch_all(pool)
            .await
    })?;
    Ok(rows
        .into_iter()
        .map(|(sku, quantity, orders)| TopSku {
            sku,
            quantity,
            orders,
        })
        .collect())
}

/// The tenant's orders per bucket of `interval` over `period`, every bucket listed. The caller
/// has checked the number of buckets ([`super::MAX_BUCKETS`]).
pub async fn timeseries(
    db: &Db,
    tenant_id: Uuid,
    period: Period,
    interval: Interval,
) -> Result<Timeseries, DbError> {
    let sql = timeseries_sql(db.backend(), interval);
    let rows: Vec<(String, String, i64, Option<f64>)> = on_pool!(db, pool => {
        sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
            .bind(tenant_id)
            .bind(period.from)
            .bind(period.to)
            .fetch_all(pool)
            .await
    })?;
    let mut filled: BTreeMap<NaiveDate, (i64, BTreeMap<String, Units>)> = BTreeMap::new();
    for (bucket, currency, orders, sum) in rows {
        let Ok(day) = NaiveDate::parse_from_str(&bucket, "%Y-%m-%d") else {
            tracing::error!(bucket, "the database named a bucket that is not a day");
            continue;
        };
        let entry = filled.entry(day).or_default();
        entry.0 += orders;
        if let Some(amount) = units(sum) {
            entry.1.insert(currency, amount);
        }
    }
    let buckets = interval
        .buckets(period)
        .into_iter()
        .map(|start| {
            let (orders, revenue) = filled.remove(&start).unwrap_or_default();
            Bucket {
                start: midnight(start),
                end: midnight(interval.end_of(start)),
                orders,
                revenue: revenue
                    .into_iter()
                    .map(|(currency, amount)| Amount {
                        currency,
                        amount: amount.to_decimal(),
                    })
                    .collect(),
            }
        })
        .collect();
    Ok(Timeseries {
        from: period.from,
        to: period.to,
        interval,
        buckets,
    })
}
