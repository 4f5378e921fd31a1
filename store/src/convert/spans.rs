//! `ExportTraceServiceRequest` → a `spans` batch.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayBuilder, ArrayRef, Int64Builder, RecordBatch, StringBuilder, TimestampNanosecondBuilder,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};

use super::columns::{append_non_empty, clamp_nanos, EventsBuilder, LinksBuilder, TextMapBuilder};
use super::values::{append_text, as_int};
use super::{check_id, hex_id, service_name, Converted, Rejections};
use crate::schema::{spans_schema, PromotedKind, PROMOTED_SPAN_COLUMNS};

/// Converts a trace export request into one `spans` batch, leaving out (and
/// counting) spans with invalid ids or an end before their start.
pub fn spans_to_batch(request: &ExportTraceServiceRequest) -> Converted {
    let mut columns = SpanColumns::new();
    let mut rejections = Rejections::default();
    for (r, resource_spans) in request.resource_spans.iter().enumerate() {
        let resource = resource_spans.resource.as_ref();
        let service = service_name(resource);
        let resource_attributes = resource.map(|r| r.attributes.as_slice()).unwrap_or(&[]);
        for (s, scope_spans) in resource_spans.scope_spans.iter().enumerate() {
            let scope = scope_spans.scope.as_ref();
            for (i, span) in scope_spans.spans.iter().enumerate() {
                match validate(span) {
                    Ok(()) => columns.append(span, service, resource_attributes, scope),
                    Err(reason) => rejections.reject(|| {
                        format!("resource_spans[{r}].scope_spans[{s}].spans[{i}]: {reason}")
                    }),
                }
            }
        }
    }
    rejections.finish(columns.finish())
}

fn validate(span: &Span) -> Result<(), String> {
    check_id("trace_id", &span.trace_id, 16, false)?;
    check_id("span_id", &span.span_id, 8, false)?;
    check_id("parent_span_id", &span.parent_span_id, 8, true)?;
    for (l, link) in span.links.iter().enumerate() {
        check_id(&format!("links[{l}].trace_id"), &link.trace_id, 16, false)?;
        check_id(&format!("links[{l}].span_id"), &link.span_id, 8, false)?;
    }
    if span.end_time_unix_nano < span.start_time_unix_nano {
        return Err(format!(
            "end_time_unix_nano {} is before start_time_unix_nano {}",
            span.end_time_unix_nano, span.start_time_unix_nano
        ));
    }
    Ok(())
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
    Text(StringBuilder),
    Int(Int64Builder),
}

#[derive(Default)]
struct SpanColumns {
    trace_id: StringBuilder,
    span_id: StringBuilder,
    parent_span_id: StringBuilder,
    trace_state: StringBuilder,
    service_name: StringBuilder,
    name: StringBuilder,
    kind: StringBuilder,
    start_time: TimestampNanosecondBuilder,
    end_time: TimestampNanosecondBuilder,
    duration_ns: Int64Builder,
    status_code: StringBuilder,
    status_message: StringBuilder,
    attributes: TextMapBuilder,
    resource_attributes: TextMapBuilder,
    scope_name: StringBuilder,
    scope_version: StringBuilder,
    events: EventsBuilder,
    links: LinksBuilder,
    promoted: Vec<PromotedBuilder>,
    scratch: String,
}

impl SpanColumns {
    fn new() -> Self {
        let promoted = PROMOTED_SPAN_COLUMNS
            .iter()
            .map(|p| match p.kind {
                PromotedKind::Text => PromotedBuilder::Text(StringBuilder::new()),
                PromotedKind::Int => PromotedBuilder::Int(Int64Builder::new()),
            })
            .collect();
        Self {
            promoted,
            ..Default::default()
        }
    }

