//! `ExportTraceServiceRequest` → a `spans` batch.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayBuilder, ArrayRef, Int64Builder, RecordBatch, TimestampNanosecondBuilder};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use prost::Message;

use super::capacity::{self, Sizing, Text};
use super::columns::{
    append_non_empty, clamp_nanos, EventsBuilder, Link, LinksBuilder, TextMapBuilder,
};
use super::values::{append_text, as_int};
use super::wire::{self, AnyValue, WireError};
use super::{check_id, hex_id, Converted, Nesting, Rejections, Resource, Scope};
use crate::schema::{spans_schema, PromotedKind, PROMOTED_SPAN_COLUMNS};
use crate::Signal;

/// Converts an encoded `ExportTraceServiceRequest` into one `spans` batch,
/// leaving out (and counting) spans with invalid ids or an end before their
/// start. Fails only when `request` is not valid protobuf.
pub fn spans_from_protobuf(request: &[u8]) -> Result<Converted, WireError> {
    let mut columns = SpanColumns::new(Sizing::for_request(request.len()));
    let mut rejections = Rejections::default();
    // One span's fields at a time, its lists' buffers reused.
    let mut span = SpanFields::default();
    Nesting::of(Signal::Spans).for_each_record(request, |position, resource, scope, bytes| {
        span.read(bytes)?;
        match span.rejection()? {
            None => columns.append(&span, resource, scope)?,
            Some(reason) => rejections.reject(|| format!("{position}: {reason}")),
        }
        Ok(())
    })?;
    Ok(rejections.finish(columns.finish()))
}

/// [`spans_from_protobuf`] for a request already decoded (from OTLP/JSON).
pub fn spans_to_batch(request: &ExportTraceServiceRequest) -> Result<Converted, WireError> {
    spans_from_protobuf(&request.encode_to_vec())
}

/// The fields of an encoded `Span`, read in one pass; its attributes, events
/// and links stay encoded until they are appended.
#[derive(Default)]
struct SpanFields<'a> {
    attributes: Vec<&'a [u8]>,
    events: Vec<&'a [u8]>,
    links: Vec<&'a [u8]>,
    trace_id: &'a [u8],
    span_id: &'a [u8],
    parent_span_id: &'a [u8],
    trace_state: &'a str,
    name: &'a str,
    kind: i32,
    start_time_unix_nano: u64,
    end_time_unix_nano: u64,
    status_code: i32,
    status_message: &'a str,
}

