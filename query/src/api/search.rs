//! weft's own search endpoints: trace by id with its logs, trace search,
//! log search, services, operations and the service dependency graph. Each
//! builds SQL from its parameters (values quoted as literals) and shapes
//! the rows as JSON.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, RawQuery};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::params::{parse_duration, parse_time, parse_trace_id, sql_string, sql_time};
use super::{ApiError, ApiResult, TenantEngine};
use crate::engine::QueryEngine;
use crate::format;

/// Results a search returns when the request does not say.
pub(super) const DEFAULT_LIMIT: usize = 20;
/// The most results one search returns.
pub(super) const MAX_LIMIT: usize = 1000;

/// Runs `sql` and returns its rows as JSON objects.
pub(super) async fn objects(engine: &QueryEngine, sql: &str) -> ApiResult<Vec<Map<String, Value>>> {
    Ok(objects_or_truncated(engine, sql).await?.0)
}

/// Like [`objects`], and whether the row limit cut the answer short.
async fn objects_or_truncated(
    engine: &QueryEngine,
    sql: &str,
) -> ApiResult<(Vec<Map<String, Value>>, bool)> {
    let result = engine.sql(sql).await?;
    Ok((format::json_objects(&result.batches)?, result.truncated))
}

/// A search for spans, and through them traces. Both APIs fill it from
/// their own parameters.
#[derive(Debug, Default)]
pub(super) struct SpanSearch {
    pub service: Option<String>,
    pub operation: Option<String>,
    pub span_kind: Option<String>,
    /// Attribute conditions `key = value`.
    pub tags: Vec<(String, String)>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pub limit: usize,
}

impl SpanSearch {
    /// The SQL conditions on one span.
    fn conditions(&self) -> Vec<String> {
        let mut conditions = Vec::new();
        if let Some(service) = &self.service {
            conditions.push(format!("service_name = {}", sql_string(service)));
        }
        if let Some(operation) = &self.operation {
            conditions.push(format!("name = {}", sql_string(operation)));
        }
        if let Some(kind) = &self.span_kind {
            conditions.push(format!("kind = {}", sql_string(&kind.to_ascii_uppercase())));
        }
        for (key, value) in &self.tags {
            conditions.push(tag_condition(key, value));
        }
        if let Some(min) = self.min_duration_ns {
            conditions.push(format!("duration_ns >= {min}"));
        }
        if let Some(max) = self.max_duration_ns {
            conditions.push(format!("duration_ns <= {max}"));
        }
        if let Some(start) = self.start_ns {
            conditions.push(format!("start_time >= {}", sql_time(start)));
        }
        if let Some(end) = self.end_ns {
            conditions.push(format!("start_time <= {}", sql_time(end)));
        }
        conditions
    }

    /// SQL giving the ids of the matching traces, most recent first.
    pub fn trace_ids_sql(&self) -> String {
        format!(
            "SELECT trace_id, max(start_time) AS last_seen FROM spans {} \
             GROUP BY trace_id ORDER BY last_seen DESC LIMIT {}",
            where_clause(&self.conditions()),
            self.limit
        )
    }
}

/// A `key=value` condition as users of Jaeger write them: `error=true` is a
/// span with an error status, `span.kind` and `otel.status_code` are the
/// span's own fields; any other key is a span or resource attribute.
fn tag_condition(key: &str, value: &str) -> String {
    match key {
        "error" => match value {
            "true" => "status_code = 'ERROR'".to_string(),
            _ => "status_code <> 'ERROR'".to_string(),
        },
        "span.kind" => format!("kind = {}", sql_string(&value.to_ascii_uppercase())),
        "otel.status_code" => format!("status_code = {}", sql_string(&value.to_ascii_uppercase())),
        _ => format!(
            "(attributes[{key}] = {value} OR resource_attributes[{key}] = {value})",
            key = sql_string(key),
            value = sql_string(value)
        ),
    }
}

fn where_clause(conditions: &[String]) -> String {
    if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    }
}

fn in_list(values: &[String]) -> String {
    values
        .iter()
        .map(|v| sql_string(v))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn limit(value: Option<usize>) -> Result<usize, ApiError> {
    match value {
        None => Ok(DEFAULT_LIMIT),
        Some(0) => Err(ApiError::bad_request("limit must be at least 1")),
        Some(n) => Ok(n.min(MAX_LIMIT)),
    }
}

/// A parameter that may be absent or empty, parsed when present; a bad value
/// is a 400 naming it.
pub(super) fn optional<T>(
    name: &str,
    value: Option<&str>,
    parse: fn(&str, &str) -> Result<T, String>,
) -> Result<Option<T>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| parse(name, v).map_err(ApiError::bad_request))
        .transpose()
}