    fn append(
        &mut self,
        span: &Span,
        service: &str,
        resource_attributes: &[KeyValue],
        scope: Option<&opentelemetry_proto::tonic::common::v1::InstrumentationScope>,
    ) {
        let mut buf = [0u8; 32];
        self.trace_id.append_value(hex_id(&span.trace_id, &mut buf));
        self.span_id.append_value(hex_id(&span.span_id, &mut buf));
        if span.parent_span_id.is_empty() {
            self.parent_span_id.append_null();
        } else {
            self.parent_span_id
                .append_value(hex_id(&span.parent_span_id, &mut buf));
        }
        append_non_empty(&mut self.trace_state, &span.trace_state);
        self.service_name.append_value(service);
        self.name.append_value(&span.name);
        self.kind.append_value(kind_name(span.kind));
        let start = clamp_nanos(span.start_time_unix_nano);
        let end = clamp_nanos(span.end_time_unix_nano);
        self.start_time.append_value(start);
        self.end_time.append_value(end);
        self.duration_ns.append_value(end - start);
        let status = span.status.as_ref();
        self.status_code
            .append_value(status_name(status.map_or(0, |s| s.code)));
        append_non_empty(
            &mut self.status_message,
            status.map_or("", |s| s.message.as_str()),
        );
        self.attributes.append(&span.attributes);
        self.resource_attributes.append(resource_attributes);
        append_non_empty(&mut self.scope_name, scope.map_or("", |s| s.name.as_str()));
        append_non_empty(
            &mut self.scope_version,
            scope.map_or("", |s| s.version.as_str()),
        );
        self.events.append(&span.events);
        self.links.append(&span.links);
        self.append_promoted(&span.attributes);
    }

    fn append_promoted(&mut self, attributes: &[KeyValue]) {
        let found = promoted_values(attributes);
        for (value, builder) in found.into_iter().zip(&mut self.promoted) {
            match builder {
                PromotedBuilder::Text(b) => append_text(b, value, &mut self.scratch),
                PromotedBuilder::Int(b) => b.append_option(as_int(value)),
            }
        }
    }

    fn finish(mut self) -> RecordBatch {
        let rows = self.trace_id.len();
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

/// The value of the first of `keys` present in `attributes`.
/// For each promoted column, the attribute that fills it: the first attribute
/// with the column's most current key that has a value (an attribute without
/// one gives way to the next key, as if absent). One pass over the
/// attributes with one lookup each, rather than a scan of them per key.
fn promoted_values(attributes: &[KeyValue]) -> [Option<&AnyValue>; PROMOTED_SPAN_COLUMNS.len()] {
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
    let mut found: [Option<(usize, &AnyValue)>; PROMOTED_SPAN_COLUMNS.len()] =
        [None; PROMOTED_SPAN_COLUMNS.len()];
    // Which keys of each column were met already: only the first counts.
    let mut seen = [0u32; PROMOTED_SPAN_COLUMNS.len()];
    for kv in attributes {
        let Some(&(column, rank)) = KEYS.get(kv.key.as_str()) else {
            continue;
        };
        if seen[column] & (1 << rank) != 0 {
            continue;
        }
        seen[column] |= 1 << rank;
        if let Some(value) = kv.value.as_ref() {
            if found[column].is_none_or(|(best, _)| rank < best) {
                found[column] = Some((rank, value));
            }
        }
    }
    found.map(|f| f.map(|(_, value)| value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{
        span::Event, span::Link, ResourceSpans, ScopeSpans,
    };
    use proptest::prelude::*;

    /// What [`promoted_values`] must find: for each key in order, the first
    /// attribute with that key, if it has a value.
    fn first_of_keys<'a>(attributes: &'a [KeyValue], keys: &[&str]) -> Option<&'a AnyValue> {
        keys.iter().find_map(|key| {
            attributes
                .iter()
                .find(|kv| kv.key == *key)
                .and_then(|kv| kv.value.as_ref())
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
            let attributes: Vec<KeyValue> = attributes
                .into_iter()
                .map(|(key, value)| KeyValue {
                    key: key.to_string(),
                    value: value.map(|v| AnyValue { value: Some(Value::StringValue(v)) }),
                    ..Default::default()
                })
                .collect();
            let found = promoted_values(&attributes);
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
            let converted = spans_to_batch(&request);
            prop_assert_eq!(converted.batch.num_rows() as u64 + converted.rejected, total);
            prop_assert_eq!(converted.rejected > 0, converted.error_message.is_some());
        }
    }
}