impl<'a> SpanFields<'a> {
    /// Reads `bytes` into `self`, replacing the span read before.
    fn read(&mut self, bytes: &'a [u8]) -> wire::Result<()> {
        let span = self;
        span.attributes.clear();
        span.events.clear();
        span.links.clear();
        (span.trace_id, span.span_id, span.parent_span_id) = (&[], &[], &[]);
        (span.trace_state, span.name, span.kind) = ("", "", 0);
        (span.start_time_unix_nano, span.end_time_unix_nano) = (0, 0);
        (span.status_code, span.status_message) = (0, "");
        for field in wire::fields("Span", bytes) {
            let field = field?;
            match field.tag {
                1 => span.trace_id = field.bytes("trace_id")?,
                2 => span.span_id = field.bytes("span_id")?,
                3 => span.trace_state = field.text("trace_state")?,
                4 => span.parent_span_id = field.bytes("parent_span_id")?,
                5 => span.name = field.text("name")?,
                6 => span.kind = field.varint("kind")? as i32,
                7 => span.start_time_unix_nano = field.fixed64("start_time_unix_nano")?,
                8 => span.end_time_unix_nano = field.fixed64("end_time_unix_nano")?,
                9 => span.attributes.push(field.bytes("attributes")?),
                11 => span.events.push(field.bytes("events")?),
                13 => span.links.push(field.bytes("links")?),
                10 | 12 | 14 => {
                    field.varint("a dropped count")?;
                }
                15 => {
                    for field in wire::fields("Status", field.bytes("status")?) {
                        let field = field?;
                        match field.tag {
                            2 => span.status_message = field.text("message")?,
                            3 => span.status_code = field.varint("code")? as i32,
                            _ => {}
                        }
                    }
                }
                16 => {
                    field.fixed32("flags")?;
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Why the span breaks the OTLP data model, if it does.
    fn rejection(&self) -> wire::Result<Option<String>> {
        let ids = check_id("trace_id", self.trace_id, 16, false)
            .and_then(|()| check_id("span_id", self.span_id, 8, false))
            .and_then(|()| check_id("parent_span_id", self.parent_span_id, 8, true));
        if let Err(reason) = ids {
            return Ok(Some(reason));
        }
        for (l, link) in self.links.iter().enumerate() {
            let link = Link::read(link)?;
            let ids = check_id(&format!("links[{l}].trace_id"), link.trace_id, 16, false)
                .and_then(|()| check_id(&format!("links[{l}].span_id"), link.span_id, 8, false));
            if let Err(reason) = ids {
                return Ok(Some(reason));
            }
        }
        if self.end_time_unix_nano < self.start_time_unix_nano {
            return Ok(Some(format!(
                "end_time_unix_nano {} is before start_time_unix_nano {}",
                self.end_time_unix_nano, self.start_time_unix_nano
            )));
        }
        Ok(None)
    }
}

pub(crate) fn kind_name(kind: i32) -> &'static str {
    match SpanKind::try_from(kind) {
        Ok(SpanKind::Server) => "SERVER",
        Ok(SpanKind::Client) => "CLIENT",
        Ok(SpanKind::Producer) => "PRODUCER",
        Ok(SpanKind::Consumer) => "CONSUMER",
        Ok(SpanKind::Internal) => "INTERNAL",
        Ok(SpanKind::Unspecified) | Err(_) => "UNSPECIFIED",
    }
}

pub(crate) fn status_name(code: i32) -> &'static str {
    match StatusCode::try_from(code) {
        Ok(StatusCode::Ok) => "OK",
        Ok(StatusCode::Error) => "ERROR",
        Ok(StatusCode::Unset) | Err(_) => "UNSET",
    }
}

enum PromotedBuilder {
    Text(Text),
    Int(Int64Builder),
}

/// Rows in the last batch of spans, for the builders of numbers.
const ROWS: (&str, &str) = ("spans", "rows");

struct SpanColumns {
    trace_id: Text,
    span_id: Text,
    parent_span_id: Text,
    trace_state: Text,
    service_name: Text,
    name: Text,
    kind: Text,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: Text,
    status_message: Text,
    attributes: TextMapBuilder,
    resource_attributes: TextMapBuilder,
    scope_name: Text,
    scope_version: Text,
    events: EventsBuilder,
    links: LinksBuilder,
    promoted: Vec<PromotedBuilder>,
    scratch: String,
}

impl SpanColumns {
    fn new(sizing: Sizing) -> Self {
        let rows = sizing.items(ROWS);
        let promoted = PROMOTED_SPAN_COLUMNS
            .iter()
            .map(|p| match p.kind {
                PromotedKind::Text => PromotedBuilder::Text(sizing.text(("spans", p.column))),
                PromotedKind::Int => PromotedBuilder::Int(Int64Builder::with_capacity(rows)),
            })
            .collect();
        let text = |column| sizing.text(("spans", column));
        Self {
            trace_id: text("trace_id"),
            span_id: text("span_id"),
            parent_span_id: text("parent_span_id"),
            trace_state: text("trace_state"),
            service_name: text("service_name"),
            name: text("name"),
            kind: text("kind"),
            start_time: TimestampNanosecondBuilder::with_capacity(rows),
            end_time: TimestampNanosecondBuilder::with_capacity(rows),
            duration_ns: Int64Builder::with_capacity(rows),
            status_code: text("status_code"),
            status_message: text("status_message"),
            attributes: TextMapBuilder::new("spans.attributes", sizing),
            resource_attributes: TextMapBuilder::new("spans.resource_attributes", sizing),
            scope_name: text("scope_name"),
            scope_version: text("scope_version"),
            events: EventsBuilder::new(sizing),
            links: LinksBuilder::new(sizing),
            promoted,
            scratch: String::new(),
        }
    }

    fn append(
        &mut self,
        span: &SpanFields<'_>,
        resource: &Resource<'_>,
        scope: &Scope<'_>,
    ) -> wire::Result<()> {
        let mut buf = [0u8; 32];
        self.trace_id.append_value(hex_id(span.trace_id, &mut buf));
        self.span_id.append_value(hex_id(span.span_id, &mut buf));
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            self.parent_span_id
                .append_value(hex_id(span.parent_span_id, &mut buf));
        }
        append_non_empty(&mut self.trace_state, span.trace_state);
        self.service_name.append_value(resource.service);
        self.name.append_value(span.name);
        self.kind.append_value(kind_name(span.kind));
        let start = clamp_nanos(span.start_time_unix_nano);
        let end = clamp_nanos(span.end_time_unix_nano);
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns.append_value(end - start);
        self.status_code.append_value(status_name(span.status_code));
        append_non_empty(&mut self.status_message, span.status_message);
        let mut promoted = Promoted::default();
        self.attributes
            .append_all(&span.attributes, |key, value| promoted.offer(key, value))?;
        self.resource_attributes
            .append_entries(&resource.attributes);
        append_non_empty(&mut self.scope_name, scope.name);
        append_non_empty(&mut self.scope_version, scope.version);
        self.events.append(&span.events)?;
        self.links.append(&span.links)?;
        for (value, builder) in promoted.values().into_iter().zip(&mut self.promoted) {
            match builder {
                PromotedBuilder::Text(b) => append_text(b, value, &mut self.scratch)?,
                PromotedBuilder::Int(b) => b.append_option(as_int(value)),
            }
        }
        Ok(())
    }

    fn finish(mut self) -> RecordBatch {
        let rows = self.trace_id.len();
        capacity::note_items(ROWS, rows);
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(self.trace_id.finish()),
            Arc::new(self.span_id.finish()),
            Arc::new(self.parent_span_id.finish()),
            Arc::new(self.trace_state.finish()),
            Arc::new(self.service_name.finish()),
            Arc::new(self.name.finish()),
            Arc::new(self.kind.finish()),
            Arc::new(self.start_time.finish().with_timezone("UTC")),
            Arc::new(self.end_time.finish().with_timezone("UTC")),
            Arc::new(self.duration_ns.finish()),
            Arc::new(self.status_code.finish()),
            Arc::new(self.status_message.finish()),
            self.attributes.finish(),
            self.resource_attributes.finish(),
            Arc::new(self.scope_name.finish()),
            Arc::new(self.scope_version.finish()),
            self.events.finish(),
            self.links.finish(),
        ];
        columns.extend(self.promoted.iter_mut().map(|b| match b {
            PromotedBuilder::Text(b) => Arc::new(b.finish()) as ArrayRef,
            PromotedBuilder::Int(b) => Arc::new(b.finish()) as ArrayRef,
        }));
        let batch = RecordBatch::try_new(spans_schema(), columns)
            .expect("span columns are built to match the spans schema");
        debug_assert_eq!(batch.num_rows(), rows);
        batch
    }
}

