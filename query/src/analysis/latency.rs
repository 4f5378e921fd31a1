//! Latency: where the time goes for a service (or one of its operations).
//!
//! Percentile series and a log-scale histogram per time step come from SQL
//! (DataFusion's approximate percentiles; buckets by `log10` of the
//! duration). The critical-path breakdown reads a sample of the service's
//! requests with their traces, walks each request's critical path from the
//! service's own span, and adds up which operations the time was spent in.

use std::collections::HashMap;

use serde::Serialize;

use super::critical_path::TraceTree;
use super::rca::load_traces;
use super::{f64s, i64s, rfc3339, strings};
use crate::api::params::{sql_string, sql_time};
use crate::{QueryEngine, QueryError};

#[derive(Debug, Clone)]
pub struct LatencyRequest {
    pub service: String,
    pub operation: Option<String>,
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    /// Requests whose critical paths are walked for the breakdown.
    pub sample: usize,
}

/// Histogram buckets per decade: each bucket is 10^(1/4) ≈ 1.78× the last.
const BUCKETS_PER_DECADE: f64 = 4.0;

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    pub service: String,
    pub operation: Option<String>,
    pub start: String,
    pub end: String,
    pub step_seconds: f64,
    pub requests: u64,
    pub series: Vec<PercentilePoint>,
    /// Bucket bounds of the heatmap, in nanoseconds.
    pub buckets: Vec<Bucket>,
    pub heatmap: Vec<HeatmapCell>,
    pub breakdown: Vec<BreakdownRow>,
    /// Requests whose critical path the breakdown walked.
    pub breakdown_sample: u64,
}

