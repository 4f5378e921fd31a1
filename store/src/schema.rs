//! The Arrow schemas of the `spans` and `logs` tables.
//!
//! They are at once the SQL schema, the WAL record schema and the Parquet
//! schema, so the data directory is an open format: any Parquet reader sees
//! the same column names and types as `weft sql`.

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Timestamps are nanoseconds since the epoch, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into()))
}

/// `map<text, text>`, with the Parquet spec's field names (`key_value`, `key`, `value`).
pub fn text_map_type() -> DataType {
    DataType::Map(Arc::new(text_map_entries_field()), false)
}

pub(crate) fn text_map_entries_field() -> Field {
    Field::new(
        "key_value",
        DataType::Struct(text_map_entry_fields()),
        false,
    )
}

pub(crate) fn text_map_entry_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, true),
    ])
}

pub(crate) fn event_fields() -> Fields {
    Fields::from(vec![
        Field::new("time", timestamp_type(), false),
        Field::new("name", DataType::Utf8, false),
        Field::new("attributes", text_map_type(), false),
    ])
}

pub(crate) fn link_fields() -> Fields {
    Fields::from(vec![
        Field::new("trace_id", DataType::Utf8, false),
        Field::new("span_id", DataType::Utf8, false),
        Field::new("trace_state", DataType::Utf8, true),
        Field::new("attributes", text_map_type(), false),
    ])
}

pub(crate) fn list_item_field(fields: Fields) -> Field {
    Field::new("item", DataType::Struct(fields), false)
}

/// A typed column filled from a semantic-convention attribute, so common
/// filters need neither a map lookup nor a cast. The attribute stays in
/// `attributes` too.
pub struct PromotedColumn {
    pub column: &'static str,
    /// Attribute keys that fill the column, current convention first, then
    /// the older names instrumentations still send.
    pub keys: &'static [&'static str],
    pub kind: PromotedKind,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PromotedKind {
    Text,
    Int,
}

pub const PROMOTED_SPAN_COLUMNS: &[PromotedColumn] = &[
    PromotedColumn {
        column: "http_request_method",
        keys: &["http.request.method", "http.method"],
        kind: PromotedKind::Text,
    },
    PromotedColumn {
        column: "http_response_status_code",
        keys: &["http.response.status_code", "http.status_code"],
        kind: PromotedKind::Int,
    },
    PromotedColumn {
        column: "http_route",
        keys: &["http.route"],
        kind: PromotedKind::Text,
    },
    PromotedColumn {
        column: "url_path",
        keys: &["url.path", "http.target"],
        kind: PromotedKind::Text,
    },
    PromotedColumn {
        column: "server_address",
        keys: &["server.address", "net.peer.name", "net.host.name"],
        kind: PromotedKind::Text,
    },
    PromotedColumn {
        column: "db_system",
        keys: &["db.system.name", "db.system"],
        kind: PromotedKind::Text,
    },
    PromotedColumn {
        column: "rpc_method",
        keys: &["rpc.method"],
        kind: PromotedKind::Text,
    },
    PromotedColumn {
        column: "peer_service",
        keys: &["peer.service", "service.peer.name"],
        kind: PromotedKind::Text,
    },
];

/// The `spans` table.
pub fn spans_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields = vec![
            Field::new("trace_id", DataType::Utf8, false),
            Field::new("span_id", DataType::Utf8, false),
            Field::new("parent_span_id", DataType::Utf8, true),
            Field::new("trace_state", DataType::Utf8, true),
            Field::new("service_name", DataType::Utf8, false),
            Field::new("name", DataType::Utf8, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("start_time", timestamp_type(), false),
            Field::new("end_time", timestamp_type(), false),
            Field::new("duration_ns", DataType::Int64, false),
            Field::new("status_code", DataType::Utf8, false),
            Field::new("status_message", DataType::Utf8, true),
            Field::new("attributes", text_map_type(), false),
            Field::new("resource_attributes", text_map_type(), false),
            Field::new("scope_name", DataType::Utf8, true),
            Field::new("scope_version", DataType::Utf8, true),
            Field::new(
                "events",
                DataType::List(Arc::new(list_item_field(event_fields()))),
                false,
            ),
            Field::new(
                "links",
                DataType::List(Arc::new(list_item_field(link_fields()))),
                false,
            ),
        ];
        fields.extend(PROMOTED_SPAN_COLUMNS.iter().map(|p| {
            let data_type = match p.kind {
                PromotedKind::Text => DataType::Utf8,
                PromotedKind::Int => DataType::Int64,
            };
            Field::new(p.column, data_type, true)
        }));
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// The `logs` table.
pub fn logs_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        Arc::new(Schema::new(vec![
            Field::new("time", timestamp_type(), false),
            Field::new("observed_time", timestamp_type(), false),
            Field::new("severity_number", DataType::Int32, false),
            Field::new("severity_text", DataType::Utf8, true),
            Field::new("body", DataType::Utf8, true),
            Field::new("trace_id", DataType::Utf8, true),
            Field::new("span_id", DataType::Utf8, true),
            Field::new("service_name", DataType::Utf8, false),
            Field::new("attributes", text_map_type(), false),
            Field::new("resource_attributes", text_map_type(), false),
            Field::new("scope_name", DataType::Utf8, true),
            Field::new("event_name", DataType::Utf8, true),
        ]))
    });
    SCHEMA.clone()
}