/// Finds, for each promoted column, the attribute that fills it: the first
/// attribute with the column's most current key that has a value (an
/// attribute without one gives way to the next key, as if absent). Shown the
/// attributes one by one, with one lookup each, rather than scanning them
/// once per key.
#[derive(Default)]
struct Promoted<'a> {
    found: [Option<(usize, AnyValue<'a>)>; PROMOTED_SPAN_COLUMNS.len()],
    /// Which keys of each column were met already: only the first counts.
    seen: [u32; PROMOTED_SPAN_COLUMNS.len()],
}

impl<'a> Promoted<'a> {
    fn offer(&mut self, key: &str, value: Option<AnyValue<'a>>) {
        type Keys = HashMap<&'static str, (usize, usize), foldhash::fast::RandomState>;
        static KEYS: LazyLock<Keys> = LazyLock::new(|| {
            PROMOTED_SPAN_COLUMNS
                .iter()
                .enumerate()
                .flat_map(|(column, promoted)| {
                    promoted
                        .keys
                        .iter()
                        .enumerate()
                        .map(move |(rank, key)| (*key, (column, rank)))
                })
                .collect()
        });
        let Some(&(column, rank)) = KEYS.get(key) else {
            return;
        };
        if self.seen[column] & (1 << rank) != 0 {
            return;
        }
        self.seen[column] |= 1 << rank;
        if let Some(value) = value {
            if self.found[column].is_none_or(|(best, _)| rank < best) {
                self.found[column] = Some((rank, value));
            }
        }
    }

    fn values(self) -> [Option<AnyValue<'a>>; PROMOTED_SPAN_COLUMNS.len()] {
        self.found.map(|f| f.map(|(_, value)| value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue, ArrayValue, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::trace::v1::{
        span::Event, span::Link, ResourceSpans, ScopeSpans, Span,
    };
    use proptest::prelude::*;

    /// What [`Promoted`] must find: for each key in order, the first
    /// attribute with that key, if it has a value.
    fn first_of_keys<'a>(
        attributes: &'a [(&str, Option<String>)],
        keys: &[&str],
    ) -> Option<wire::AnyValue<'a>> {
        keys.iter().find_map(|key| {
            attributes
                .iter()
                .find(|(k, _)| k == key)
                .and_then(|(_, v)| v.as_deref().map(wire::AnyValue::String))
        })
    }

    proptest! {
        #[test]
        fn promoted_columns_take_the_first_attribute_of_their_most_current_key(
            attributes in prop::collection::vec(
                (
                    prop::sample::select(vec![
                        "http.request.method", "http.method", "http.route", "url.path",
                        "http.target", "server.address", "net.peer.name", "db.system",
                        "customer.tier",
                    ]),
                    prop::option::of(".{0,4}"),
                ),
                0..10,
            ),
        ) {
            let mut promoted = Promoted::default();
            for (key, value) in &attributes {
                promoted.offer(key, value.as_deref().map(wire::AnyValue::String));
            }
            let found = promoted.values();
            for (column, value) in PROMOTED_SPAN_COLUMNS.iter().zip(found) {
                prop_assert_eq!(value, first_of_keys(&attributes, column.keys), "{}", column.column);
            }
        }
    }

    fn any_value() -> impl Strategy<Value = Option<AnyValue>> {
        let leaf = prop_oneof![
            Just(None),
            ".{0,12}".prop_map(|s| Some(Value::StringValue(s))),
            any::<bool>().prop_map(|b| Some(Value::BoolValue(b))),
            any::<i64>().prop_map(|i| Some(Value::IntValue(i))),
            any::<f64>().prop_map(|d| Some(Value::DoubleValue(d))),
            prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Some(Value::BytesValue(b))),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|values| {
                    Some(Value::ArrayValue(ArrayValue {
                        values: values.into_iter().map(|value| AnyValue { value }).collect(),
                    }))
                }),
                prop::collection::vec(("[a-z.]{1,6}", inner), 0..4).prop_map(|pairs| {
                    Some(Value::KvlistValue(KeyValueList {
                        values: pairs
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value: Some(AnyValue { value }),
                                ..Default::default()
                            })
                            .collect(),
                    }))
                }),
            ]
        })
        .prop_map(|value| Some(AnyValue { value }))
    }

    fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
        prop::collection::vec(
            (
                prop::sample::select(vec!["http.status_code", "http.route", "k", "db.system"]),
                any_value(),
            ),
            0..5,
        )
        .prop_map(|pairs| {
            pairs
                .into_iter()
                .map(|(key, value)| KeyValue {
                    key: key.to_string(),
                    value,
                    ..Default::default()
                })
                .collect()
        })
    }

    /// Mostly ids of the valid length, sometimes any length up to two past it.
    fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            4 => prop::collection::vec(1..=u8::MAX, len),
            1 => prop::collection::vec(any::<u8>(), 0..=len + 2),
        ]
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            (id(16), id(8), id(8)),
            (
                any::<u64>(),
                prop_oneof![3 => 0..1_000_000u64, 1 => any::<u64>()],
                any::<i32>(),
            ),
            attributes(),
            prop::collection::vec((any::<u64>(), attributes()), 0..3),
            prop::collection::vec((id(16), id(8), attributes()), 0..2),
        )
            .prop_map(
                |(
                    (trace_id, span_id, parent_span_id),
                    (start, end, kind),
                    attributes,
                    events,
                    links,
                )| Span {
                    trace_id,
                    span_id,
                    parent_span_id,
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: end,
                    attributes,
                    events: events
                        .into_iter()
                        .map(|(time_unix_nano, attributes)| Event {
                            time_unix_nano,
                            attributes,
                            ..Default::default()
                        })
                        .collect(),
                    links: links
                        .into_iter()
                        .map(|(trace_id, span_id, attributes)| Link {
                            trace_id,
                            span_id,
                            attributes,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                },
            )
    }

    proptest! {
        /// Whatever a decoded request holds, conversion does not panic, and
        /// every span is either a row or counted as rejected.
        #[test]
        fn every_span_is_stored_or_rejected(spans in prop::collection::vec(span(), 0..8)) {
            let total = spans.len() as u64;
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }],
            };
            let converted = spans_to_batch(&request).unwrap();
            prop_assert_eq!(converted.batch.num_rows() as u64 + converted.rejected, total);
            prop_assert_eq!(converted.rejected > 0, converted.error_message.is_some());
        }

        /// Corrupted protobuf never panics the conversion, and what prost
        /// accepts is converted, to the same rows as prost's own reading of it.
        #[test]
        fn corrupted_requests_are_errors_never_panics(
            spans in prop::collection::vec(span(), 1..4),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0..3u8), 1..4),
        ) {
            let request = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
                    ..Default::default()
                }],
            };
            let mut bytes = request.encode_to_vec();
            for (at, byte, edit) in edits {
                let at = at.index(bytes.len());
                match edit {
                    0 => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    _ => bytes.truncate(at),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let converted = spans_from_protobuf(&bytes);
            if let Ok(decoded) = ExportTraceServiceRequest::decode(bytes.as_slice()) {
                let converted = converted.expect("what prost decodes is converted");
                // Re-encoded by prost, unknown fields are gone, fields are in
                // order and repeated singular ones merged: the same rows.
                let canonical = spans_to_batch(&decoded).unwrap();
                prop_assert_eq!(converted.batch, canonical.batch);
                prop_assert_eq!(converted.rejected, canonical.rejected);
            }
        }
    }
}
