//! Root cause: where a trace's error or time really came from, and over a
//! window, which operation and which attribute values set the bad traces
//! apart from the healthy ones.
//!
//! Window analysis, step by step:
//! 1. SQL over the window summarises every trace (duration, failed or not:
//!    a span with status `ERROR` that is not a client call; OpenTelemetry
//!    marks a CLIENT span `ERROR` for any 4xx answer, and a 404 its caller
//!    handles is no failure of the request — the failures that matter show
//!    on a SERVER or INTERNAL span, or on a root), leaves out the traces
//!    that ended too recently to be complete (their spans may still be in
//!    exporters' batches), finds the window's slow threshold (a duration
//!    quantile), classifies each trace as `error`, `slow` or `baseline`, and
//!    keeps a deterministic sample of each class (ordered by trace id, which
//!    is random).
//! 2. The sampled traces' spans come back in one query; each becomes a
//!    [`TraceTree`] with its critical path.
//! 3. Every bad trace gets a verdict: for a failed trace, its error origin —
//!    or, when that span spent most of its time waiting on a descendant (a
//!    timeout), the descendant, as a latency cause; for a slow trace, the
//!    operation whose self time on the critical path exceeds its baseline
//!    mean the most.
//! 4. Verdicts are counted per (service, kind), weighted by how
//!    many traces each class stands for, into a score: the share of bad
//!    traces that suspect explains — a slow trace's vote scaled by the time
//!    its verdict explains, against the mean of the slow traces, so that a
//!    few far-out traces outweigh many a little over. Slow traces count
//!    less when the window's slow tail is no further out than healthy
//!    traffic's always is ([`slow_tail_sigma`]), so background variance
//!    does not outrank errors.
//!    Evidence is attached: error rates with a chi-square test, the self-time
//!    shift with a Kolmogorov–Smirnov test and its share of the end-to-end
//!    increase, the attribute values over-represented in the traces it
//!    explains, its most common error logs, and example traces.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use super::critical_path::{PathStep, SpanRecord, TraceTree};
use super::stats::{chi_square_2x2, kolmogorov_smirnov};
use super::{i64s, rfc3339, span_records, strings, text_maps, SPAN_RECORD_COLUMNS};
use crate::api::params::{sql_string, sql_time};
use crate::{QueryEngine, QueryError};

/// How a window analysis splits and samples traces.
#[derive(Debug, Clone)]
pub struct WindowRequest {
    pub start_ns: i64,
    pub end_ns: i64,
    /// Only traces that pass through this service.
    pub service: Option<String>,
    /// A trace slower than this quantile of the window's trace durations is
    /// slow (0.95: the slowest 5 %).
    pub slow_quantile: f64,
    /// Traces analysed per class (error, slow, baseline).
    pub sample_per_class: usize,
    /// Traces whose newest span ended after this moment are left out: their
    /// other spans may still sit in an exporter's batch, and a trace missing
    /// its deeper spans blames the deepest span that did arrive.
    pub settled_before_ns: i64,
}

impl WindowRequest {
    pub const DEFAULT_SLOW_QUANTILE: f64 = 0.95;
    pub const DEFAULT_SAMPLE: usize = 1000;
    /// How long after a trace's last span ended it is taken as complete:
    /// twice the OpenTelemetry SDKs' default batch delay (5 s), and
    /// Tempo's `trace_idle_period`.
    pub const DEFAULT_SETTLE_NS: i64 = 10_000_000_000;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CauseKind {
    Error,
    Latency,
}

/// A suspect: where the error or the time came from, most likely first.
#[derive(Debug, Clone, Serialize)]
pub struct Cause {
    pub service: String,
    pub operation: String,
    pub kind: CauseKind,
    /// Window: the share of bad traces this suspect explains (0–1). Trace:
    /// the share of the trace's time (latency) or 1 for the error origin.
    pub score: f64,
    /// Window: the service's operations in the traces it explains, most first
    /// (`operation` is the first of them).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<OperationShare>,
    pub evidence: Evidence,
    pub example_trace_ids: Vec<String>,
    /// One trace: the span that is the suspect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub span_id: Option<String>,
    /// One trace: that span's log records.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
}

/// What supports a suspect. Fields that do not apply are left out.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Evidence {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Window: bad traces (sampled) this suspect explains, of all sampled bad ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub explained_traces: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bad_traces: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub baseline_traces: Option<u64>,
    /// Share of failed / baseline traces in which this operation failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_bad: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_rate_baseline: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chi_square: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// Mean self time on the critical path in bad / baseline traces.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_time_bad_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_time_baseline_ns: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_shift_ns: Option<f64>,
    /// The shift's share of the increase in end-to-end duration.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_of_increase: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ks_statistic: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ks_p_value: Option<f64>,
    /// One trace: the suspect's self time on the critical path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_time_ns: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub share_of_trace: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_message: Option<String>,
    /// Attribute values found more often in the traces this suspect explains.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<AttributeCorrelation>,
    /// The most common warning and error messages of the suspect's service
    /// in the traces it explains (digits folded to `#`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub error_logs: Vec<LogPattern>,
}