/// The `[start, end]` window of a request: `end` defaults to now, `start` to
/// `lookback_ns` before `end`; a window that does not move forward is a 400.
pub(super) fn time_window(
    start: Option<&str>,
    end: Option<&str>,
    lookback_ns: i64,
) -> Result<(i64, i64), ApiError> {
    let end = optional("end", end, parse_time)?.unwrap_or_else(super::params::now_nanos);
    let start = optional("start", start, parse_time)?.unwrap_or(end.saturating_sub(lookback_ns));
    if start >= end {
        return Err(ApiError::bad_request("start must be before end"));
    }
    Ok((start, end))
}

/// The spans and logs of some traces, in time order.
pub(super) struct TraceRecords {
    pub spans: Vec<Map<String, Value>>,
    pub logs: Vec<Map<String, Value>>,
    /// The query row limit (`[query] max_rows`) cut the spans or the logs short.
    pub truncated: bool,
}

/// Spans and logs of the traces in `trace_ids`, in time order.
pub(super) async fn spans_and_logs(
    engine: &QueryEngine,
    trace_ids: &[String],
) -> ApiResult<TraceRecords> {
    let ids = in_list(trace_ids);
    let spans_sql =
        format!("SELECT * FROM spans WHERE trace_id IN ({ids}) ORDER BY start_time, span_id");
    let logs_sql = format!("SELECT * FROM logs WHERE trace_id IN ({ids}) ORDER BY time");
    let ((spans, spans_cut), (logs, logs_cut)) = tokio::try_join!(
        objects_or_truncated(engine, &spans_sql),
        objects_or_truncated(engine, &logs_sql)
    )?;
    Ok(TraceRecords {
        spans,
        logs,
        truncated: spans_cut || logs_cut,
    })
}

/// `GET /api/v1/traces/{trace_id}`: every span of the trace and every log
/// record carrying its trace id, up to the query row limit each
/// (`truncated` says when a trace is bigger).
pub(super) async fn trace(
    TenantEngine(engine): TenantEngine,
    Path(trace_id): Path<String>,
) -> ApiResult {
    let trace_id = parse_trace_id(&trace_id).map_err(ApiError::bad_request)?;
    let trace = spans_and_logs(&engine, std::slice::from_ref(&trace_id)).await?;
    if trace.spans.is_empty() && trace.logs.is_empty() {
        return Err(ApiError::not_found(format!("trace {trace_id} not found")));
    }
    Ok(Json(json!({
        "trace_id": trace_id,
        "spans": trace.spans,
        "logs": trace.logs,
        "truncated": trace.truncated,
    }))
    .into_response())
}

/// `GET /api/v1/traces?service=&operation=&tags=k=v&min_duration=&max_duration=&start=&end=&limit=`:
/// the most recent traces with a span matching every condition, summarised.
/// `tags` may repeat; each is `key=value`.
pub(super) async fn find_traces(
    TenantEngine(engine): TenantEngine,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let mut search = SpanSearch::default();
    let mut limit_param = None;
    for (name, value) in form_pairs(raw.as_deref()) {
        let value = value.as_str();
        match name.as_str() {
            "service" => search.service = Some(value.to_string()).filter(|v| !v.is_empty()),
            "operation" => search.operation = Some(value.to_string()).filter(|v| !v.is_empty()),
            "tags" => {
                let (key, value) = value.split_once('=').ok_or_else(|| {
                    ApiError::bad_request(format!("tags={value:?} is not key=value"))
                })?;
                search.tags.push((key.to_string(), value.to_string()));
            }
            "min_duration" => {
                search.min_duration_ns = optional(&name, Some(value), parse_duration)?
            }
            "max_duration" => {
                search.max_duration_ns = optional(&name, Some(value), parse_duration)?
            }
            "start" => search.start_ns = optional(&name, Some(value), parse_time)?,
            "end" => search.end_ns = optional(&name, Some(value), parse_time)?,
            "limit" => {
                limit_param = Some(value.parse::<usize>().map_err(|_| {
                    ApiError::bad_request(format!("limit={value:?} is not a number"))
                })?)
            }
            _ => return Err(ApiError::bad_request(format!("unknown parameter {name:?}"))),
        }
    }
    search.limit = limit(limit_param)?;
    let sql = format!(
        "WITH hits AS ({hits}), \
         traces AS ( \
           SELECT s.trace_id, h.last_seen, \
                  min(s.start_time) AS start_time, \
                  max(s.end_time) AS end_time, \
                  count(*) AS span_count, \
                  sum(CASE WHEN s.status_code = 'ERROR' THEN 1 ELSE 0 END) AS error_count, \
                  array_sort(array_agg(DISTINCT s.service_name)) AS services, \
                  first_value(s.service_name ORDER BY s.parent_span_id IS NOT NULL, s.start_time) AS root_service, \
                  first_value(s.name ORDER BY s.parent_span_id IS NOT NULL, s.start_time) AS root_name \
           FROM spans s JOIN hits h ON s.trace_id = h.trace_id \
           GROUP BY s.trace_id, h.last_seen) \
         SELECT trace_id, start_time, \
                CAST(end_time AS BIGINT) - CAST(start_time AS BIGINT) AS duration_ns, \
                span_count, error_count, services, root_service, root_name \
         FROM traces ORDER BY last_seen DESC",
        hits = search.trace_ids_sql()
    );
    let traces = objects(&engine, &sql).await?;
    Ok(Json(json!({ "traces": traces })).into_response())
}

