//! The Jaeger query API (`/api/services`, `/api/traces`, …) in Jaeger's JSON
//! shapes, so Grafana's Jaeger data source and Jaeger's own UI work against
//! weft unchanged. Answers come from the same SQL as weft's own API;
//! this module only translates parameters and reshapes rows.
//!
//! Jaeger's conventions: times are microseconds (`start`, `end`,
//! `startTime`), `endTs`/`lookback` of dependencies are milliseconds, every
//! answer is an envelope `{"data", "total", "limit", "offset", "errors"}`.

use std::collections::BTreeMap;

use axum::extract::{Path, RawQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value};

use super::params::{now_nanos, parse_duration, parse_trace_id, result_time_nanos};
use super::search::{
    dependency_edges, form_pairs, limit, objects, optional, service_names, spans_and_logs,
    SpanSearch, TraceRecords, DEFAULT_LOOKBACK_NS,
};
use super::{ApiError, ApiResult, TenantEngine};
use crate::engine::QueryEngine;

/// The first non-empty value of query parameter `key`.
fn param<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

fn envelope(data: Value) -> Response {
    let total = data.as_array().map_or(0, Vec::len);
    Json(json!({ "data": data, "total": total, "limit": 0, "offset": 0, "errors": null }))
        .into_response()
}

fn jaeger_error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({
            "data": null, "total": 0, "limit": 0, "offset": 0,
            "errors": [{ "code": status.as_u16(), "msg": message }]
        })),
    )
        .into_response()
}

/// `GET /api/services`
pub(super) async fn services(TenantEngine(engine): TenantEngine) -> ApiResult {
    Ok(envelope(Value::Array(service_names(&engine).await?)))
}

/// The operation names of `service`, as Grafana reads them.
async fn service_operations_names(engine: &QueryEngine, service: &str) -> ApiResult<Vec<Value>> {
    let mut names: Vec<Value> = super::search::service_operations(engine, service, None)
        .await?
        .into_iter()
        .filter_map(|mut op| op.remove("name"))
        .collect();
    names.dedup();
    Ok(names)
}

/// `GET /api/services/{service}/operations`
pub(super) async fn service_operations(
    TenantEngine(engine): TenantEngine,
    Path(service): Path<String>,
) -> ApiResult {
    Ok(envelope(Value::Array(
        service_operations_names(&engine, &service).await?,
    )))
}