#[derive(Debug, Clone, Serialize)]
pub struct OperationShare {
    pub operation: String,
    pub explained_traces: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AttributeCorrelation {
    pub key: String,
    pub value: String,
    /// Share of bad / baseline traces with this value.
    pub bad_share: f64,
    pub baseline_share: f64,
    pub chi_square: f64,
    pub p_value: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogPattern {
    pub message: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    pub time: String,
    pub severity: String,
    pub body: String,
}

/// One trace analysed.
#[derive(Debug, Serialize)]
pub struct TraceReport {
    pub trace_id: String,
    pub start: String,
    pub duration_ns: i64,
    pub error_origin: Option<PathSpan>,
    pub critical_path: Vec<PathSpan>,
    pub causes: Vec<Cause>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PathSpan {
    pub span_id: String,
    pub service: String,
    pub operation: String,
    /// From the trace's start.
    pub offset_ns: i64,
    pub duration_ns: i64,
    /// Self time on the critical path (absent for an error origin off the path).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub self_ns: Option<i64>,
}

/// A window analysed.
#[derive(Debug, Serialize)]
pub struct WindowReport {
    pub start: String,
    pub end: String,
    pub service: Option<String>,
    pub traces: u64,
    pub error_traces: u64,
    pub slow_traces: u64,
    pub slow_threshold_ns: Option<i64>,
    /// How far the slow traces sit above the healthy ones, in robust standard
    /// deviations: about 2 in healthy traffic, far more when something slowed
    /// requests down. Below 4, slow traces count little against failed ones.
    pub slow_tail_sigma: Option<f64>,
    /// Traces of the window left out because they ended too recently to
    /// have all their spans (see `settle`).
    pub unsettled_traces: u64,
    pub sampled: u64,
    pub causes: Vec<Cause>,
    /// Attribute values over-represented in all bad traces.
    pub attributes: Vec<AttributeCorrelation>,
}

// ---------------------------------------------------------------------------
// One trace

/// Root cause of one trace; `None` if no span has that trace id.
pub async fn trace(
    engine: &QueryEngine,
    trace_id: &str,
) -> Result<Option<TraceReport>, QueryError> {
    let ids = [trace_id.to_string()];
    let mut traces = load_traces(engine, &ids).await?;
    let Some(loaded) = traces.remove(trace_id) else {
        return Ok(None);
    };
    let logs = load_trace_logs(engine, trace_id).await?;
    let tree = TraceTree::new(loaded.spans);
    let path = tree.critical_path();
    let duration = tree.duration_ns();
    let trace_start = tree.root().map_or(0, |r| tree.spans[r].start_ns);
    let path_span = |step: usize, self_ns: Option<i64>| {
        let s = &tree.spans[step];
        PathSpan {
            span_id: s.span_id.clone(),
            service: s.service.clone(),
            operation: s.operation.clone(),
            offset_ns: s.start_ns - trace_start,
            duration_ns: s.end_ns - s.start_ns,
            self_ns,
        }
    };
    let self_on_path = |span: usize| path.iter().find(|p| p.span == span).map(|p| p.self_ns);
    let logs_of = |span: usize| -> Vec<LogLine> {
        logs.get(&tree.spans[span].span_id)
            .cloned()
            .unwrap_or_default()
    };
    let cause = |span: usize, kind: CauseKind, score: f64, summary: String| {
        let s = &tree.spans[span];
        let self_ns = self_on_path(span);
        Cause {
            service: s.service.clone(),
            operation: s.operation.clone(),
            kind,
            score,
            operations: Vec::new(),
            evidence: Evidence {
                summary: Some(summary),
                self_time_ns: self_ns,
                share_of_trace: self_ns
                    .filter(|_| duration > 0)
                    .map(|ns| ns as f64 / duration as f64),
                status_message: s.status_message.clone(),
                ..Evidence::default()
            },
            example_trace_ids: vec![trace_id.to_string()],
            span_id: Some(s.span_id.clone()),
            logs: logs_of(span),
        }
    };

    let mut causes = Vec::new();
    let origin = tree.error_origin();
    if let Some(origin) = origin {
        let failed = &tree.spans[origin];
        match tree
            .dominant_wait(origin, &path)
            .filter(|&waited| tree.gave_up_on(origin, waited))
        {
            Some(waited) => {
                let w = &tree.spans[waited];
                causes.push(cause(
                    waited,
                    CauseKind::Latency,
                    1.0,
                    format!(
                        "{} / {} failed after waiting {} ms on {} / {}",
                        failed.service,
                        failed.operation,
                        self_on_path(waited).unwrap_or(0) / 1_000_000,
                        w.service,
                        w.operation
                    ),
                ));
                causes.push(cause(
                    origin,
                    CauseKind::Error,
                    0.5,
                    "the deepest failing span; it failed while waiting on the span above".into(),
                ));
            }
            None => causes.push(cause(
                origin,
                CauseKind::Error,
                1.0,
                "the deepest failing span: none of the spans it called failed".into(),
            )),
        }
    }
    // Where the time went: the largest self time on the critical path.
    if let Some(slowest) = path
        .iter()
        .filter(|step| step.self_ns > 0)
        .max_by_key(|step| step.self_ns)
    {
        if !causes
            .iter()
            .any(|c| c.span_id.as_deref() == Some(&tree.spans[slowest.span].span_id))
        {
            let share = if duration > 0 {
                slowest.self_ns as f64 / duration as f64
            } else {
                0.0
            };
            causes.push(cause(
                slowest.span,
                CauseKind::Latency,
                share,
                format!(
                    "the largest self time on the critical path: {:.0} % of the trace",
                    share * 100.0
                ),
            ));
        }
    }
    causes.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(Some(TraceReport {
        trace_id: trace_id.to_string(),
        start: rfc3339(trace_start),
        duration_ns: duration,
        error_origin: origin.map(|o| path_span(o, self_on_path(o))),
        critical_path: path
            .iter()
            .map(|step| path_span(step.span, Some(step.self_ns)))
            .collect(),
        causes,
    }))
}

async fn load_trace_logs(
    engine: &QueryEngine,
    trace_id: &str,
) -> Result<HashMap<String, Vec<LogLine>>, QueryError> {
    let result = engine
        .sql_internal(&format!(
            "SELECT span_id, CAST(time AS VARCHAR) AS time, \
                    coalesce(severity_text, CAST(severity_number AS VARCHAR)) AS severity, body \
             FROM logs WHERE trace_id = {} AND span_id IS NOT NULL ORDER BY time",
            sql_string(trace_id)
        ))
        .await?;
    let mut logs: HashMap<String, Vec<LogLine>> = HashMap::new();
    for batch in &result.batches {
        let (spans, times, severities, bodies) = (
            strings(batch, "span_id")?,
            strings(batch, "time")?,
            strings(batch, "severity")?,
            strings(batch, "body")?,
        );
        for i in 0..batch.num_rows() {
            if let Some(span) = &spans[i] {
                logs.entry(span.clone()).or_default().push(LogLine {
                    time: times[i].clone().unwrap_or_default(),
                    severity: severities[i].clone().unwrap_or_default(),
                    body: bodies[i].clone().unwrap_or_default(),
                });
            }
        }
    }
    Ok(logs)
}

/// Spans of a trace with what the window analysis needs besides the tree.
#[derive(Debug, Default)]
pub(super) struct LoadedTrace {
    pub spans: Vec<SpanRecord>,
    /// `key=value` of every span and resource attribute in the trace.
    pub attributes: HashSet<(String, String)>,
}

/// The spans of `trace_ids`, grouped by trace.
pub(super) async fn load_traces(
    engine: &QueryEngine,
    trace_ids: &[String],
) -> Result<HashMap<String, LoadedTrace>, QueryError> {
    let mut traces: HashMap<String, LoadedTrace> = HashMap::new();
    if trace_ids.is_empty() {
        return Ok(traces);
    }
    let ids: Vec<String> = trace_ids.iter().map(|id| sql_string(id)).collect();
    let result = engine
        .sql_internal(&format!(
            "SELECT trace_id, {SPAN_RECORD_COLUMNS}, attributes, resource_attributes \
             FROM spans WHERE trace_id IN ({})",
            ids.join(", ")
        ))
        .await?;
    for batch in &result.batches {
        let trace_col = strings(batch, "trace_id")?;
        let spans = span_records(batch)?;
        let attributes = text_maps(batch, "attributes")?;
        let resources = text_maps(batch, "resource_attributes")?;
        for (row, span) in spans.into_iter().enumerate() {
            let (Some(trace_id), Some(span)) = (&trace_col[row], span) else {
                continue;
            };
            let trace = traces.entry(trace_id.clone()).or_default();
            trace.attributes.extend(
                attributes[row]
                    .iter()
                    .chain(&resources[row])
                    .filter(|(key, value)| is_categorical(key, value))
                    .cloned(),
            );
            trace.spans.push(span);
        }
    }
    Ok(traces)
}

/// Attributes worth comparing between bad and healthy traces: not ids, not
/// free text, not per-request values, and not the outcome itself (a status
/// code of 500 sets failed traces apart, but it is what happened, not why).
fn is_categorical(key: &str, value: &str) -> bool {
    const PER_REQUEST: &[&str] = &[
        "id",
        "uuid",
        "query",
        "statement",
        "text",
        "url.full",
        "url.path",
        "url.query",
        "message",
        "stacktrace",
        "user_agent",
        "traceparent",
        "client.address",
        "client.port",
        "network.peer.port",
        "server.port",
        "thread.id",
    ];
    const OUTCOME: &[&str] = &[
        "http.response.status_code",
        "http.status_code",
        "rpc.grpc.status_code",
        "error",
        "error.type",
        "otel.status_code",
        "otel.status_description",
        "exception.type",
        "exception.message",
        "exception.escaped",
    ];
    let key_lower = key.to_ascii_lowercase();
    let ends_with = |suffix: &&str| {
        key_lower == *suffix
            || key_lower.ends_with(&format!(".{suffix}"))
            || key_lower.ends_with(&format!("_{suffix}"))
    };
    value.len() <= 64
        && !PER_REQUEST.iter().any(ends_with)
        && !OUTCOME.contains(&key_lower.as_str())
}

// ---------------------------------------------------------------------------
// A window

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Class {
    Error,
    Slow,
    Baseline,
}

struct Sample {
    class_traces: HashMap<Class, u64>,
    unsettled_traces: u64,
    slow_threshold_ns: Option<i64>,
    /// Sampled trace ids with their class and end-to-end duration.
    traces: Vec<(String, Class, i64)>,
}

/// Root cause over a window: the suspects that set failing and slow traces
/// apart from the rest, most likely first.
pub async fn window(
    engine: &QueryEngine,
    request: &WindowRequest,
) -> Result<WindowReport, QueryError> {
    let started = std::time::Instant::now();
    let sample = sample_traces(engine, request).await?;
    let classified = started.elapsed();
    let ids: Vec<String> = sample.traces.iter().map(|(id, _, _)| id.clone()).collect();
    let mut loaded = load_traces(engine, &ids).await?;
    let read = started.elapsed();

    let mut analysed: Vec<Analysed> = Vec::new();
    for (id, class, duration) in &sample.traces {
        let Some(trace) = loaded.remove(id) else {
            continue;
        };
        let tree = TraceTree::new(trace.spans);
        let path = tree.critical_path();
        analysed.push(Analysed {
            trace_id: id.clone(),
            class: *class,
            duration_ns: *duration,
            self_on_path: tree.self_by_operation(&path),
            failed: tree
                .spans
                .iter()
                .filter(|s| s.is_error)
                .map(|s| (s.service.clone(), s.operation.clone()))
                .collect(),
            verdict: None,
            attributes: trace.attributes,
            tree,
            path,
        });
    }
    let baseline_self = baseline_means(&analysed);
    for trace in &mut analysed {
        trace.verdict = verdict(trace, &baseline_self);
    }
    let mut causes = rank(&analysed, &sample);
    let error_logs = load_error_logs(engine, &causes, &analysed).await?;
    for cause in &mut causes {
        let key = (cause.service.clone(), cause.kind);
        cause.evidence.error_logs = error_logs.get(&key).cloned().unwrap_or_default();
    }
    let bad: Vec<&Analysed> = analysed
        .iter()
        .filter(|t| t.class != Class::Baseline)
        .collect();
    let baseline: Vec<&Analysed> = analysed
        .iter()
        .filter(|t| t.class == Class::Baseline)
        .collect();
    let count = |class| sample.class_traces.get(&class).copied().unwrap_or(0);
    tracing::debug!(
        traces = count(Class::Error) + count(Class::Slow) + count(Class::Baseline),
        sampled = analysed.len(),
        ?classified,
        read_sample = ?read - classified,
        analysed = ?started.elapsed() - read,
        "window root-cause analysis"
    );
    Ok(WindowReport {
        start: rfc3339(request.start_ns),
        end: rfc3339(request.end_ns),
        service: request.service.clone(),
        traces: count(Class::Error) + count(Class::Slow) + count(Class::Baseline),
        error_traces: count(Class::Error),
        slow_traces: count(Class::Slow),
        slow_threshold_ns: sample.slow_threshold_ns,
        slow_tail_sigma: slow_tail_sigma(&analysed),
        unsettled_traces: sample.unsettled_traces,
        sampled: analysed.len() as u64,
        causes,
        attributes: correlate_attributes(&bad, &baseline),
    })
}

struct Analysed {
    trace_id: String,
    class: Class,
    duration_ns: i64,
    /// Self time on the critical path per (service, operation).
    self_on_path: HashMap<(String, String), i64>,
    failed: HashSet<(String, String)>,
    verdict: Option<Verdict>,
    attributes: HashSet<(String, String)>,
    tree: TraceTree,
    path: Vec<PathStep>,
}

/// Mean self time on the critical path of each operation over the baseline
/// traces that have it on their path.
fn baseline_means(traces: &[Analysed]) -> HashMap<(String, String), f64> {
    let mut sums: HashMap<(String, String), (f64, u64)> = HashMap::new();
    for trace in traces.iter().filter(|t| t.class == Class::Baseline) {
        for (op, ns) in &trace.self_on_path {
            let entry = sums.entry(op.clone()).or_default();
            entry.0 += *ns as f64;
            entry.1 += 1;
        }
    }
    sums.into_iter()
        .map(|(op, (sum, n))| (op, sum / n as f64))
        .collect()
}

/// How far the slow traces sit above the healthy ones, in robust standard
/// deviations (median and MAD of the baseline durations). Every window has
/// a slowest 5 %; in healthy traffic its mean sits about 2 deviations out,
/// while a fault that slows some requests puts it ten or more out.
fn slow_tail_sigma(traces: &[Analysed]) -> Option<f64> {
    let mut baseline: Vec<f64> = traces
        .iter()
        .filter(|t| t.class == Class::Baseline)
        .map(|t| t.duration_ns as f64)
        .collect();
    let slow: Vec<f64> = traces
        .iter()
        .filter(|t| t.class == Class::Slow)
        .map(|t| t.duration_ns as f64)
        .collect();
    if baseline.len() < 10 || slow.is_empty() {
        return None;
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let center = median(&mut baseline);
    let mut deviations: Vec<f64> = baseline.iter().map(|d| (d - center).abs()).collect();
    let spread = (median(&mut deviations) * 1.4826).max(1.0);
    let slow_mean = slow.iter().sum::<f64>() / slow.len() as f64;
    Some((slow_mean - center) / spread)
}

/// How much the slow class counts against failed traces: little when its
/// tail is what healthy traffic looks like, fully when it is far out.
fn slow_class_weight(sigma: Option<f64>) -> f64 {
    sigma.map_or(1.0, |z| ((z - 4.0) / 4.0).clamp(0.05, 1.0))
}

/// Where one bad trace's trouble came from.
struct Verdict {
    service: String,
    operation: String,
    kind: CauseKind,
    /// A slow trace: how far the blamed operation's self time on the
    /// critical path exceeded its baseline mean, in nanoseconds.
    excess_ns: Option<f64>,
}

/// Which operation a bad trace's trouble came from.
fn verdict(trace: &Analysed, baseline_self: &HashMap<(String, String), f64>) -> Option<Verdict> {
    let blame = |span: usize, kind: CauseKind| {
        let s = &trace.tree.spans[span];
        Verdict {
            service: s.service.clone(),
            operation: s.operation.clone(),
            kind,
            excess_ns: None,
        }
    };
    match trace.class {
        Class::Baseline => None,
        Class::Error => {
            let origin = trace.tree.error_origin()?;
            // A timeout blames what it waited on: it gave up on it, or that
            // span took far longer than it does in healthy traces.
            let waited = trace
                .tree
                .dominant_wait(origin, &trace.path)
                .filter(|&waited| {
                    let span = &trace.tree.spans[waited];
                    let usual = baseline_self
                        .get(&(span.service.clone(), span.operation.clone()))
                        .copied()
                        .unwrap_or(0.0);
                    let took = trace
                        .self_on_path
                        .get(&(span.service.clone(), span.operation.clone()))
                        .copied()
                        .unwrap_or(0) as f64;
                    trace.tree.gave_up_on(origin, waited) || (usual > 0.0 && took > 3.0 * usual)
                });
            Some(match waited {
                Some(waited) => blame(waited, CauseKind::Latency),
                None => blame(origin, CauseKind::Error),
            })
        }
        Class::Slow => trace
            .self_on_path
            .iter()
            .map(|(op, ns)| {
                (
                    op,
                    *ns as f64 - baseline_self.get(op).copied().unwrap_or(0.0),
                )
            })
            .filter(|(_, excess)| *excess > 0.0)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|((service, operation), excess)| Verdict {
                service: service.clone(),
                operation: operation.clone(),
                kind: CauseKind::Latency,
                excess_ns: Some(excess),
            }),
    }
}

/// Counts verdicts into ranked causes with their evidence.
fn rank(traces: &[Analysed], sample: &Sample) -> Vec<Cause> {
    let sampled = |class| traces.iter().filter(|t| t.class == class).count() as f64;
    let population = |class| sample.class_traces.get(&class).copied().unwrap_or(0) as f64;
    let slow_weight = slow_class_weight(slow_tail_sigma(traces));
    // A sampled trace of a class stands for population/sampled traces of it.
    let weight = |class| {
        let n = sampled(class);
        let scale = if class == Class::Slow {
            slow_weight
        } else {
            1.0
        };
        if n == 0.0 {
            0.0
        } else {
            scale * population(class) / n
        }
    };
    let bad_population = population(Class::Error) + slow_weight * population(Class::Slow);
    // Slow traces vote with the time they explain, not one vote each: a
    // fault that adds 300 ms to 2 % of requests must outrank the service
    // that happens to be a few milliseconds over its mean in the chance
    // slow traces around them. The slow class's votes still sum to its
    // weighted population.
    let slow_excess: Vec<f64> = traces
        .iter()
        .filter(|t| t.class == Class::Slow)
        .map(|t| t.verdict.as_ref().and_then(|v| v.excess_ns).unwrap_or(0.0))
        .collect();
    let mean_slow_excess = slow_excess.iter().sum::<f64>() / slow_excess.len().max(1) as f64;
    let vote = |trace: &Analysed| match trace.verdict.as_ref().and_then(|v| v.excess_ns) {
        Some(excess) if trace.class == Class::Slow && mean_slow_excess > 0.0 => {
            weight(Class::Slow) * excess / mean_slow_excess
        }
        _ => weight(trace.class),
    };
    // A fault in a service shows in each of its operations; the cause is
    // the service, with its operations listed by how many traces they explain.
    let mut verdicts: BTreeMap<(String, CauseKind), Vec<(&Analysed, &str)>> = BTreeMap::new();
    for trace in traces {
        if let Some(verdict) = &trace.verdict {
            verdicts
                .entry((verdict.service.clone(), verdict.kind))
                .or_default()
                .push((trace, verdict.operation.as_str()));
        }
    }
    let bad: Vec<&Analysed> = traces
        .iter()
        .filter(|t| t.class != Class::Baseline)
        .collect();
    let failed: Vec<&Analysed> = traces.iter().filter(|t| t.class == Class::Error).collect();
    let baseline: Vec<&Analysed> = traces
        .iter()
        .filter(|t| t.class == Class::Baseline)
        .collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            None
        } else {
            Some(v.iter().sum::<f64>() / v.len() as f64)
        }
    };
    let durations =
        |set: &[&Analysed]| set.iter().map(|t| t.duration_ns as f64).collect::<Vec<_>>();
    let e2e_increase = match (mean(&durations(&bad)), mean(&durations(&baseline))) {
        (Some(b), Some(base)) if b > base => Some(b - base),
        _ => None,
    };

    let mut causes: Vec<Cause> = verdicts
        .into_iter()
        .filter_map(|((service, kind), explained)| {
            let weighted: f64 = explained.iter().map(|(t, _)| vote(t)).sum();
            let score = if bad_population > 0.0 {
                weighted / bad_population
            } else {
                0.0
            };
            if score < 0.02 {
                return None;
            }
            let mut per_operation: BTreeMap<&str, u64> = BTreeMap::new();
            for (_, operation) in &explained {
                *per_operation.entry(operation).or_default() += 1;
            }
            let mut operations: Vec<OperationShare> = per_operation
                .into_iter()
                .map(|(operation, explained_traces)| OperationShare {
                    operation: operation.to_string(),
                    explained_traces,
                })
                .collect();
            operations.sort_by(|a, b| {
                b.explained_traces
                    .cmp(&a.explained_traces)
                    .then_with(|| a.operation.cmp(&b.operation))
            });
            let explained: Vec<&Analysed> = explained.into_iter().map(|(t, _)| t).collect();
            let mut evidence = Evidence {
                explained_traces: Some(explained.len() as u64),
                bad_traces: Some(bad.len() as u64),
                baseline_traces: Some(baseline.len() as u64),
                ..Evidence::default()
            };
            // Did the service fail more often in failed traces?
            let failing = |set: &[&Analysed]| {
                set.iter()
                    .filter(|t| t.failed.iter().any(|(s, _)| *s == service))
                    .count() as u64
            };
            if !failed.is_empty() && !baseline.is_empty() {
                let (fb, fbase) = (failing(&failed), failing(&baseline));
                evidence.error_rate_bad = Some(fb as f64 / failed.len() as f64);
                evidence.error_rate_baseline = Some(fbase as f64 / baseline.len() as f64);
                if let Some((chi2, p)) =
                    chi_square_2x2(fb, failed.len() as u64, fbase, baseline.len() as u64)
                {
                    evidence.chi_square = Some(chi2);
                    evidence.p_value = Some(p);
                }
            }
            // Did its self time on the critical path grow?
            let self_times = |set: &[&Analysed]| {
                set.iter()
                    .map(|t| {
                        t.self_on_path
                            .iter()
                            .filter(|((s, _), _)| *s == service)
                            .map(|(_, ns)| *ns as f64)
                            .sum::<f64>()
                    })
                    .collect::<Vec<_>>()
            };
            let (in_bad, in_base) = (self_times(&bad), self_times(&baseline));
            if let (Some(b), Some(base)) = (mean(&in_bad), mean(&in_base)) {
                evidence.self_time_bad_ns = Some(b);
                evidence.self_time_baseline_ns = Some(base);
                evidence.latency_shift_ns = Some(b - base);
                evidence.share_of_increase =
                    e2e_increase.map(|inc| ((b - base) / inc).clamp(-1.0, 1.0));
                if let Some((d, p)) = kolmogorov_smirnov(&in_bad, &in_base) {
                    evidence.ks_statistic = Some(d);
                    evidence.ks_p_value = Some(p);
                }
            }
            evidence.attributes = correlate_attributes(&explained, &baseline)
                .into_iter()
                .take(5)
                .collect();
            let operation = operations
                .first()
                .map(|o| o.operation.clone())
                .unwrap_or_default();
            evidence.summary = Some(summary(
                &service,
                &operation,
                kind,
                explained.len(),
                &evidence,
            ));
            Some(Cause {
                service,
                operation,
                kind,
                score,
                operations,
                evidence,
                example_trace_ids: explained
                    .iter()
                    .take(5)
                    .map(|t| t.trace_id.clone())
                    .collect(),
                span_id: None,
                logs: Vec::new(),
            })
        })
        .collect();
    causes.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| (&a.service, a.kind).cmp(&(&b.service, b.kind)))
    });
    causes.truncate(10);
    causes
}