/// The `name=value` pairs of a query string, decoded.
pub(super) fn form_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .map(|(name, value)| (name.into_owned(), value.into_owned()))
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LogSearchParams {
    q: Option<String>,
    service: Option<String>,
    severity: Option<String>,
    trace_id: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
}

/// The lowest severity number of a level name (`WARN` → 13), as OpenTelemetry
/// numbers them; a number is taken as is.
fn min_severity(value: &str) -> Result<i32, ApiError> {
    if let Ok(number) = value.parse::<i32>() {
        return Ok(number);
    }
    Ok(match value.to_ascii_uppercase().as_str() {
        "TRACE" => 1,
        "DEBUG" => 5,
        "INFO" => 9,
        "WARN" | "WARNING" => 13,
        "ERROR" => 17,
        "FATAL" => 21,
        _ => {
            return Err(ApiError::bad_request(format!(
                "severity={value:?} is not a level (TRACE, DEBUG, INFO, WARN, ERROR, FATAL) or a severity number"
            )))
        }
    })
}

/// `GET /api/v1/logs?q=&service=&severity=&trace_id=&start=&end=&limit=&offset=`:
/// log records, newest first. `q` is a full-text query over the body
/// (see `text_match`); `severity` keeps records at that level or above.
pub(super) async fn find_logs(
    TenantEngine(engine): TenantEngine,
    params: Result<Query<LogSearchParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let mut conditions = Vec::new();
    if let Some(q) = params.q.as_deref().filter(|q| !q.trim().is_empty()) {
        crate::text_match::TextQuery::parse(q).map_err(|e| ApiError::bad_request(e.to_string()))?;
        conditions.push(format!("text_match(body, {})", sql_string(q)));
    }
    if let Some(service) = params.service.filter(|s| !s.is_empty()) {
        conditions.push(format!("service_name = {}", sql_string(&service)));
    }
    if let Some(severity) = params.severity.filter(|s| !s.is_empty()) {
        conditions.push(format!("severity_number >= {}", min_severity(&severity)?));
    }
    if let Some(trace_id) = params.trace_id.filter(|s| !s.is_empty()) {
        let trace_id = parse_trace_id(&trace_id).map_err(ApiError::bad_request)?;
        conditions.push(format!("trace_id = {}", sql_string(&trace_id)));
    }
    if let Some(start) = optional("start", params.start.as_deref(), parse_time)? {
        conditions.push(format!("time >= {}", sql_time(start)));
    }
    if let Some(end) = optional("end", params.end.as_deref(), parse_time)? {
        conditions.push(format!("time <= {}", sql_time(end)));
    }
    let limit = limit(params.limit)?;
    let offset = params.offset.unwrap_or(0);
    let sql = format!(
        "SELECT * FROM logs {} ORDER BY time DESC LIMIT {limit} OFFSET {offset}",
        where_clause(&conditions)
    );
    let logs = objects(&engine, &sql).await?;
    Ok(Json(json!({ "logs": logs, "limit": limit, "offset": offset })).into_response())
}