#[derive(Debug, Serialize)]
pub struct PercentilePoint {
    /// The step's start.
    pub time: String,
    #[serde(skip)]
    time_ns: i64,
    pub count: u64,
    pub p50_ns: Option<f64>,
    pub p90_ns: Option<f64>,
    pub p95_ns: Option<f64>,
    pub p99_ns: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct Bucket {
    pub index: i64,
    pub lower_ns: f64,
    pub upper_ns: f64,
}

#[derive(Debug, Serialize)]
pub struct HeatmapCell {
    pub time: String,
    pub bucket: i64,
    pub count: u64,
}

/// One operation's part in the requests' time.
#[derive(Debug, Serialize)]
pub struct BreakdownRow {
    pub service: String,
    pub operation: String,
    /// Mean self time on the critical path per request (0 where it was not on it).
    pub mean_ns: f64,
    /// Its share of the mean request duration.
    pub share: f64,
    /// The 99th percentile of its per-request self time on the path.
    pub p99_ns: f64,
    /// Requests in which it was on the critical path.
    pub on_path: u64,
}

/// The service's entry spans (what its callers wait on) in the window.
fn requests_filter(request: &LatencyRequest) -> String {
    let mut filter = format!(
        "service_name = {} AND (kind IN ('SERVER', 'CONSUMER') OR parent_span_id IS NULL) \
         AND start_time >= {} AND start_time < {}",
        sql_string(&request.service),
        sql_time(request.start_ns),
        sql_time(request.end_ns)
    );
    if let Some(operation) = &request.operation {
        filter.push_str(&format!(" AND name = {}", sql_string(operation)));
    }
    filter
}

fn bucket_sql(request: &LatencyRequest) -> String {
    format!(
        "CAST(date_bin(INTERVAL '{} nanoseconds', start_time, {}) AS BIGINT)",
        request.step_ns,
        sql_time(request.start_ns)
    )
}

pub async fn latency(
    engine: &QueryEngine,
    request: &LatencyRequest,
) -> Result<LatencyReport, QueryError> {
    let filter = requests_filter(request);
    let step = bucket_sql(request);
    let series_sql = format!(
        "SELECT {step} AS time_ns, count(*) AS count, \
                CAST(approx_percentile_cont(duration_ns, 0.5) AS DOUBLE) AS p50, \
                CAST(approx_percentile_cont(duration_ns, 0.9) AS DOUBLE) AS p90, \
                CAST(approx_percentile_cont(duration_ns, 0.95) AS DOUBLE) AS p95, \
                CAST(approx_percentile_cont(duration_ns, 0.99) AS DOUBLE) AS p99 \
         FROM spans WHERE {filter} GROUP BY 1 ORDER BY 1"
    );
    let heatmap_sql = format!(
        "SELECT {step} AS time_ns, \
                CAST(floor(log10(CAST(greatest(duration_ns, 1) AS DOUBLE)) * {BUCKETS_PER_DECADE}) AS BIGINT) AS bucket, \
                count(*) AS count \
         FROM spans WHERE {filter} GROUP BY 1, 2 ORDER BY 1, 2"
    );
    let sample_sql = format!(
        "SELECT trace_id, span_id FROM spans WHERE {filter} ORDER BY trace_id LIMIT {}",
        request.sample
    );
    let (series, heatmap, sample) = tokio::try_join!(
        engine.sql_internal(&series_sql),
        engine.sql_internal(&heatmap_sql),
        engine.sql_internal(&sample_sql)
    )?;

    let mut points = Vec::new();
    for batch in &series.batches {
        let (times, counts) = (i64s(batch, "time_ns")?, i64s(batch, "count")?);
        let (p50, p90, p95, p99) = (
            f64s(batch, "p50")?,
            f64s(batch, "p90")?,
            f64s(batch, "p95")?,
            f64s(batch, "p99")?,
        );
        for row in 0..batch.num_rows() {
            let time_ns = times[row].unwrap_or(0);
            points.push(PercentilePoint {
                time: rfc3339(time_ns),
                time_ns,
                count: counts[row].unwrap_or(0).max(0) as u64,
                p50_ns: p50[row],
                p90_ns: p90[row],
                p95_ns: p95[row],
                p99_ns: p99[row],
            });
        }
    }
    let points = fill_steps(points, request);

    let mut cells = Vec::new();
    for batch in &heatmap.batches {
        let (times, buckets, counts) = (
            i64s(batch, "time_ns")?,
            i64s(batch, "bucket")?,
            i64s(batch, "count")?,
        );
        for row in 0..batch.num_rows() {
            cells.push(HeatmapCell {
                time: rfc3339(times[row].unwrap_or(0)),
                bucket: buckets[row].unwrap_or(0),
                count: counts[row].unwrap_or(0).max(0) as u64,
            });
        }
    }
    let buckets = match (
        cells.iter().map(|c| c.bucket).min(),
        cells.iter().map(|c| c.bucket).max(),
    ) {
        (Some(low), Some(high)) => (low..=high)
            .map(|index| Bucket {
                index,
                lower_ns: 10f64.powf(index as f64 / BUCKETS_PER_DECADE),
                upper_ns: 10f64.powf((index + 1) as f64 / BUCKETS_PER_DECADE),
            })
            .collect(),
        _ => Vec::new(),
    };

    let mut entries: Vec<(String, String)> = Vec::new();
    for batch in &sample.batches {
        let (traces, spans) = (strings(batch, "trace_id")?, strings(batch, "span_id")?);
        for row in 0..batch.num_rows() {
            if let (Some(t), Some(s)) = (&traces[row], &spans[row]) {
                entries.push((t.clone(), s.clone()));
            }
        }
    }
    let (breakdown, walked) = breakdown(engine, &entries).await?;
    Ok(LatencyReport {
        service: request.service.clone(),
        operation: request.operation.clone(),
        start: rfc3339(request.start_ns),
        end: rfc3339(request.end_ns),
        step_seconds: request.step_ns as f64 / 1e9,
        requests: points.iter().map(|p| p.count).sum(),
        series: points,
        buckets,
        heatmap: cells,
        breakdown,
        breakdown_sample: walked,
    })
}

/// Every step of the window, empty ones with a count of 0.
fn fill_steps(points: Vec<PercentilePoint>, request: &LatencyRequest) -> Vec<PercentilePoint> {
    let mut by_time: HashMap<i64, PercentilePoint> =
        points.into_iter().map(|p| (p.time_ns, p)).collect();
    let mut filled = Vec::new();
    let mut time = request.start_ns;
    while time < request.end_ns {
        filled.push(by_time.remove(&time).unwrap_or(PercentilePoint {
            time: rfc3339(time),
            time_ns: time,
            count: 0,
            p50_ns: None,
            p90_ns: None,
            p95_ns: None,
            p99_ns: None,
        }));
        time += request.step_ns;
    }
    filled
}

/// Walks each sampled request's critical path from its entry span and adds
/// up the self time per operation.
async fn breakdown(
    engine: &QueryEngine,
    entries: &[(String, String)],
) -> Result<(Vec<BreakdownRow>, u64), QueryError> {
    let trace_ids: Vec<String> = {
        let mut ids: Vec<String> = entries.iter().map(|(t, _)| t.clone()).collect();
        ids.dedup();
        ids
    };
    // One tree per trace: a trace may hold several requests of the service.
    let trees: HashMap<String, TraceTree> = load_traces(engine, &trace_ids)
        .await?
        .into_iter()
        .map(|(id, trace)| (id, TraceTree::new(trace.spans)))
        .collect();
    let mut per_request: HashMap<(String, String), Vec<f64>> = HashMap::new();
    let mut durations = Vec::new();
    let mut walked = 0usize;
    for (trace_id, span_id) in entries {
        let Some(tree) = trees.get(trace_id) else {
            continue;
        };
        let Some(entry) = tree.spans.iter().position(|s| &s.span_id == span_id) else {
            continue;
        };
        let path = tree.critical_path_from(entry);
        for (op, ns) in tree.self_by_operation(&path) {
            per_request.entry(op).or_default().push(ns as f64);
        }
        durations.push((tree.spans[entry].end_ns - tree.spans[entry].start_ns) as f64);
        walked += 1;
    }
    let mean_duration = durations.iter().sum::<f64>() / walked.max(1) as f64;
    let mut rows: Vec<BreakdownRow> = per_request
        .into_iter()
        .map(|((service, operation), mut values)| {
            let on_path = values.len() as u64;
            let mean_ns = values.iter().sum::<f64>() / walked.max(1) as f64;
            // Requests where the operation was not on the path count as 0.
            values.resize(walked, 0.0);
            values.sort_by(f64::total_cmp);
            let p99_ns = values
                .get(((values.len() as f64 * 0.99).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0.0);
            BreakdownRow {
                service,
                operation,
                mean_ns,
                share: if mean_duration > 0.0 {
                    mean_ns / mean_duration
                } else {
                    0.0
                },
                p99_ns,
                on_path,
            }
        })
        .collect();
    rows.sort_by(|a, b| {
        b.mean_ns
            .total_cmp(&a.mean_ns)
            .then_with(|| a.operation.cmp(&b.operation))
    });
    Ok((rows, walked as u64))
}