fn summary(
    service: &str,
    operation: &str,
    kind: CauseKind,
    explained: usize,
    evidence: &Evidence,
) -> String {
    let what = match kind {
        CauseKind::Error => "failed first".to_string(),
        CauseKind::Latency => match evidence.latency_shift_ns {
            Some(shift) if shift > 0.0 => {
                format!("took {:.1} ms longer on the critical path", shift / 1e6)
            }
            _ => "was where the time went".to_string(),
        },
    };
    let mut text =
        format!("{service} / {operation} {what} in {explained} of the sampled bad traces");
    if let Some(top) = evidence.attributes.first() {
        text.push_str(&format!(
            "; {}={} in {:.0} % of them vs {:.0} % of healthy traces",
            top.key,
            top.value,
            top.bad_share * 100.0,
            top.baseline_share * 100.0
        ));
    }
    text
}

/// Attribute values found significantly more often in `bad` than in
/// `baseline` traces, most over-represented first.
fn correlate_attributes(bad: &[&Analysed], baseline: &[&Analysed]) -> Vec<AttributeCorrelation> {
    if bad.is_empty() || baseline.is_empty() {
        return Vec::new();
    }
    let mut counts: HashMap<&(String, String), (u64, u64)> = HashMap::new();
    for trace in bad {
        for pair in &trace.attributes {
            counts.entry(pair).or_default().0 += 1;
        }
    }
    for trace in baseline {
        for pair in &trace.attributes {
            counts.entry(pair).or_default().1 += 1;
        }
    }
    // A key with a different value in most traces identifies requests, not causes.
    let mut values_per_key: HashMap<&str, usize> = HashMap::new();
    for (key, _) in counts.keys() {
        *values_per_key.entry(key.as_str()).or_default() += 1;
    }
    let traces = (bad.len() + baseline.len()) as f64;
    let (n_bad, n_base) = (bad.len() as u64, baseline.len() as u64);
    let mut found: Vec<AttributeCorrelation> = counts
        .into_iter()
        .filter(|((key, _), _)| (values_per_key[key.as_str()] as f64) < (traces / 4.0).max(2.0))
        .filter_map(|((key, value), (in_bad, in_base))| {
            let (bad_share, baseline_share) =
                (in_bad as f64 / n_bad as f64, in_base as f64 / n_base as f64);
            let (chi_square, p_value) = chi_square_2x2(in_bad, n_bad, in_base, n_base)?;
            (bad_share > baseline_share && p_value < 0.001).then(|| AttributeCorrelation {
                key: key.clone(),
                value: value.clone(),
                bad_share,
                baseline_share,
                chi_square,
                p_value,
            })
        })
        .collect();
    found.sort_by(|a, b| {
        (b.bad_share - b.baseline_share)
            .total_cmp(&(a.bad_share - a.baseline_share))
            .then_with(|| (&a.key, &a.value).cmp(&(&b.key, &b.value)))
    });
    found.truncate(10);
    found
}