/// The services that sent spans, sorted.
pub(super) async fn service_names(engine: &QueryEngine) -> ApiResult<Vec<Value>> {
    let rows = objects(
        engine,
        "SELECT DISTINCT service_name FROM spans ORDER BY service_name",
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|mut row| row.remove("service_name"))
        .filter(|v| !v.is_null())
        .collect())
}

/// `GET /api/v1/services`
pub(super) async fn services(TenantEngine(engine): TenantEngine) -> ApiResult {
    let services = service_names(&engine).await?;
    Ok(Json(json!({ "services": services })).into_response())
}

/// The operations (span name and kind) of `service`, sorted.
pub(super) async fn service_operations(
    engine: &QueryEngine,
    service: &str,
    span_kind: Option<&str>,
) -> ApiResult<Vec<Map<String, Value>>> {
    let mut conditions = vec![format!("service_name = {}", sql_string(service))];
    if let Some(kind) = span_kind.filter(|k| !k.is_empty()) {
        conditions.push(format!("kind = {}", sql_string(&kind.to_ascii_uppercase())));
    }
    objects(
        engine,
        &format!(
            "SELECT DISTINCT name, kind FROM spans {} ORDER BY name, kind",
            where_clause(&conditions)
        ),
    )
    .await
}

/// `GET /api/v1/services/{service}/operations?start=&end=`: the service's
/// operations (span name and kind) with their span count, error count and
/// p50/p99 duration in the window (all data without one).
pub(super) async fn operations(
    TenantEngine(engine): TenantEngine,
    Path(service): Path<String>,
    params: Result<Query<WindowParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let mut conditions = vec![format!("service_name = {}", sql_string(&service))];
    if let Some(start) = optional("start", params.start.as_deref(), parse_time)? {
        conditions.push(format!("start_time >= {}", sql_time(start)));
    }
    if let Some(end) = optional("end", params.end.as_deref(), parse_time)? {
        conditions.push(format!("start_time <= {}", sql_time(end)));
    }
    let sql = format!(
        "SELECT name, kind, count(*) AS span_count, \
                sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS error_count, \
                CAST(approx_percentile_cont(duration_ns, 0.5) AS BIGINT) AS p50_ns, \
                CAST(approx_percentile_cont(duration_ns, 0.99) AS BIGINT) AS p99_ns \
         FROM spans {} GROUP BY name, kind ORDER BY name, kind",
        where_clause(&conditions)
    );
    let operations = objects(&engine, &sql).await?;
    Ok(Json(json!({ "operations": operations })).into_response())
}

/// Calls between services in `[start_ns, end_ns]`: a span whose parent
/// belongs to another service is one call from the parent's service to its
/// own, an error if the child span failed.
pub(super) async fn dependency_edges(
    engine: &QueryEngine,
    start_ns: i64,
    end_ns: i64,
) -> ApiResult<Vec<Map<String, Value>>> {
    let window = |alias: &str| {
        format!(
            "{alias}.start_time >= {} AND {alias}.start_time <= {}",
            sql_time(start_ns),
            sql_time(end_ns)
        )
    };
    let sql = format!(
        "SELECT p.service_name AS parent, c.service_name AS child, \
                count(*) AS call_count, \
                sum(CASE WHEN c.status_code = 'ERROR' THEN 1 ELSE 0 END) AS error_count \
         FROM spans c JOIN spans p ON c.trace_id = p.trace_id AND c.parent_span_id = p.span_id \
         WHERE c.service_name <> p.service_name AND {} AND {} \
         GROUP BY p.service_name, c.service_name \
         ORDER BY parent, child",
        window("c"),
        window("p")
    );
    objects(engine, &sql).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WindowParams {
    start: Option<String>,
    end: Option<String>,
}

/// Without `start`, dependency and other window queries look back this far.
pub(super) const DEFAULT_LOOKBACK_NS: i64 = 3600 * 1_000_000_000;

/// `GET /api/v1/dependencies?start=&end=` (default: the last hour).
pub(super) async fn dependencies(
    TenantEngine(engine): TenantEngine,
    params: Result<Query<WindowParams>, QueryRejection>,
) -> ApiResult {
    let Query(params) = params?;
    let (start, end) = time_window(
        params.start.as_deref(),
        params.end.as_deref(),
        DEFAULT_LOOKBACK_NS,
    )?;
    let edges = dependency_edges(&engine, start, end).await?;
    Ok(Json(json!({ "dependencies": edges })).into_response())
}
