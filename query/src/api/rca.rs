//! `GET /api/v1/analysis/rca`: root cause of one trace (`?trace_id=`) or of
//! a window (`?start=&end=[&service=][&slow_quantile=][&sample=][&settle=]`).

use axum::extract::rejection::QueryRejection;
use axum::extract::Query;
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use super::params::{now_nanos, parse_duration, parse_trace_id};
use super::search::{time_window, DEFAULT_LOOKBACK_NS};
use super::{ApiError, ApiResult, TenantEngine};
use crate::analysis::rca::{self, WindowRequest};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RcaParams {
    trace_id: Option<String>,
    start: Option<String>,
    end: Option<String>,
    service: Option<String>,
    slow_quantile: Option<f64>,
    sample: Option<usize>,
    settle: Option<String>,
}

/// The most traces of each class (failed, slow, baseline) a window analysis reads.
const MAX_SAMPLE: usize = 5000;

pub(super) async fn rca(
    TenantEngine(engine): TenantEngine,
    params: Result<Query<RcaParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    if let Some(trace_id) = params.trace_id.as_deref().filter(|t| !t.is_empty()) {
        if params.start.is_some()
            || params.end.is_some()
            || params.service.is_some()
            || params.settle.is_some()
        {
            return Err(ApiError::bad_request(
                "trace_id analyses one trace; start, end, service and settle belong to a window analysis",
            ));
        }
        let trace_id = parse_trace_id(trace_id).map_err(ApiError::bad_request)?;
        return match rca::trace(&engine, &trace_id).await? {
            Some(report) => Ok(Json(report).into_response()),
            None => Err(ApiError::not_found(format!("trace {trace_id} not found"))),
        };
    }
    let (start_ns, end_ns) = time_window(
        params.start.as_deref(),
        params.end.as_deref(),
        DEFAULT_LOOKBACK_NS,
    )?;
    let slow_quantile = params
        .slow_quantile
        .unwrap_or(WindowRequest::DEFAULT_SLOW_QUANTILE);
    if !(0.5..1.0).contains(&slow_quantile) {
        return Err(ApiError::bad_request(format!(
            "slow_quantile={slow_quantile} must be at least 0.5 and below 1 (0.95: the slowest 5 % are slow)"
        )));
    }
    let sample_per_class = params.sample.unwrap_or(WindowRequest::DEFAULT_SAMPLE);
    if !(1..=MAX_SAMPLE).contains(&sample_per_class) {
        return Err(ApiError::bad_request(format!(
            "sample={sample_per_class} must be between 1 and {MAX_SAMPLE}"
        )));
    }
    let settle_ns = match params.settle.as_deref() {
        Some(settle) => parse_duration("settle", settle).map_err(ApiError::bad_request)?,
        None => WindowRequest::DEFAULT_SETTLE_NS,
    };
    let request = WindowRequest {
        start_ns,
        end_ns,
        service: params.service.filter(|s| !s.is_empty()),
        slow_quantile,
        sample_per_class,
        settled_before_ns: now_nanos().saturating_sub(settle_ns),
    };
    Ok(Json(rca::window(&engine, &request).await?).into_response())
}