/// The window's traces, classified, with a sample of each class.
async fn sample_traces(
    engine: &QueryEngine,
    request: &WindowRequest,
) -> Result<Sample, QueryError> {
    let window = format!(
        "start_time >= {} AND start_time <= {}",
        sql_time(request.start_ns),
        sql_time(request.end_ns)
    );
    let through_service = match &request.service {
        Some(service) => format!(
            " AND trace_id IN (SELECT trace_id FROM spans WHERE {window} AND service_name = {})",
            sql_string(service)
        ),
        None => String::new(),
    };
    // Unsettled traces are counted (one row of their class comes back with
    // the count) but neither sampled nor part of the slow threshold. The
    // threshold is a window aggregate over all traces rather than a join
    // with a one-row aggregate: DataFusion would compute the per-trace
    // summary twice and hold all of it in the join's build side.
    let sql = format!(
        "WITH traces AS ( \
           SELECT trace_id, \
                  CAST(max(end_time) AS BIGINT) - CAST(min(start_time) AS BIGINT) AS duration_ns, \
                  CAST(max(end_time) AS BIGINT) > {settled} AS unsettled, \
                  max(CASE WHEN status_code = 'ERROR' AND (kind <> 'CLIENT' OR parent_span_id IS NULL) \
                           THEN 1 ELSE 0 END) AS failed \
           FROM spans WHERE {window}{through_service} GROUP BY trace_id), \
         thresholded AS ( \
           SELECT t.*, CAST(approx_percentile_cont( \
                    CASE WHEN unsettled THEN NULL ELSE duration_ns END, {q}) OVER () AS BIGINT) AS slow_ns \
           FROM traces t), \
         classified AS ( \
           SELECT trace_id, duration_ns, slow_ns, \
                  CASE WHEN unsettled THEN 'unsettled' \
                       WHEN failed = 1 THEN 'error' \
                       WHEN duration_ns > slow_ns THEN 'slow' ELSE 'baseline' END AS class \
           FROM thresholded) \
         SELECT trace_id, duration_ns, slow_ns, class, class_traces FROM ( \
           SELECT c.*, row_number() OVER (PARTITION BY class ORDER BY trace_id) AS n, \
                  count(*) OVER (PARTITION BY class) AS class_traces \
           FROM classified c) \
         WHERE n <= {n} AND (class <> 'unsettled' OR n = 1)",
        settled = request.settled_before_ns,
        q = request.slow_quantile,
        n = request.sample_per_class
    );
    let result = engine.sql_internal(&sql).await?;
    let mut sample = Sample {
        class_traces: HashMap::new(),
        unsettled_traces: 0,
        slow_threshold_ns: None,
        traces: Vec::new(),
    };
    for batch in &result.batches {
        let ids = strings(batch, "trace_id")?;
        let durations = i64s(batch, "duration_ns")?;
        let thresholds = i64s(batch, "slow_ns")?;
        let classes = strings(batch, "class")?;
        let totals = i64s(batch, "class_traces")?;
        for row in 0..batch.num_rows() {
            let class = match classes[row].as_deref() {
                Some("unsettled") => {
                    sample.unsettled_traces = totals[row].unwrap_or(0).max(0) as u64;
                    continue;
                }
                Some("error") => Class::Error,
                Some("slow") => Class::Slow,
                _ => Class::Baseline,
            };
            sample.slow_threshold_ns = sample.slow_threshold_ns.or(thresholds[row]);
            sample
                .class_traces
                .insert(class, totals[row].unwrap_or(0).max(0) as u64);
            if let Some(id) = &ids[row] {
                sample
                    .traces
                    .push((id.clone(), class, durations[row].unwrap_or(0)));
            }
        }
    }
    Ok(sample)
}

