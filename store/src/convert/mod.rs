//! OTLP → Arrow: one request becomes one `RecordBatch`, column by column.
//!
//! Conversion walks the decoded protobuf once and appends straight into Arrow
//! builders; it allocates per column, not per row. Records that break the
//! OTLP data model (a trace id that is not 16 bytes, an end before the start)
//! are left out one by one and counted, so the receiver can answer with an
//! OTLP partial success while keeping the rest of the request.

mod columns;
mod logs;
mod spans;
mod values;

pub use logs::logs_to_batch;
pub use spans::spans_to_batch;

use arrow::record_batch::RecordBatch;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// About how many bytes converting `request` writes again for every span: each
/// row carries its resource's attributes and its scope's name and version, so
/// a small request with a large resource and many spans expands manyfold. Its
/// protobuf size stands for the text; receivers bound and reserve memory for
/// it before converting.
pub fn spans_repeated_bytes(request: &ExportTraceServiceRequest) -> usize {
    repeated_bytes(request.resource_spans.iter().flat_map(|resource| {
        let resource_bytes = resource.resource.as_ref().map_or(0, Message::encoded_len);
        resource.scope_spans.iter().map(move |scope| {
            let scope_bytes = scope.scope.as_ref().map_or(0, Message::encoded_len);
            (resource_bytes + scope_bytes, scope.spans.len())
        })
    }))
}

/// [`spans_repeated_bytes`] for log records.
pub fn logs_repeated_bytes(request: &ExportLogsServiceRequest) -> usize {
    repeated_bytes(request.resource_logs.iter().flat_map(|resource| {
        let resource_bytes = resource.resource.as_ref().map_or(0, Message::encoded_len);
        resource.scope_logs.iter().map(move |scope| {
            let scope_bytes = scope.scope.as_ref().map_or(0, Message::encoded_len);
            (resource_bytes + scope_bytes, scope.log_records.len())
        })
    }))
}

/// The sum of `bytes × records` over groups of records sharing that much text.
fn repeated_bytes(groups: impl Iterator<Item = (usize, usize)>) -> usize {
    groups
        .map(|(bytes, records)| bytes.saturating_mul(records))
        .fold(0, usize::saturating_add)
}

/// The result of converting one export request.
#[derive(Debug)]
pub struct Converted {
    /// The records that passed validation, in request order.
    pub batch: RecordBatch,
    /// How many records were left out.
    pub rejected: u64,
    /// What was wrong with the first record that was left out, with its position
    /// in the request, and how many more there were.
    pub error_message: Option<String>,
}

/// Collects why records were left out; keeps the first reason, counts the rest.
#[derive(Default)]
pub(crate) struct Rejections {
    count: u64,
    first: Option<String>,
}

impl Rejections {
    pub(crate) fn reject(&mut self, describe: impl FnOnce() -> String) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(describe());
        }
    }

    pub(crate) fn finish(self, batch: RecordBatch) -> Converted {
        let error_message = self.first.map(|first| match self.count {
            1 => first,
            n => format!("{first} (and {} more rejected records)", n - 1),
        });
        Converted {
            batch,
            rejected: self.count,
            error_message,
        }
    }
}

/// The `service.name` of a resource, `unknown_service` when it has none, as
/// the OpenTelemetry resource semantic conventions prescribe.
pub(crate) fn service_name(
    resource: Option<&opentelemetry_proto::tonic::resource::v1::Resource>,
) -> &str {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    resource
        .into_iter()
        .flat_map(|r| r.attributes.iter())
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            Value::StringValue(s) if !s.is_empty() => Some(s.as_str()),
            _ => None,
        })
        .unwrap_or("unknown_service")
}

/// Writes `bytes` as lowercase hex into `buf` and returns it as text; ids are
/// at most 16 bytes, so no allocation is needed.
pub(crate) fn hex_id<'a>(bytes: &[u8], buf: &'a mut [u8; 32]) -> &'a str {
    let out = &mut buf[..bytes.len() * 2];
    hex::encode_to_slice(bytes, out).expect("output is exactly twice the input");
    std::str::from_utf8(out).expect("hex is ASCII")
}

/// Checks an id's length: `expected` bytes, or empty when `optional`; all-zero
/// ids are invalid per the OTLP spec.
pub(crate) fn check_id(
    what: &str,
    bytes: &[u8],
    expected: usize,
    optional: bool,
) -> Result<(), String> {
    if bytes.is_empty() && optional {
        return Ok(());
    }
    if bytes.len() != expected {
        return Err(format!(
            "{what} must be {expected} bytes, got {}",
            bytes.len()
        ));
    }
    if bytes.iter().all(|b| *b == 0) {
        return Err(format!("{what} must not be all zeros"));
    }
    Ok(())
}

/// A spans batch of `spans` spans whose trace and span ids are all bytes
/// `first_id`, `first_id + 1`, …: distinct rows for the store's own tests.
#[cfg(test)]
pub(crate) fn test_spans(first_id: u8, spans: u8) -> arrow::record_batch::RecordBatch {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (first_id..first_id + spans)
                    .map(|id| Span {
                        trace_id: vec![id; 16],
                        span_id: vec![id; 8],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    spans_to_batch(&request).batch
}
