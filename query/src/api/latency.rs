//! `GET /api/v1/analysis/latency?service=&operation=&start=&end=&step=&sample=`:
//! percentile series, a log-scale heatmap and the critical-path breakdown of
//! a service's requests (see [`crate::analysis::latency`]).

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::search::{time_window, DEFAULT_LOOKBACK_NS};
use super::trends::step;
use super::{ApiError, ApiResult, TenantEngine};
use crate::analysis::latency::{self, LatencyRequest};
use crate::analysis::trends::{steps_in, MAX_POINTS};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LatencyParams {
    service: Option<String>,
    operation: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
    sample: Option<usize>,
}

const DEFAULT_SAMPLE: usize = 500;
const MAX_SAMPLE: usize = 5000;

pub(super) async fn latency(
    TenantEngine(engine): TenantEngine,
    params: Result<Query<LatencyParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let service = params
        .service
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("service is required"))?;
    let (start_ns, end_ns) = time_window(
        params.start.as_deref(),
        params.end.as_deref(),
        DEFAULT_LOOKBACK_NS,
    )?;
    let step_ns = step(params.step.as_deref(), end_ns - start_ns)?;
    let points = steps_in(end_ns - start_ns, step_ns);
    if points > MAX_POINTS {
        return Err(ApiError::bad_request(format!(
            "step makes {points} points from start to end, more than {MAX_POINTS}: use a larger step"
        )));
    }
    let sample = params.sample.unwrap_or(DEFAULT_SAMPLE);
    if !(1..=MAX_SAMPLE).contains(&sample) {
        return Err(ApiError::bad_request(format!(
            "sample={sample} must be between 1 and {MAX_SAMPLE}"
        )));
    }
    let request = LatencyRequest {
        service,
        operation: params.operation.filter(|o| !o.is_empty()),
        start_ns,
        end_ns,
        step_ns,
        sample,
    };
    Ok(Json(latency::latency(&engine, &request).await?).into_response())
}
