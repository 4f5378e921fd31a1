//! `ExportLogsServiceRequest` → a `logs` batch.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{
    ArrayRef, Int32Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::logs::v1::LogRecord;

use super::columns::{append_non_empty, clamp_nanos, TextMapBuilder};
use super::values::append_text;
use super::{check_id, hex_id, service_name, Converted, Rejections};
use crate::schema::logs_schema;

/// Converts a logs export request into one `logs` batch, leaving out (and
/// counting) records whose trace or span id has the wrong length.
///
/// A record without `time_unix_nano` takes its observed time, and one without
/// an observed time takes the time it was received, as the OpenTelemetry log
/// data model recommends; all-zero ids count as absent.
pub fn logs_to_batch(request: &ExportLogsServiceRequest) -> Converted {
    let received = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut columns = LogColumns::default();
    let mut rejections = Rejections::default();
    for (r, resource_logs) in request.resource_logs.iter().enumerate() {
        let resource = resource_logs.resource.as_ref();
        let service = service_name(resource);
        let resource_attributes = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        for (s, scope_logs) in resource_logs.scope_logs.iter().enumerate() {
            let scope_name = scope_logs.scope.as_ref().map_or("", |s| s.name.as_str());
            for (i, record) in scope_logs.log_records.iter().enumerate() {
                let ids = check_id("trace_id", present(&record.trace_id), 16, true)
                    .and_then(|()| check_id("span_id", present(&record.span_id), 8, true));
                match ids {
                    Ok(()) => {
                        columns.append(record, received, service, resource_attributes, scope_name)
                    }
                    Err(reason) => rejections.reject(|| {
                        format!("resource_logs[{r}].scope_logs[{s}].log_records[{i}]: {reason}")
                    }),
                }
            }
        }
    }
    rejections.finish(columns.finish())
}

/// The id, or nothing when it is all zeros (some SDKs send that for "no trace").
fn present(id: &[u8]) -> &[u8] {
    if id.iter().all(|b| *b == 0) {
        &[]
    } else {
        id
    }
}

#[derive(Default)]
struct LogColumns {
    time: TimestampNanosecondBuilder,
    observed_time: TimestampNanosecondBuilder,
    severity_number: Int32Builder,
    severity_text: StringBuilder,
    body: StringBuilder,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    service_name: StringBuilder,
    attributes: TextMapBuilder,
    resource_attributes: TextMapBuilder,
    scope_name: StringBuilder,
    event_name: StringBuilder,
    scratch: String,
}

impl LogColumns {
    fn append(
        &mut self,
        record: &LogRecord,
        received: u64,
        service: &str,
        resource_attributes: &[opentelemetry_proto::tonic::common::v1::KeyValue],
        scope_name: &str,
    ) {
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
        append_non_empty(&mut self.severity_text, &record.severity_text);
        append_text(&mut self.body, record.body.as_ref(), &mut self.scratch);
        let mut buf = [0u8; 32];
        append_id(&mut self.trace_id, present(&record.trace_id), &mut buf);
        append_id(&mut self.span_id, present(&record.span_id), &mut buf);
        self.service_name.append_value(service);
        self.attributes.append(&record.attributes);
        self.resource_attributes.append(resource_attributes);
        append_non_empty(&mut self.scope_name, scope_name);
        append_non_empty(&mut self.event_name, &record.event_name);
    }

    fn finish(mut self) -> RecordBatch {
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
