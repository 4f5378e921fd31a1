//! Analysis: answers rather than rows. Root cause (one trace, or a window of
//! traces compared bad against baseline), latency (percentiles, histograms,
//! where the time goes) and trends (series, forecasts, anomalies).
//!
//! Each analysis reads the store through SQL on the [`crate::QueryEngine`] —
//! filters, grouping and percentiles run in DataFusion — and keeps only the
//! final reasoning (critical paths, significance tests, forecasting models)
//! in Rust over the already-reduced rows.

pub mod critical_path;
pub mod latency;
pub mod rca;
pub mod sql_functions;
mod stats;
pub mod trends;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Float64Type, Int64Type};
use chrono::{DateTime, SecondsFormat, Utc};

use crate::QueryError;

/// A column of a result batch by name, cast to the type the analysis reads
/// (DataFusion may hand back views or dictionary encodings).
fn column(batch: &RecordBatch, name: &str, to: &DataType) -> Result<ArrayRef, QueryError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::Internal(format!("analysis query lost its column {name}")))?;
    if column.data_type() == to {
        return Ok(column.clone());
    }
    arrow::compute::cast(column, to).map_err(|e| QueryError::Internal(e.to_string()))
}

/// The text values of a column; nulls become `None`.
fn strings(batch: &RecordBatch, name: &str) -> Result<Vec<Option<String>>, QueryError> {
    let column = column(batch, name, &DataType::Utf8)?;
    Ok(column
        .as_string::<i32>()
        .iter()
        .map(|v| v.map(str::to_string))
        .collect())
}

fn i64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<i64>>, QueryError> {
    let column = column(batch, name, &DataType::Int64)?;
    Ok(column.as_primitive::<Int64Type>().iter().collect())
}

fn f64s(batch: &RecordBatch, name: &str) -> Result<Vec<Option<f64>>, QueryError> {
    let column = column(batch, name, &DataType::Float64)?;
    Ok(column.as_primitive::<Float64Type>().iter().collect())
}

/// The entries of a `map<text, text>` column, row by row.
fn text_maps(batch: &RecordBatch, name: &str) -> Result<Vec<Vec<(String, String)>>, QueryError> {
    let column = batch
        .column_by_name(name)
        .ok_or_else(|| QueryError::Internal(format!("analysis query lost its column {name}")))?;
    let Some(maps) = column.as_map_opt() else {
        return Err(QueryError::Internal(format!("{name} is not a map column")));
    };
    let keys = arrow::compute::cast(maps.keys(), &DataType::Utf8)
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let values = arrow::compute::cast(maps.values(), &DataType::Utf8)
        .map_err(|e| QueryError::Internal(e.to_string()))?;
    let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
    let offsets = maps.value_offsets();
    Ok((0..maps.len())
        .map(|row| {
            if maps.is_null(row) {
                return Vec::new();
            }
            (offsets[row] as usize..offsets[row + 1] as usize)
                .filter(|&i| values.is_valid(i))
                .map(|i| (keys.value(i).to_string(), values.value(i).to_string()))
                .collect()
        })
        .collect())
}

/// A time as the analysis answers give it: RFC 3339 in UTC, with as many
/// fractional digits as it needs.
fn rfc3339(nanos: i64) -> String {
    DateTime::<Utc>::from_timestamp_nanos(nanos).to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The columns of `spans` a [`critical_path::SpanRecord`] is read from, for
/// the SELECT list of the queries that feed [`span_records`].
const SPAN_RECORD_COLUMNS: &str = "span_id, parent_span_id, service_name, name, \
     CAST(start_time AS BIGINT) AS start_ns, CAST(end_time AS BIGINT) AS end_ns, \
     CAST(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END AS BIGINT) AS failed, status_message";

/// The spans of a batch selected with [`SPAN_RECORD_COLUMNS`], row by row
/// (`None` for a row without a span id).
fn span_records(batch: &RecordBatch) -> Result<Vec<Option<critical_path::SpanRecord>>, QueryError> {
    let ids = strings(batch, "span_id")?;
    let parents = strings(batch, "parent_span_id")?;
    let services = strings(batch, "service_name")?;
    let names = strings(batch, "name")?;
    let starts = i64s(batch, "start_ns")?;
    let ends = i64s(batch, "end_ns")?;
    let failed = i64s(batch, "failed")?;
    let messages = strings(batch, "status_message")?;
    Ok((0..batch.num_rows())
        .map(|row| {
            Some(critical_path::SpanRecord {
                span_id: ids[row].clone()?,
                parent_span_id: parents[row].clone().filter(|p| !p.is_empty()),
                service: services[row].clone().unwrap_or_default(),
                operation: names[row].clone().unwrap_or_default(),
                start_ns: starts[row].unwrap_or(0),
                end_ns: ends[row].unwrap_or(0),
                is_error: failed[row] == Some(1),
                status_message: messages[row].clone().filter(|m| !m.is_empty()),
            })
        })
        .collect())
}
