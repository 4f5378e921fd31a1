//! OTLP → Arrow: one request becomes one `RecordBatch`, column by column.
//!
//! Conversion reads the request's protobuf in place ([`wire`]) and appends
//! straight into Arrow builders; it allocates per column, not per row.
//! Records that break the OTLP data model (a trace id that is not 16 bytes,
//! an end before the start) are left out one by one and counted, so the
//! receiver can answer with an OTLP partial success while keeping the rest of
//! the request. A request that is not valid protobuf fails as a whole.

mod capacity;
mod columns;
mod logs;
mod spans;
mod values;
mod wire;

pub use logs::{logs_from_protobuf, logs_to_batch};
pub use spans::{spans_from_protobuf, spans_to_batch};
pub use wire::WireError;

use arrow::record_batch::RecordBatch;

use crate::Signal;
use columns::TextEntries;

/// Converts an encoded `ExportTraceServiceRequest` (spans) or
/// `ExportLogsServiceRequest` (logs) into one batch of `signal`'s table.
pub fn from_protobuf(signal: Signal, request: &[u8]) -> Result<Converted, WireError> {
    match signal {
        Signal::Spans => spans_from_protobuf(request),
        Signal::Logs => logs_from_protobuf(request),
    }
}

/// About how many bytes converting `request` (as in [`from_protobuf`])
/// writes again for every record: each row carries its resource's
/// attributes and its scope's name and version, so a small request with a
/// large resource and many records expands manyfold. Their protobuf size
/// stands for the text; receivers bound and reserve memory for it before
/// converting.
pub fn repeated_bytes(signal: Signal, request: &[u8]) -> Result<usize, WireError> {
    let nesting = Nesting::of(signal);
    let mut total = 0usize;
    for group in wire::repeated(nesting.request, request, 1, nesting.resources) {
        let group = group?;
        let resource_bytes = field_1_bytes(nesting.resource_group, group, "resource")?;
        for scope_group in wire::repeated(nesting.resource_group, group, 2, nesting.scopes) {
            let scope_group = scope_group?;
            let scope_bytes = field_1_bytes(nesting.scope_group, scope_group, "scope")?;
            let records = wire::count(nesting.scope_group, scope_group, 2)?;
            total = total.saturating_add((resource_bytes + scope_bytes).saturating_mul(records));
        }
    }
    Ok(total)
}

/// The bytes of field 1 (`name`) of `group`, an encoded `message`, over all
/// its occurrences.
fn field_1_bytes(
    message: &'static str,
    group: &[u8],
    name: &'static str,
) -> Result<usize, WireError> {
    wire::repeated(message, group, 1, name).try_fold(0, |sum, bytes| Ok(sum + bytes?.len()))
}

/// How an export request nests its records, named for error messages.
/// Traces and logs nest alike: resource groups in field 1 of the request,
/// each with its resource in field 1 and scope groups in field 2, each with
/// its scope in field 1 and records in field 2.
pub(crate) struct Nesting {
    request: &'static str,
    resources: &'static str,
    resource_group: &'static str,
    scopes: &'static str,
    scope_group: &'static str,
    records: &'static str,
}

