//! `/api/v1/analytics` (SPEC §6.5): analytics.read to look, within the caller's tenant.

use axum::extract::State;
use chrono::{DateTime, TimeDelta, Utc};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Interval, MAX_BUCKETS, Overview, Period, Timeseries, repository};
use crate::http::extract::{Json, Query};
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::order::OrderState;
use crate::order::audit::{parse_instant_bound, truncate_to_micros};

/// The period when `from` is not given: the 30 days up to `to`.
pub const DEFAULT_DAYS: i64 = 30;

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new()
        .routes(routes!(overview))
        .routes(routes!(orders_timeseries))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct PeriodQuery {
    /// Orders created at or after: ISO 8601 date-time (UTC when no offset is given) or date
    /// (its 00:00 UTC). Default: 30 days before `to`.
    pub from: Option<String>,
    /// Orders created at or before: ISO 8601 date-time, or a date meaning the whole day.
    /// Default: now.
    pub to: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct TimeseriesQuery {
    /// `day` (UTC days, the default) or `week` (ISO weeks, from Monday).
    pub interval: Option<String>,
}

fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

impl PeriodQuery {
    /// The period asked for, defaults applied; every problem listed for one 400.
    fn period(&self, now: DateTime<Utc>) -> Result<Period, Vec<String>> {
        let mut problems = Vec::new();
        let mut bound = |name: &str, value: &Option<String>, end: bool| match given(value) {
            None => Some(None),
            Some(text) => match parse_instant_bound(text, end) {
                Some(instant) => Some(Some(instant)),
                None => {
                    problems.push(format!("{name} must be an ISO 8601 date or date-time"));
                    None
                }
            },
        };
        let (from, to) = (
            bound("from", &self.from, false),
            bound("to", &self.to, true),
        );
        let (Some(from), Some(to)) = (from, to) else {
            return Err(problems);
        };
        let to = to.unwrap_or_else(|| truncate_to_micros(now));
        let from = from.unwrap_or_else(|| {
            to.checked_sub_signed(TimeDelta::days(DEFAULT_DAYS))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        });
        if from > to {
            return Err(vec!["from must not be after to".to_owned()]);
        }
        Ok(Period { from, to })
    }
}

impl TimeseriesQuery {
    fn interval(&self, period: Period) -> Result<Interval, Vec<String>> {
        let interval = match given(&self.interval) {
            None => Interval::default(),
            Some(text) => Interval::parse(text)
                .ok_or_else(|| vec!["interval must be one of: day, week".to_owned()])?,
        };
        let buckets = interval.bucket_count(period);
        if buckets > MAX_BUCKETS {
            let name = match interval {
                Interval::Day => "day",
                Interval::Week => "week",
            };
            return Err(vec![format!(
                "from and to span {buckets} buckets of a {name}; at most {MAX_BUCKETS} are allowed"
            )]);
        }
        Ok(interval)
    }
}

/// The tenant's figures over a period: orders by status, revenue per currency, average hours to
/// fulfillment, print jobs by status with their success rate, and the top SKUs. Every figure is
/// about the orders (and print jobs) created in the period; without `from` and `to` that is the
/// last 30 days.
#[utoipa::path(get, path = "/api/v1/analytics/overview", tag = "analytics",
    params(PeriodQuery),
    responses(
        (status = 200, description = "The period's figures", body = Overview),
        (status = 400, description = "A date is invalid, or from is after to", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing analytics.read", body = ErrorBody)))]
async fn overview(
    State(state): State<OrderState>,
    ctx: UserContext,
    // Taken as a result so that a caller without the permission learns nothing from a 400.
    query: Result<Query<PeriodQuery>, ApiError>,
) -> Result<Json<Overview>, ApiError> {
    ctx.require(Permission::AnalyticsRead)?;
    let Query(query) = query?;
    let period = query.period(Utc::now()).map_err(ApiError::validation)?;
    Ok(Json(
        repository::overview(&state.core.db, &*state.core.print, ctx.tenant_id, period).await?,
    ))
}

/// The tenant's orders per UTC day or ISO week over a period (the last 30 days by default):
/// every bucket touching the period is listed, empty ones included, with the orders created in
/// it and the revenue of those not cancelled. At most 1000 buckets.
#[utoipa::path(get, path = "/api/v1/analytics/orders-timeseries", tag = "analytics",
    params(PeriodQuery, TimeseriesQuery),
    responses(
        (status = 200, description = "One bucket per day or week", body = Timeseries),
        (status = 400, description = "A date or the interval is invalid, from is after to, or the period has more than 1000 buckets", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing analytics.read", body = ErrorBody)))]
async fn orders_timeseries(
    State(state): State<OrderState>,
    ctx: UserContext,
    period: Result<Query<PeriodQuery>, ApiError>,
    query: Result<Query<TimeseriesQuery>, ApiError>,
) -> Result<Json<Timeseries>, ApiError> {
    ctx.require(Permission::AnalyticsRead)?;
    let (Query(period), Query(query)) = (period?, query?);
    let period = period.period(Utc::now()).map_err(ApiError::validation)?;
    let interval = query.interval(period).map_err(ApiError::validation)?;
    Ok(Json(
        repository::timeseries(&state.core.db, ctx.tenant_id, period, interval).await?,
    ))
}
