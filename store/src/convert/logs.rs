//! `ExportLogsServiceRequest` → a `logs` batch.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayBuilder, ArrayRef, Int32Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use prost::Message;

use super::capacity::{self, Sizing, Text};
use super::columns::{append_non_empty, clamp_nanos, TextMapBuilder};
use super::values::append_text;
use super::wire::{self, AnyValue, WireError};
use super::{check_id, hex_id, Converted, Nesting, Rejections, Resource};
use crate::schema::logs_schema;
use crate::Signal;

/// Converts an encoded `ExportLogsServiceRequest` into one `logs` batch,
/// leaving out (and counting) records whose trace or span id has the wrong
/// length. Fails only when `request` is not valid protobuf.
///
/// A record without `time_unix_nano` takes its observed time, and one without
/// an observed time takes the time it was received, as the OpenTelemetry log
/// data model recommends; all-zero ids count as absent.
pub fn logs_from_protobuf(request: &[u8]) -> Result<Converted, WireError> {
    let received = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut columns = LogColumns::new(Sizing::for_request(request.len()));
    let mut rejections = Rejections::default();
    // One record's fields at a time, its attributes' buffer reused.
    let mut record = LogFields::default();
    Nesting::of(Signal::Logs).for_each_record(request, |position, resource, scope, bytes| {
        record.read(bytes)?;
        let ids = check_id("trace_id", present(record.trace_id), 16, true)
            .and_then(|()| check_id("span_id", present(record.span_id), 8, true));
        match ids {
            Ok(()) => columns.append(&record, received, resource, scope.name)?,
            Err(reason) => rejections.reject(|| format!("{position}: {reason}")),
        }
        Ok(())
    })?;
    Ok(rejections.finish(columns.finish()))
}

/// [`logs_from_protobuf`] for a request already decoded (from OTLP/JSON).
pub fn logs_to_batch(request: &ExportLogsServiceRequest) -> Result<Converted, WireError> {
    logs_from_protobuf(&request.encode_to_vec())
}

/// The id, or nothing when it is all zeros (some SDKs send that for "no trace").
fn present(id: &[u8]) -> &[u8] {
    if id.iter().all(|b| *b == 0) {
        &[]
    } else {
        id
    }
}

/// The fields of an encoded `LogRecord`, read in one pass; its attributes
/// stay encoded until they are appended.
#[derive(Default)]
struct LogFields<'a> {
    attributes: Vec<&'a [u8]>,
    time_unix_nano: u64,
    observed_time_unix_nano: u64,
    severity_number: i32,
    severity_text: &'a str,
    body: Option<AnyValue<'a>>,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    event_name: &'a str,
}

impl<'a> LogFields<'a> {
    /// Reads `bytes` into `self`, replacing the record read before.
    fn read(&mut self, bytes: &'a [u8]) -> wire::Result<()> {
        let record = self;
        record.attributes.clear();
        (record.time_unix_nano, record.observed_time_unix_nano) = (0, 0);
        (record.severity_number, record.severity_text, record.body) = (0, "", None);
        (record.trace_id, record.span_id, record.event_name) = (&[], &[], "");
        for field in wire::fields("LogRecord", bytes) {
            let field = field?;
            match field.tag {
                1 => record.time_unix_nano = field.fixed64("time_unix_nano")?,
                2 => record.severity_number = field.varint("severity_number")? as i32,
                3 => record.severity_text = field.text("severity_text")?,
                5 => record.body = wire::any_value(field.bytes("body")?)?,
                6 => record.attributes.push(field.bytes("attributes")?),
                7 => {
                    field.varint("dropped_attributes_count")?;
                }
                8 => {
                    field.fixed32("flags")?;
                }
                9 => record.trace_id = field.bytes("trace_id")?,
                10 => record.span_id = field.bytes("span_id")?,
                11 => record.observed_time_unix_nano = field.fixed64("observed_time_unix_nano")?,
                12 => record.event_name = field.text("event_name")?,
                _ => {}
            }
        }
        Ok(())
    }
}

struct LogColumns {
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    severity_number: Int32Builder,
    severity_text: Text,
    body: Text,
    trace_id: Text,
    span_id: Text,
    service_name: Text,
    attributes: TextMapBuilder,
    resource_attributes: TextMapBuilder,
    scope_name: Text,
    event_name: Text,
    scratch: String,
}

/// Rows in the last batch of log records, for the builders of numbers.
const ROWS: (&str, &str) = ("logs", "rows");

impl LogColumns {
    fn new(sizing: Sizing) -> Self {
        let rows = sizing.items(ROWS);
        let text = |column| sizing.text(("logs", column));
        Self {
            time: TimestampNanosecondBuilder::with_capacity(rows),
            observed_time: TimestampNanosecondBuilder::with_capacity(rows),
            severity_number: Int32Builder::with_capacity(rows),
            severity_text: text("severity_text"),
            body: text("body"),
            trace_id: text("trace_id"),
            span_id: text("span_id"),
            service_name: text("service_name"),
            attributes: TextMapBuilder::new("logs.attributes", sizing),
            resource_attributes: TextMapBuilder::new("logs.resource_attributes", sizing),
            scope_name: text("scope_name"),
            event_name: text("event_name"),
            scratch: String::new(),
        }
    }

    fn append(
        &mut self,
        record: &LogFields<'_>,
        received: u64,
        resource: &Resource<'_>,
        scope_name: &str,
    ) -> wire::Result<()> {
        let observed = match record.observed_time_unix_nano {
            0 => received,
            t => t,
        };
        let time = match record.time_unix_nano {
            0 => observed,
            t => t,
        };
        self.time.append_value(clamp_nanos(time));
        self.observed_time.append_value(clamp_nanos(observed));
        self.severity_number.append_value(record.severity_number);
        append_non_empty(&mut self.severity_text, record.severity_text);
        append_text(&mut self.body, record.body, &mut self.scratch)?;
        let mut buf = [0u8; 32];
        append_id(&mut self.trace_id, present(record.trace_id), &mut buf);
        append_id(&mut self.span_id, present(record.span_id), &mut buf);
        self.service_name.append_value(resource.service);
        self.attributes.append_all(&record.attributes, |_, _| {})?;
        self.resource_attributes
            .append_entries(&resource.attributes);
        append_non_empty(&mut self.scope_name, scope_name);
        append_non_empty(&mut self.event_name, record.event_name);
        Ok(())
    }

    fn finish(mut self) -> RecordBatch {
        capacity::note_items(ROWS, self.time.len());
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.time.finish().with_timezone("UTC")),
            Arc::new(self.observed_time.finish().with_timezone("UTC")),
            Arc::new(self.severity_number.finish()),
            Arc::new(self.severity_text.finish()),
            Arc::new(self.body.finish()),
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.service_name.finish()),
            self.attributes.finish(),
            self.resource_attributes.finish(),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.event_name.finish()),
        ];
        RecordBatch::try_new(logs_schema(), columns)
            .expect("log columns are built to match the logs schema")
    }
}

fn append_id(builder: &mut StringBuilder, id: &[u8], buf: &mut [u8; 32]) {
    if id.is_empty() {
        builder.append_null();
    } else {
        builder.append_value(hex_id(id, buf));
    }
}
