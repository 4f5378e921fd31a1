//! Column builders the stock Arrow builders don't give in the exact shape of
//! our schema: text maps with Parquet's field names, and lists of structs.

use std::sync::Arc;

use arrow::array::{
    ArrayBuilder, ArrayRef, ListArray, MapArray, StringBuilder, StructArray,
    TimestampNanosecondBuilder,
};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::Fields;

use super::capacity::{self, Sizing, Text};
use super::values::{append_text, write_text};
use super::wire::{self, AnyValue, Result};
use crate::schema::{list_item_field, text_map_entries_field, text_map_entry_fields};

/// Builds a `map<text, text>` column from OTLP key-values.
pub(crate) struct TextMapBuilder {
    column: &'static str,
    keys: Text,
    values: Text,
    offsets: Vec<i32>,
    scratch: String,
}

impl TextMapBuilder {
    /// The builder of `column` (`spans.attributes`).
    pub(crate) fn new(column: &'static str, sizing: Sizing) -> Self {
        Self {
            column,
            keys: sizing.text((column, "key")),
            values: sizing.text((column, "value")),
            offsets: Vec::with_capacity(sizing.items((column, "offsets"))),
            scratch: String::new(),
        }
    }

    /// Appends one row holding the `KeyValue`s of the repeated field `tag` of
    /// `bytes`, an encoded `message`.
    pub(crate) fn append(&mut self, message: &'static str, bytes: &[u8], tag: u32) -> Result<()> {
        for kv in wire::repeated(message, bytes, tag, "attributes") {
            self.push(kv?)?;
        }
        self.close_row();
        Ok(())
    }

    /// Appends one row holding the encoded `KeyValue`s `attributes`, showing
    /// `each` every key and value on the way.
    pub(crate) fn append_all<'a>(
        &mut self,
        attributes: &[&'a [u8]],
        mut each: impl FnMut(&'a str, Option<AnyValue<'a>>),
    ) -> Result<()> {
        for kv in attributes {
            let (key, value) = self.push(kv)?;
            each(key, value);
        }
        self.close_row();
        Ok(())
    }

    /// Adds an encoded `KeyValue` to the row being built.
    #[inline]
    pub(crate) fn push<'a>(&mut self, kv: &'a [u8]) -> Result<(&'a str, Option<AnyValue<'a>>)> {
        let (key, value) = wire::key_value(kv)?;
        self.keys.append_value(key);
        append_text(&mut self.values, value, &mut self.scratch)?;
        Ok((key, value))
    }

    /// Ends the row being built.
    pub(crate) fn close_row(&mut self) {
        if self.offsets.is_empty() {
            self.offsets.push(0);
        }
        self.offsets.push(self.keys.len() as i32);
    }

    /// Appends one row holding `entries`.
    pub(crate) fn append_entries(&mut self, entries: &TextEntries<'_>) {
        for (key, value) in &entries.0 {
            self.keys.append_value(key);
            self.values.append_option(value.as_deref());
        }
        self.close_row();
    }

    pub(crate) fn finish(&mut self) -> ArrayRef {
        let offsets = std::mem::take(&mut self.offsets);
        capacity::note_items((self.column, "offsets"), offsets.len());
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

/// Key-values read and turned into text once, for the many rows that repeat
/// them (a resource's attributes, on every record of the resource).
#[derive(Default)]
pub(crate) struct TextEntries<'a>(Vec<(&'a str, Option<String>)>);

impl<'a> TextEntries<'a> {
    pub(crate) fn push(&mut self, key: &'a str, value: Option<AnyValue<'_>>) -> Result<()> {
        let mut text = String::new();
        let value = write_text(value, &mut text)?.then_some(text);
        self.0.push((key, value));
        Ok(())
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
pub(crate) struct EventsBuilder {
    rows: ListOffsets,
    time: TimestampNanosecondBuilder,
    name: Text,
    attributes: TextMapBuilder,
}

impl EventsBuilder {
    pub(crate) fn new(sizing: Sizing) -> Self {
        const NAME: (&str, &str) = ("spans.events", "name");
        Self {
            rows: ListOffsets::default(),
            time: TimestampNanosecondBuilder::with_capacity(sizing.items(NAME)),
            name: sizing.text(NAME),
            attributes: TextMapBuilder::new("spans.events.attributes", sizing),
        }
    }

    /// Appends one row: `events`, each an encoded `Span.Event`.
    pub(crate) fn append(&mut self, events: &[&[u8]]) -> Result<()> {
        for event in events {
            let (mut time, mut name) = (0, "");
            for field in wire::fields("Event", event) {
                let field = field?;
                match field.tag {
                    1 => time = field.fixed64("time_unix_nano")?,
                    2 => name = field.text("name")?,
                    3 => {
                        self.attributes.push(field.bytes("attributes")?)?;
                    }
                    4 => {
                        field.varint("dropped_attributes_count")?;
                    }
                    _ => {}
                }
            }
            self.attributes.close_row();
            self.time.append_value(clamp_nanos(time));
            self.name.append_value(name);
        }
        self.rows.close_row(events.len());
        Ok(())
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
pub(crate) struct LinksBuilder {
    rows: ListOffsets,
    trace_id: Text,
    span_id: Text,
    trace_state: Text,
    attributes: TextMapBuilder,
}

impl LinksBuilder {
    pub(crate) fn new(sizing: Sizing) -> Self {
        Self {
            rows: ListOffsets::default(),
            trace_id: sizing.text(("spans.links", "trace_id")),
            span_id: sizing.text(("spans.links", "span_id")),
            trace_state: sizing.text(("spans.links", "trace_state")),
            attributes: TextMapBuilder::new("spans.links.attributes", sizing),
        }
    }

    /// Appends one row: `links`, each an encoded `Span.Link` whose ids were
    /// checked (see [`Link::read`]).
    pub(crate) fn append(&mut self, links: &[&[u8]]) -> Result<()> {
        let mut buf = [0u8; 32];
        for bytes in links {
            let link = Link::read(bytes)?;
            self.trace_id
                .append_value(super::hex_id(link.trace_id, &mut buf));
            self.span_id
                .append_value(super::hex_id(link.span_id, &mut buf));
            append_non_empty(&mut self.trace_state, link.trace_state);
            self.attributes.append("Link", bytes, 4)?;
        }
        self.rows.close_row(links.len());
        Ok(())
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

/// The scalar fields of an encoded `Span.Link`.
#[derive(Default)]
pub(crate) struct Link<'a> {
    pub(crate) trace_id: &'a [u8],
    pub(crate) span_id: &'a [u8],
    pub(crate) trace_state: &'a str,
}

impl<'a> Link<'a> {
    pub(crate) fn read(bytes: &'a [u8]) -> Result<Self> {
        let mut link = Self::default();
        for field in wire::fields("Link", bytes) {
            let field = field?;
            match field.tag {
                1 => link.trace_id = field.bytes("trace_id")?,
                2 => link.span_id = field.bytes("span_id")?,
                3 => link.trace_state = field.text("trace_state")?,
                4 => {
                    field.bytes("attributes")?;
                }
                5 => {
                    field.varint("dropped_attributes_count")?;
                }
                6 => {
                    field.fixed32("flags")?;
                }
                _ => {}
            }
        }
        Ok(link)
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
