//! Column builders the stock Arrow builders don't give in the exact shape of
//! our schema: text maps with Parquet's field names, and lists of structs.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, ListArray, MapArray, StringBuilder, StructArray,
    TimestampNanosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::Fields;
use opentelemetry_proto::tonic::common::v1::KeyValue;

use super::values::append_text;
use crate::schema::{list_item_field, text_map_entries_field, text_map_entry_fields};

/// Builds a `map<text, text>` column from OTLP key-values.
#[derive(Default)]
pub(crate) struct TextMapBuilder {
    keys: StringBuilder,
    values: StringBuilder,
    offsets: Vec<i32>,
    scratch: String,
}

impl TextMapBuilder {
    /// Appends one row holding `attributes`.
    pub(crate) fn append(&mut self, attributes: &[KeyValue]) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        for kv in attributes {
            self.keys.append_value(&kv.key);
            append_text(&mut self.values, kv.value.as_ref(), &mut self.scratch);
        }
        self.offsets.push(self.keys.len() as i32);
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        let offsets = std::mem::take(&mut self.offsets);
        let offsets = if offsets.is_empty() { vec![0] } else { offsets };
        let entries = StructArray::new(
            text_map_entry_fields(),
            vec![
                Arc::new(self.keys.finish()) as ArrayRef,
                Arc::new(self.values.finish()),
            ],
            None,
        );
        Arc::new(
            MapArray::try_new(
                Arc::new(text_map_entries_field()),
                OffsetBuffer::new(offsets.into()),
                entries,
                None,
                false,
            )
            .expect("offsets and entries are built together"),
        )
    }
}

/// Offsets of a `list<struct>` column whose struct fields are built alongside.
#[derive(Default)]
pub(crate) struct ListOffsets {
    offsets: Vec<i32>,
    len: i32,
}

impl ListOffsets {
    /// Closes the current row after `items` more struct rows were appended.
    pub(crate) fn close_row(&mut self, items: usize) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.len += items as i32;
        self.offsets.push(self.len);
    }

    pub(crate) fn finish(&mut self, fields: Fields, children: Vec<ArrayRef>) -> ArrayRef {
        let offsets = std::mem::take(&mut self.offsets);
        let offsets = if offsets.is_empty() { vec![0] } else { offsets };
        self.len = 0;
        let items = StructArray::new(fields.clone(), children, None);
        Arc::new(ListArray::new(
            Arc::new(list_item_field(fields)),
            OffsetBuffer::new(offsets.into()),
            Arc::new(items),
            None,
        ))
    }
}

/// The `events` column of `spans`: list of struct(time, name, attributes).
#[derive(Default)]
pub(crate) struct EventsBuilder {
    rows: ListOffsets,
    time: TimestampNanosecondBuilder,
    name: StringBuilder,
    attributes: TextMapBuilder,
}

impl EventsBuilder {
    pub(crate) fn append(&mut self, events: &[opentelemetry_proto::tonic::trace::v1::span::Event]) {
        for event in events {
            self.time.append_value(clamp_nanos(event.time_unix_nano));
            self.name.append_value(&event.name);
            self.attributes.append(&event.attributes);
        }
        self.rows.close_row(events.len());
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        let children = vec![
            Arc::new(self.time.finish().with_timezone("UTC")) as ArrayRef,
            Arc::new(self.name.finish()),
            self.attributes.finish(),
        ];
        self.rows.finish(crate::schema::event_fields(), children)
    }
}

/// The `links` column of `spans`: list of struct(trace_id, span_id, trace_state, attributes).
#[derive(Default)]
pub(crate) struct LinksBuilder {
    rows: ListOffsets,
    trace_id: StringBuilder,
    span_id: StringBuilder,
    trace_state: StringBuilder,
    attributes: TextMapBuilder,
}

impl LinksBuilder {
    pub(crate) fn append(&mut self, links: &[opentelemetry_proto::tonic::trace::v1::span::Link]) {
        let mut buf = [0u8; 32];
        for link in links {
            self.trace_id
                .append_value(super::hex_id(&link.trace_id, &mut buf));
            self.span_id
                .append_value(super::hex_id(&link.span_id, &mut buf));
            append_non_empty(&mut self.trace_state, &link.trace_state);
            self.attributes.append(&link.attributes);
        }
        self.rows.close_row(links.len());
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        let children = vec![
            Arc::new(self.trace_id.finish()) as ArrayRef,
            Arc::new(self.span_id.finish()),
            Arc::new(self.trace_state.finish()),
            self.attributes.finish(),
        ];
        self.rows.finish(crate::schema::link_fields(), children)
    }
}

/// Appends `value`, or NULL when it is empty (protobuf cannot tell the two apart).
pub(crate) fn append_non_empty(builder: &mut StringBuilder, value: &str) {
    if value.is_empty() {
        builder.append_null();
    } else {
        builder.append_value(value);
    }
}

/// OTLP timestamps are u64 nanoseconds; Arrow's are i64. Times past 2262 are
/// clamped rather than wrapped into the past.
pub(crate) fn clamp_nanos(nanos: u64) -> i64 {
    i64::try_from(nanos).unwrap_or(i64::MAX)
}