/// `GET /api/operations?service=&spanKind=`: operations with their kind, as
/// Jaeger's UI reads them.
pub(super) async fn operations(
    TenantEngine(engine): TenantEngine,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let pairs = form_pairs(raw.as_deref());
    let get = |key: &str| param(&pairs, key);
    let service = get("service").ok_or_else(|| ApiError::bad_request("service is required"))?;
    let operations = super::search::service_operations(&engine, service, get("spanKind")).await?;
    let data = operations
        .into_iter()
        .map(|op| {
            json!({
                "name": op.get("name").cloned().unwrap_or(Value::Null),
                "spanKind": op.get("kind").and_then(Value::as_str).map(span_kind).unwrap_or(""),
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

/// `GET /api/traces?service=&operation=&tags=&start=&end=&lookback=&minDuration=&maxDuration=&limit=`
pub(super) async fn find_traces(
    TenantEngine(engine): TenantEngine,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let pairs = form_pairs(raw.as_deref());
    let get = |key: &str| param(&pairs, key);
    // Jaeger's UI asks for explicit trace ids this way.
    let trace_ids: Vec<String> = pairs
        .iter()
        .filter(|(k, _)| k == "traceID")
        .map(|(_, v)| parse_trace_id(v).map_err(ApiError::bad_request))
        .collect::<Result<_, _>>()?;
    let ids = if !trace_ids.is_empty() {
        trace_ids
    } else {
        let mut search = SpanSearch {
            service: get("service").map(str::to_string),
            operation: get("operation").filter(|o| *o != "all").map(str::to_string),
            span_kind: get("spanKind").map(str::to_string),
            min_duration_ns: optional("minDuration", get("minDuration"), parse_duration)?,
            max_duration_ns: optional("maxDuration", get("maxDuration"), parse_duration)?,
            limit: limit(
                get("limit")
                    .map(|v| v.parse::<usize>())
                    .transpose()
                    .map_err(|_| ApiError::bad_request("limit is not a number"))?,
            )?,
            ..SpanSearch::default()
        };
        let micros = |name: &str| -> ApiResult<Option<i64>> {
            get(name)
                .map(|v| {
                    v.parse::<i64>()
                        .map(|us| us.saturating_mul(1000))
                        .map_err(|_| {
                            ApiError::bad_request(format!("{name}={v:?} is not microseconds"))
                        })
                })
                .transpose()
        };
        let end = micros("end")?.unwrap_or_else(now_nanos);
        let lookback = optional(
            "lookback",
            get("lookback").filter(|l| *l != "custom"),
            parse_duration,
        )?;
        search.end_ns = Some(end);
        search.start_ns = match (micros("start")?, lookback) {
            (Some(start), _) => Some(start),
            (None, Some(lookback)) => Some(end.saturating_sub(lookback)),
            (None, None) => None,
        };
        if let Some(tags) = get("tags") {
            let tags: BTreeMap<String, Value> = serde_json::from_str(tags).map_err(|e| {
                ApiError::bad_request(format!("tags must be a JSON object of strings: {e}"))
            })?;
            for (key, value) in tags {
                let value = match value {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                search.tags.push((key, value));
            }
        }
        objects(&engine, &search.trace_ids_sql())
            .await?
            .into_iter()
            .filter_map(|row| {
                row.get("trace_id")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    };
    if ids.is_empty() {
        return Ok(envelope(json!([])));
    }
    let records = spans_and_logs(&engine, &ids).await?;
    let traces: Vec<Value> = ids
        .iter()
        .filter_map(|id| jaeger_trace(id, &records))
        .collect();
    Ok(envelope(Value::Array(traces)))
}

/// `GET /api/traces/{trace_id}`
pub(super) async fn trace(
    TenantEngine(engine): TenantEngine,
    Path(trace_id): Path<String>,
) -> Response {
    let trace_id = match parse_trace_id(&trace_id) {
        Ok(id) => id,
        Err(message) => return jaeger_error(StatusCode::BAD_REQUEST, &message),
    };
    match spans_and_logs(&engine, std::slice::from_ref(&trace_id)).await {
        Ok(records) => match jaeger_trace(&trace_id, &records) {
            Some(trace) => envelope(json!([trace])),
            None => jaeger_error(StatusCode::NOT_FOUND, "trace not found"),
        },
        Err(error) => error.into_response(),
    }
}

/// `GET /api/dependencies?endTs=&lookback=` (milliseconds).
pub(super) async fn dependencies(
    TenantEngine(engine): TenantEngine,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    let pairs = form_pairs(raw.as_deref());
    let millis = |key: &str| -> ApiResult<Option<i64>> {
        param(&pairs, key)
            .map(|v| {
                v.parse::<i64>()
                    .map(|ms| ms.saturating_mul(1_000_000))
                    .map_err(|_| ApiError::bad_request(format!("{key}={v:?} is not milliseconds")))
            })
            .transpose()
    };
    let end = millis("endTs")?.unwrap_or_else(now_nanos);
    let start = end.saturating_sub(millis("lookback")?.unwrap_or(DEFAULT_LOOKBACK_NS));
    let data = dependency_edges(&engine, start, end)
        .await?
        .into_iter()
        .map(|edge| {
            json!({
                "parent": edge.get("parent"),
                "child": edge.get("child"),
                "callCount": edge.get("call_count"),
            })
        })
        .collect();
    Ok(envelope(Value::Array(data)))
}

fn span_kind(kind: &str) -> &'static str {
    match kind {
        "SERVER" => "server",
        "CLIENT" => "client",
        "PRODUCER" => "producer",
        "CONSUMER" => "consumer",
        "INTERNAL" => "internal",
        _ => "",
    }
}

fn micros(time: Option<&Value>) -> i64 {
    time.and_then(Value::as_str)
        .and_then(result_time_nanos)
        .map_or(0, |ns| ns / 1000)
}

fn string_tag(key: &str, value: &str) -> Value {
    json!({ "key": key, "type": "string", "value": value })
}

/// A `map<text, text>` column's value as Jaeger tags.
fn tags(map: Option<&Value>) -> Vec<Value> {
    map.and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| string_tag(k, v.as_str().unwrap_or(&v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

fn text<'a>(row: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    row.get(key).and_then(Value::as_str)
}

/// One trace in Jaeger's shape, from weft's span and log rows (which may hold
/// other traces too). Log records with a span id become that span's logs, so
/// Grafana shows them inline; span events do too.
fn jaeger_trace(trace_id: &str, records: &TraceRecords) -> Option<Value> {
    let TraceRecords {
        spans,
        logs,
        truncated,
    } = records;
    let spans: Vec<&Map<String, Value>> = spans
        .iter()
        .filter(|s| text(s, "trace_id") == Some(trace_id))
        .collect();
    if spans.is_empty() {
        return None;
    }
    let mut processes = Map::new();
    let mut process_ids: BTreeMap<String, String> = BTreeMap::new();
    let mut jaeger_spans = Vec::new();
    for span in spans {
        let service = text(span, "service_name")
            .unwrap_or("unknown_service")
            .to_string();
        let process_id = match process_ids.get(&service) {
            Some(id) => id.clone(),
            None => {
                let id = format!("p{}", process_ids.len() + 1);
                processes.insert(
                    id.clone(),
                    json!({ "serviceName": service, "tags": tags(span.get("resource_attributes")) }),
                );
                process_ids.insert(service.clone(), id.clone());
                id
            }
        };
        let span_id = text(span, "span_id").unwrap_or_default();
        let mut references = Vec::new();
        if let Some(parent) = text(span, "parent_span_id") {
            references
                .push(json!({ "refType": "CHILD_OF", "traceID": trace_id, "spanID": parent }));
        }
        for link in span
            .get("links")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            references.push(json!({
                "refType": "FOLLOWS_FROM",
                "traceID": link.get("trace_id"),
                "spanID": link.get("span_id"),
            }));
        }
        let mut span_tags = tags(span.get("attributes"));
        if let Some(kind) = text(span, "kind").map(span_kind).filter(|k| !k.is_empty()) {
            span_tags.push(string_tag("span.kind", kind));
        }
        match text(span, "status_code") {
            Some("ERROR") => {
                span_tags.push(json!({ "key": "error", "type": "bool", "value": true }));
                span_tags.push(string_tag("otel.status_code", "ERROR"));
            }
            Some("OK") => span_tags.push(string_tag("otel.status_code", "OK")),
            _ => {}
        }
        if let Some(message) = text(span, "status_message").filter(|m| !m.is_empty()) {
            span_tags.push(string_tag("otel.status_description", message));
        }
        if let Some(scope) = text(span, "scope_name").filter(|s| !s.is_empty()) {
            span_tags.push(string_tag("otel.scope.name", scope));
        }
        let mut span_logs: Vec<Value> = span
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|event| {
                let mut fields = vec![string_tag(
                    "event",
                    event.get("name").and_then(Value::as_str).unwrap_or(""),
                )];
                fields.extend(tags(event.get("attributes")));
                json!({ "timestamp": micros(event.get("time")), "fields": fields })
            })
            .collect();
        span_logs.extend(
            logs.iter()
                .filter(|log| {
                    text(log, "trace_id") == Some(trace_id) && text(log, "span_id") == Some(span_id)
                })
                .map(|log| {
                    let mut fields = vec![string_tag("message", text(log, "body").unwrap_or(""))];
                    if let Some(level) = text(log, "severity_text").filter(|l| !l.is_empty()) {
                        fields.push(string_tag("level", level));
                    }
                    fields.extend(tags(log.get("attributes")));
                    json!({ "timestamp": micros(log.get("time")), "fields": fields })
                }),
        );
        span_logs.sort_by_key(|log| log.get("timestamp").and_then(Value::as_i64));
        jaeger_spans.push(json!({
            "traceID": trace_id,
            "spanID": span_id,
            "operationName": text(span, "name").unwrap_or(""),
            "references": references,
            "startTime": micros(span.get("start_time")),
            "duration": span.get("duration_ns").and_then(Value::as_i64).map_or(0, |ns| ns / 1000),
            "tags": span_tags,
            "logs": span_logs,
            "processID": process_id,
            "warnings": null,
            "flags": 1,
        }));
    }
    Some(json!({
        "traceID": trace_id,
        "spans": jaeger_spans,
        "processes": processes,
        "warnings": truncated.then(|| json!([
            "weft's query row limit cut this answer short: some spans or logs are missing (raise [query] max_rows)"
        ])),
    }))
}