/// The most common warning and error log messages of each cause's service
/// in the traces it explains.
async fn load_error_logs(
    engine: &QueryEngine,
    causes: &[Cause],
    traces: &[Analysed],
) -> Result<HashMap<(String, CauseKind), Vec<LogPattern>>, QueryError> {
    let explains = |cause: &Cause, trace: &Analysed| {
        trace
            .verdict
            .as_ref()
            .is_some_and(|v| v.service == cause.service && v.kind == cause.kind)
    };
    let explained: HashSet<&str> = causes
        .iter()
        .flat_map(|c| {
            traces
                .iter()
                .filter(move |t| explains(c, t))
                .map(|t| t.trace_id.as_str())
        })
        .collect();
    let mut patterns = HashMap::new();
    if explained.is_empty() {
        return Ok(patterns);
    }
    let ids: Vec<String> = explained.iter().map(|id| sql_string(id)).collect();
    let result = engine
        .sql_internal(&format!(
            "SELECT trace_id, service_name, body FROM logs \
             WHERE severity_number >= 13 AND trace_id IN ({})",
            ids.join(", ")
        ))
        .await?;
    // (trace, service) → messages
    let mut by_trace_service: HashMap<(String, String), Vec<String>> = HashMap::new();
    for batch in &result.batches {
        let (trace_ids, services, bodies) = (
            strings(batch, "trace_id")?,
            strings(batch, "service_name")?,
            strings(batch, "body")?,
        );
        for row in 0..batch.num_rows() {
            if let (Some(t), Some(s), Some(b)) = (&trace_ids[row], &services[row], &bodies[row]) {
                by_trace_service
                    .entry((t.clone(), s.clone()))
                    .or_default()
                    .push(fold_digits(b));
            }
        }
    }
    for cause in causes {
        let key = (cause.service.clone(), cause.kind);
        let mut counts: HashMap<&str, u64> = HashMap::new();
        for trace in traces.iter().filter(|t| explains(cause, t)) {
            for message in by_trace_service
                .get(&(trace.trace_id.clone(), cause.service.clone()))
                .into_iter()
                .flatten()
            {
                *counts.entry(message.as_str()).or_default() += 1;
            }
        }
        let mut top: Vec<LogPattern> = counts
            .into_iter()
            .map(|(message, count)| LogPattern {
                message: message.to_string(),
                count,
            })
            .collect();
        top.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.message.cmp(&b.message))
        });
        top.truncate(3);
        patterns.insert(key, top);
    }
    Ok(patterns)
}

/// A log message with its numbers folded, so `took 912ms` and `took 876ms`
/// count as one message.
fn fold_digits(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut in_number = false;
    for c in message.chars().take(300) {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            in_number = false;
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_fold_so_messages_group() {
        assert_eq!(
            fold_digits("timeout after 912ms calling 10.0.0.7"),
            "timeout after #ms calling #.#.#.#"
        );
    }

    #[test]
    fn ids_and_free_text_are_not_compared() {
        assert!(is_categorical("customer.tier", "gold"));
        assert!(is_categorical("service.version", "1.4.0"));
        assert!(!is_categorical("db.query.text", "SELECT 1"));
        assert!(!is_categorical("request.id", "abc"));
        assert!(!is_categorical("customer.tier", &"x".repeat(100)));
        assert!(!is_categorical("http.response.status_code", "500"));
    }
}