impl Nesting {
    pub(crate) fn of(signal: Signal) -> &'static Self {
        match signal {
            Signal::Spans => &Self {
                request: "ExportTraceServiceRequest",
                resources: "resource_spans",
                resource_group: "ResourceSpans",
                scopes: "scope_spans",
                scope_group: "ScopeSpans",
                records: "spans",
            },
            Signal::Logs => &Self {
                request: "ExportLogsServiceRequest",
                resources: "resource_logs",
                resource_group: "ResourceLogs",
                scopes: "scope_logs",
                scope_group: "ScopeLogs",
                records: "log_records",
            },
        }
    }

    /// Shows `each` every record of `request` in order, with its position
    /// (resource group, scope group, record), its resource and its scope.
    pub(crate) fn for_each_record<'a>(
        &'static self,
        request: &'a [u8],
        mut each: impl FnMut(Position, &Resource<'a>, &Scope<'a>, &'a [u8]) -> wire::Result<()>,
    ) -> wire::Result<()> {
        let groups = wire::repeated(self.request, request, 1, self.resources);
        for (r, group) in groups.enumerate() {
            let group = group?;
            let resource = Resource::read(self.resource_group, group)?;
            let scope_groups = wire::repeated(self.resource_group, group, 2, self.scopes);
            for (s, scope_group) in scope_groups.enumerate() {
                let scope_group = scope_group?;
                let scope = Scope::read(self.scope_group, scope_group)?;
                let records = wire::repeated(self.scope_group, scope_group, 2, self.records);
                for (i, record) in records.enumerate() {
                    let position = Position {
                        nesting: self,
                        indexes: [r, s, i],
                    };
                    each(position, &resource, &scope, record?)?;
                }
            }
        }
        Ok(())
    }
}

/// Where a record is in its request, shown as its path
/// (`resource_spans[0].scope_spans[1].spans[2]`).
pub(crate) struct Position {
    nesting: &'static Nesting,
    indexes: [usize; 3],
}

impl std::fmt::Display for Position {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Nesting {
            resources,
            scopes,
            records,
            ..
        } = self.nesting;
        let [r, s, i] = self.indexes;
        write!(f, "{resources}[{r}].{scopes}[{s}].{records}[{i}]")
    }
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

/// What every record of a `ResourceSpans` or `ResourceLogs` repeats: the
/// resource's attributes, and its service.
pub(crate) struct Resource<'a> {
    /// `service.name`, or `unknown_service` when it has none, as the
    /// OpenTelemetry resource semantic conventions prescribe.
    pub(crate) service: &'a str,
    pub(crate) attributes: TextEntries<'a>,
}

impl<'a> Resource<'a> {
    /// Reads the resource (field 1) of `group`, an encoded `message`; a
    /// resource sent twice is merged, as protobuf merges messages.
    pub(crate) fn read(message: &'static str, group: &'a [u8]) -> wire::Result<Self> {
        let mut service = None;
        let mut attributes = TextEntries::default();
        for resource in wire::repeated(message, group, 1, "resource") {
            for kv in wire::key_values("Resource", resource?, 1) {
                let (key, value) = kv?;
                if key == "service.name" && service.is_none() {
                    service = Some(match value {
                        Some(wire::AnyValue::String(name)) if !name.is_empty() => name,
                        _ => "unknown_service",
                    });
                }
                attributes.push(key, value)?;
            }
        }
        Ok(Self {
            service: service.unwrap_or("unknown_service"),
            attributes,
        })
    }
}

/// The name and version of the `InstrumentationScope` of a `ScopeSpans` or
/// `ScopeLogs`.
#[derive(Default)]
pub(crate) struct Scope<'a> {
    pub(crate) name: &'a str,
    pub(crate) version: &'a str,
}

impl<'a> Scope<'a> {
    /// Reads the scope (field 1) of `group`, an encoded `message`; a scope
    /// sent twice is merged, as protobuf merges messages.
    pub(crate) fn read(message: &'static str, group: &'a [u8]) -> wire::Result<Self> {
        let mut scope = Self::default();
        for bytes in wire::repeated(message, group, 1, "scope") {
            for field in wire::fields("InstrumentationScope", bytes?) {
                let field = field?;
                match field.tag {
                    1 => scope.name = field.text("name")?,
                    2 => scope.version = field.text("version")?,
                    _ => {}
                }
            }
        }
        Ok(scope)
    }
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
    spans_from_protobuf(&test_spans_request(first_id, spans))
        .expect("a request prost encoded is valid protobuf")
        .batch
}

/// The export request [`test_spans`] converts, encoded.
#[cfg(test)]
pub(crate) fn test_spans_request(first_id: u8, spans: u8) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use prost::Message;
    ExportTraceServiceRequest {
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
    }
    .encode_to_vec()
}
