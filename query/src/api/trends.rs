//! `GET /api/v1/analysis/trends`: a service's rate, error rate or p95 over a
//! window, with a forecast, anomalies and log volume by severity (see
//! [`crate::analysis::trends`]). This file turns the query string into a
//! validated [`TrendsQuery`]; a bad value is a 400 naming its parameter.

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::params::parse_duration;
use super::search::{optional, time_window};
use super::{ApiError, ApiResult, TenantEngine};
use crate::analysis::trends::{self, default_step, steps_in, Metric, TrendsQuery, MAX_POINTS};

/// Without `start`, the window is the day before `end`.
const DEFAULT_WINDOW_NS: i64 = 24 * 3600 * 1_000_000_000;
const NANOS_PER_SECOND: i64 = 1_000_000_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TrendsParams {
    service: Option<String>,
    operation: Option<String>,
    metric: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
    horizon: Option<String>,
}

/// `GET /api/v1/analysis/trends?service=&operation=&metric=rate|errors|p95&start=&end=&step=&horizon=`
pub(super) async fn trends(
    TenantEngine(engine): TenantEngine,
    params: Result<Query<TrendsParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let query = trends_query(params, engine.config().max_rows)?;
    let report = trends::trends(&engine, &query).await?;
    Ok(Json(report).into_response())
}

/// Checks the parameters. A series may have at most [`MAX_POINTS`] steps,
/// and no more than the query row limit (`max_rows`), which its SQL must
/// fit in.
fn trends_query(params: TrendsParams, max_rows: usize) -> Result<TrendsQuery, ApiError> {
    let service = params
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("service is required"))?;
    let metric = match params.metric.as_deref().filter(|m| !m.is_empty()) {
        None => Metric::Rate,
        Some(metric) => metric.parse().map_err(ApiError::bad_request)?,
    };
    let (start, end) = time_window(
        params.start.as_deref(),
        params.end.as_deref(),
        DEFAULT_WINDOW_NS,
    )?;
    let window = end - start;
    let step = step(params.step.as_deref(), window)?;
    let limit = MAX_POINTS.min(max_rows);
    let points = steps_in(window, step);
    if points > limit {
        return Err(ApiError::bad_request(format!(
            "step={}s makes {points} points from start to end, more than {limit}: use a larger step",
            step / NANOS_PER_SECOND
        )));
    }
    let horizon =
        optional("horizon", params.horizon.as_deref(), parse_duration)?.unwrap_or(window / 5);
    if horizon > window {
        return Err(ApiError::bad_request(format!(
            "horizon={:?} is longer than the window from start to end",
            params.horizon.unwrap_or_default()
        )));
    }
    Ok(TrendsQuery {
        service,
        operation: params.operation.filter(|o| !o.is_empty()),
        metric,
        start_ns: start,
        end_ns: end,
        step_ns: step,
        horizon_steps: steps_in(horizon, step),
    })
}

/// The step in nanoseconds: whole seconds, at least one; by default about
/// 120 points over the window.
pub(super) fn step(value: Option<&str>, window: i64) -> Result<i64, ApiError> {
    let Some(step) = optional("step", value, parse_duration)? else {
        return Ok(default_step(window));
    };
    if step < NANOS_PER_SECOND || step % NANOS_PER_SECOND != 0 {
        return Err(ApiError::bad_request(format!(
            "step={:?} must be a whole number of seconds, at least 1s",
            value.unwrap_or_default()
        )));
    }
    Ok(step)
}
