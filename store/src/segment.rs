//! Parquet segments: one flush of a table, sorted for locality.
//!
//! Spans are sorted by (service_name, trace_id, start_time), so a trace's spans
//! from one service sit together and min/max statistics on `trace_id` prune
//! pages; logs by (service_name, time). Every file is zstd-compressed with
//! page-level statistics and bloom filters on the id columns, so trace-by-id
//! and time-range reads skip almost everything.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::Path;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::TimestampNanosecondType;
use arrow::row::{RowConverter, SortField};
use parquet::arrow::arrow_writer::compute_leaves;
use parquet::arrow::{ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::SortingColumn;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::schema::types::ColumnPath;

use crate::error::{IoContext, Result};
use crate::table::Signal;

/// Rows per Parquet row group: small enough that a trace-by-id lookup reads
/// little, large enough that statistics and dictionaries stay effective.
const ROW_GROUP_ROWS: usize = 64 * 1024;

/// Rows per data page at most. A trace-by-id lookup decodes whole pages:
/// those whose `trace_id` statistics may hold the id, and the same rows of
/// every other column it reads (the offset index finds them). Spans are
/// sorted by service first, so a row group holds one sorted run of trace ids
/// per service, and the pages across a run boundary match any id; small pages
/// keep those and the matching ones a small part of the row group.
const DATA_PAGE_ROWS: usize = 2048;

/// What a finished segment holds, for the catalog.
#[derive(Debug, Clone)]
pub struct WrittenSegment {
    pub rows: u64,
    pub bytes: u64,
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    pub services: Vec<String>,
}

/// The columns a table is sorted by, most significant first.
fn sort_columns(signal: Signal) -> &'static [&'static str] {
    match signal {
        Signal::Spans => &["service_name", "trace_id", "start_time"],
        Signal::Logs => &["service_name", "time"],
    }
}

/// The column that places a row in time.
pub fn time_column(signal: Signal) -> &'static str {
    match signal {
        Signal::Spans => "start_time",
        Signal::Logs => "time",
    }
}

/// Merges `batches` (at least one) into one batch in the table's segment order.
///
/// The order comes from a fixed-width key per row ([`fixed_width_order`]),
/// or Arrow's row format for keys conversion does not write; the rows are
/// then moved as runs (see [`crate::reorder`]).
pub fn sort_for_locality(signal: Signal, batches: &[RecordBatch]) -> Result<RecordBatch> {
    let order = match fixed_width_order(signal, batches) {
        Some(order) => order,
        None => row_order(signal, batches)?,
    };
    Ok(crate::reorder::take_rows(signal.schema(), batches, &order)?)
}

/// The rows of `batches` (numbered across them) in segment order, sorted by
/// a fixed-width key per row: the service's rank among the segment's
/// services, the trace id as the number its 32 hex digits spell (lowercase
/// hex orders as its value), the time. Sorting these with integer
/// comparisons takes a fraction of what [`row_order`]'s byte strings and a
/// `memcmp` per comparison take. `None` if a key column holds something
/// conversion does not write (a null, a trace id that is not 32 lowercase hex
/// digits); [`row_order`] sorts those.
fn fixed_width_order(signal: Signal, batches: &[RecordBatch]) -> Option<Vec<u32>> {
    let services = service_ranks(batches)?;
    let times = |batch: &RecordBatch| {
        let column = batch.column_by_name(time_column(signal))?;
        let times = column.as_primitive_opt::<TimestampNanosecondType>()?;
        (times.null_count() == 0).then(|| times.values().clone())
    };
    let mut row = 0u32;
    match signal {
        Signal::Spans => {
            let mut keys: Vec<(u32, u128, i64, u32)> = Vec::with_capacity(services.len());
            for batch in batches {
                let trace_ids = batch.column_by_name("trace_id")?.as_string_opt::<i32>()?;
                if trace_ids.null_count() > 0 {
                    return None;
                }
                let times = times(batch)?;
                for (trace_id, time) in trace_ids.iter().zip(times.iter()) {
                    let trace = hex_u128(trace_id?)?;
                    keys.push((services[row as usize], trace, *time, row));
                    row += 1;
                }
            }
            keys.sort_unstable();
            Some(keys.into_iter().map(|key| key.3).collect())
        }
        Signal::Logs => {
            let mut keys: Vec<(u32, i64, u32)> = Vec::with_capacity(services.len());
            for batch in batches {
                for time in times(batch)?.iter() {
                    keys.push((services[row as usize], *time, row));
                    row += 1;
                }
            }
            keys.sort_unstable();
            Some(keys.into_iter().map(|key| key.2).collect())
        }
    }
}

/// Each row's service as its rank among the distinct service names of the
/// batches, in byte order (as [`row_order`] compares them); `None` if a
/// batch's `service_name` is missing, not text, or holds a null.
fn service_ranks(batches: &[RecordBatch]) -> Option<Vec<u32>> {
    // Rows of one resource come together and share their service: the
    // previous row's name is checked before the map.
    let mut ids: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
    let mut names: Vec<&str> = Vec::new();
    let mut ranks: Vec<u32> = Vec::new();
    for batch in batches {
        let column = batch
            .column_by_name("service_name")?
            .as_string_opt::<i32>()?;
        if column.null_count() > 0 {
            return None;
        }
        let mut last: Option<(&str, u32)> = None;
        for name in column.iter() {
            let name = name?;
            let id = match last {
                Some((previous, id)) if previous == name => id,
                _ => {
                    let next = names.len() as u32;
                    let id = *ids.entry(name).or_insert(next);
                    if id == next {
                        names.push(name);
                    }
                    last = Some((name, id));
                    id
                }
            };
            ranks.push(id);
        }
    }
    let mut by_name: Vec<u32> = (0..names.len() as u32).collect();
    by_name.sort_unstable_by_key(|&id| names[id as usize]);
    let mut rank_of = vec![0u32; names.len()];
    for (rank, id) in by_name.into_iter().enumerate() {
        rank_of[id as usize] = rank as u32;
    }
    for id in &mut ranks {
        *id = rank_of[*id as usize];
    }
    Some(ranks)
}

/// The value of 32 lowercase hex digits; `None` for anything else.
fn hex_u128(text: &str) -> Option<u128> {
    let digits = text.as_bytes();
    if digits.len() != 32 {
        return None;
    }
    let mut value = 0u128;
    for &digit in digits {
        let nibble = match digit {
            b'0'..=b'9' => digit - b'0',
            b'a'..=b'f' => digit - b'a' + 10,
            _ => return None,
        };
        value = value << 4 | u128::from(nibble);
    }
    Some(value)
}

/// The rows of `batches` in segment order, by comparing each row's key
/// columns encoded as byte strings (arrow's row format): any values, nulls
/// last.
fn row_order(signal: Signal, batches: &[RecordBatch]) -> Result<Vec<u32>> {
    // Only the key columns are concatenated; the rows are moved straight out
    // of the batches.
    let keys: Vec<ArrayRef> = sort_columns(signal)
        .iter()
        .map(|name| {
            let columns: Vec<&dyn Array> = batches
                .iter()
                .map(|batch| {
                    batch
                        .column_by_name(name)
                        .expect("sort columns are in the schema")
                        .as_ref()
                })
                .collect();
            arrow::compute::concat(&columns)
        })
        .collect::<std::result::Result<_, _>>()?;
    let converter = RowConverter::new(
        keys.iter()
            .map(|key| SortField::new(key.data_type().clone()))
            .collect(),
    )?;
    let rows = converter.convert_columns(&keys)?;
    let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
    order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    Ok(order)
}

/// How `rows` rows of `signal` are written.
fn writer_properties(
    signal: Signal,
    schema: &arrow::datatypes::Schema,
    rows: usize,
) -> WriterProperties {
    let sorting = sort_columns(signal)
        .iter()
        .map(|name| SortingColumn {
            column_idx: schema
                .index_of(name)
                .expect("sort columns are in the schema") as i32,
            descending: false,
            nulls_first: false,
        })
        .collect();
    // Level 1: level 3 made segments 2 % smaller for 25 % more of the write's
    // time, which is on the ingest path (BENCHMARKS.md).
    let mut builder = WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(1).expect("valid level"),
        ))
        .set_statistics_enabled(EnabledStatistics::Page)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_data_page_row_count_limit(DATA_PAGE_ROWS)
        .set_sorting_columns(Some(sorting))
        .set_created_by(format!("weft {}", env!("CARGO_PKG_VERSION")));
    // A row group holds at most `ROW_GROUP_ROWS` distinct ids. Sized for
    // Parquet's default (a million) instead, each filter would be a zeroed
    // MiB, folded down after the row group is written.
    let ids_per_row_group = rows.clamp(1, ROW_GROUP_ROWS) as u64;
    for id in ["trace_id", "span_id"] {
        builder = builder
            .set_column_bloom_filter_enabled(ColumnPath::from(id), true)
            .set_column_bloom_filter_max_ndv(ColumnPath::from(id), ids_per_row_group);
    }
    // Span ids are unique per row: a dictionary would only cost time. Other
    // columns repeat in runs once sorted — a trace's span ids side by side, a
    // resource's few attributes on every span of its service, events' names
    // and attributes — which zstd compresses as well as a dictionary does
    // without its hash and comparison per value (BENCHMARKS.md: Parquet write
    // −8 %, files 1 % smaller). Log records sorted by time do not keep a
    // trace together, so their trace ids keep the dictionary.
    let mut plain: Vec<Vec<&str>> = vec![
        vec!["span_id"],
        vec!["parent_span_id"],
        vec!["resource_attributes", "key_value", "key"],
        vec!["resource_attributes", "key_value", "value"],
        vec!["events", "list", "item", "name"],
        vec!["events", "list", "item", "attributes", "key_value", "key"],
        vec!["events", "list", "item", "attributes", "key_value", "value"],
    ];
    if signal == Signal::Spans {
        plain.push(vec!["trace_id"]);
    }
    // Nanosecond times and durations are all but unique: a dictionary only
    // hashes every value until it gives up. Stored as differences from the
    // value before, bit-packed in blocks, they are smaller after zstd than
    // either plain or dictionary-encoded, and faster to encode (BENCHMARKS.md).
    let times: &[&[&str]] = match signal {
        Signal::Spans => &[
            &["start_time"],
            &["end_time"],
            &["duration_ns"],
            &["events", "list", "item", "time"],
        ],
        Signal::Logs => &[&["time"], &["observed_time"]],
    };
    for path in times {
        let column = ColumnPath::new(path.iter().map(|part| part.to_string()).collect());
        builder = builder.set_column_encoding(column, Encoding::DELTA_BINARY_PACKED);
        plain.push(path.to_vec());
    }
    for path in plain {
        let path = ColumnPath::new(path.into_iter().map(String::from).collect());
        builder = builder.set_column_dictionary_enabled(path, false);
    }
    // No predicate reaches inside a map or list (the values queries filter on
    // have promoted top-level columns), so statistics of their leaves would
    // only cost two comparisons per key and value.
    if let Ok(parquet_schema) = ArrowSchemaConverter::new().convert(schema) {
        for column in parquet_schema.columns() {
            if column.path().parts().len() > 1 {
                builder = builder
                    .set_column_statistics_enabled(column.path().clone(), EnabledStatistics::None);
            }
        }
    }
    builder.build()
}

/// Writes `batch` (already sorted) as a Parquet file at `path`, durably:
/// written to a temporary name, fsync'd, renamed, and the directory fsync'd.
pub fn write_segment(signal: Signal, batch: &RecordBatch, path: &Path) -> Result<WrittenSegment> {
    let tmp = path.with_extension("parquet.tmp");
    let file = File::create(&tmp).at(&tmp)?;
    let writer = ArrowWriter::try_new(
        file,
        batch.schema(),
        Some(writer_properties(
            signal,
            batch.schema_ref(),
            batch.num_rows(),
        )),
    )?;
    // The ArrowWriter writes the schema as Parquet and Arrow metadata; its
    // lower-level parts let each row group's columns be encoded at once.
    let (mut writer, row_groups) = writer.into_serialized_writer()?;
    let schema = batch.schema();
    let mut start = 0;
    while start < batch.num_rows() {
        let rows = batch.slice(start, ROW_GROUP_ROWS.min(batch.num_rows() - start));
        let column_writers = row_groups.create_column_writers(writer.flushed_row_groups().len())?;
        let mut leaves = Vec::with_capacity(column_writers.len());
        for (field, column) in schema.fields().iter().zip(rows.columns()) {
            let bytes = column.get_array_memory_size();
            for leaf in compute_leaves(field, column)? {
                leaves.push((bytes, leaf));
            }
        }
        debug_assert_eq!(leaves.len(), column_writers.len(), "one writer per leaf");
        let jobs = column_writers
            .into_iter()
            .zip(leaves)
            .map(|(writer, (bytes, leaf))| (bytes, (writer, leaf)))
            .collect();
        let chunks = crate::parallel::map_largest_first(jobs, |(mut writer, leaf)| {
            writer.write(&leaf)?;
            writer.close()
        });
        let mut row_group = writer.next_row_group()?;
        for chunk in chunks {
            chunk?.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
        start += rows.num_rows();
    }
    writer.finish()?;
    writer.inner_mut().sync_all().at(&tmp)?;
    drop(writer);
    fs::rename(&tmp, path).at(path)?;
    if let Some(dir) = path.parent() {
        crate::wal::sync_dir(dir)?;
    }
    let bytes = fs::metadata(path).at(path)?.len();
    let (min_time_ns, max_time_ns) = time_range(signal, batch);
    Ok(WrittenSegment {
        rows: batch.num_rows() as u64,
        bytes,
        min_time_ns,
        max_time_ns,
        services: services(batch),
    })
}

fn time_range(signal: Signal, batch: &RecordBatch) -> (i64, i64) {
    let times = batch
        .column_by_name(time_column(signal))
        .expect("time column is in the schema")
        .as_primitive::<TimestampNanosecondType>();
    (
        arrow::compute::min(times).unwrap_or(0),
        arrow::compute::max(times).unwrap_or(0),
    )
}

/// The distinct services of a batch sorted by service first.
fn services(batch: &RecordBatch) -> Vec<String> {
    let names = batch
        .column_by_name("service_name")
        .expect("service_name is in the schema")
        .as_string::<i32>();
    let mut services: Vec<String> = Vec::new();
    for name in names.iter().flatten() {
        if services.last().map(String::as_str) != Some(name) {
            services.push(name.to_owned());
        }
    }
    services
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::spans_to_batch;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn request(services: &[&str]) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: services
                .iter()
                .enumerate()
                .map(|(i, service)| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![KeyValue {
                            key: "service.name".into(),
                            value: Some(AnyValue {
                                value: Some(Value::StringValue(service.to_string())),
                            }),
                            ..Default::default()
                        }],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: vec![9 - i as u8; 16],
                            span_id: vec![1 + i as u8; 8],
                            name: format!("op-{i}"),
                            start_time_unix_nano: 1_000 + i as u64,
                            end_time_unix_nano: 2_000,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        }
    }

    #[test]
    fn a_segment_is_sorted_and_readable_with_statistics_and_bloom_filters() {
        let dir = tempfile::tempdir().unwrap();
        let batches = [
            spans_to_batch(&request(&["b", "a"])).unwrap().batch,
            spans_to_batch(&request(&["c", "b"])).unwrap().batch,
        ];
        let sorted = sort_for_locality(Signal::Spans, &batches).unwrap();
        let path = dir.path().join("seg.parquet");
        let written = write_segment(Signal::Spans, &sorted, &path).unwrap();
        assert_eq!(written.rows, 4);
        assert_eq!(written.services, vec!["a", "b", "c"]);
        assert_eq!((written.min_time_ns, written.max_time_ns), (1_000, 1_001));

        let builder = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).unwrap()).unwrap();
        let metadata = builder.metadata().clone();
        let row_group = metadata.row_group(0);
        let trace_id = row_group
            .columns()
            .iter()
            .find(|c| c.column_path().string() == "trace_id")
            .unwrap();
        assert!(trace_id.bloom_filter_offset().is_some());
        assert!(trace_id.statistics().is_some());
        // Dictionaries only where sorting does not already make runs.
        let dictionary = |path: &str| {
            row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == path)
                .unwrap_or_else(|| panic!("no column {path}"))
                .dictionary_page_offset()
                .is_some()
        };
        for plain in [
            "trace_id",
            "span_id",
            "resource_attributes.key_value.key",
            "resource_attributes.key_value.value",
            "events.list.item.name",
            "events.list.item.attributes.key_value.value",
        ] {
            assert!(!dictionary(plain), "{plain} has a dictionary");
        }
        assert!(dictionary("name"));
        assert!(dictionary("attributes.key_value.value"));
        // Times as deltas, and read back as they were (below).
        for time in [
            "start_time",
            "end_time",
            "duration_ns",
            "events.list.item.time",
        ] {
            let chunk = row_group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == time)
                .unwrap();
            assert!(
                chunk
                    .encodings()
                    .any(|e| e == parquet::basic::Encoding::DELTA_BINARY_PACKED),
                "{time} is not delta-encoded"
            );
            assert!(!dictionary(time), "{time} has a dictionary");
        }
        let read: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
        let names = read[0]
            .column_by_name("service_name")
            .unwrap()
            .as_string::<i32>();
        let names: Vec<&str> = names.iter().flatten().collect();
        assert_eq!(names, vec!["a", "b", "b", "c"]);
        let trace_ids = read[0]
            .column_by_name("trace_id")
            .unwrap()
            .as_string::<i32>();
        // Within service "b", rows are ordered by trace id.
        assert!(trace_ids.value(1) < trace_ids.value(2));
        for time in ["start_time", "end_time", "duration_ns"] {
            assert_eq!(
                read[0].column_by_name(time),
                sorted.column_by_name(time),
                "{time}"
            );
        }
    }
}

#[cfg(test)]
mod order_tests {
    use super::*;
    use crate::convert::{logs_to_batch, spans_to_batch};
    use arrow::array::StringArray;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    use proptest::prelude::*;
    use std::sync::Arc;

    const SERVICES: [&str; 4] = ["crm-mobile", "crm-conductor", "a", "crm-database"];

    /// A row: its service (an index into [`SERVICES`]), trace id, time.
    type Row = (usize, [u8; 16], u64);

    fn resource(service: usize) -> Option<Resource> {
        Some(Resource {
            attributes: vec![KeyValue {
                key: "service.name".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue(SERVICES[service].into())),
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
    }

    fn spans(rows: &[Row]) -> RecordBatch {
        let request = ExportTraceServiceRequest {
            resource_spans: rows
                .iter()
                .map(|&(service, trace_id, time)| ResourceSpans {
                    resource: resource(service),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: trace_id.to_vec(),
                            span_id: vec![1; 8],
                            name: "op".into(),
                            start_time_unix_nano: time,
                            end_time_unix_nano: time,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        spans_to_batch(&request).unwrap().batch
    }

    fn logs(rows: &[Row]) -> RecordBatch {
        let request = ExportLogsServiceRequest {
            resource_logs: rows
                .iter()
                .map(|&(service, _, time)| ResourceLogs {
                    resource: resource(service),
                    scope_logs: vec![ScopeLogs {
                        log_records: vec![LogRecord {
                            time_unix_nano: time,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                })
                .collect(),
        };
        logs_to_batch(&request).unwrap().batch
    }

    /// The sort key of each row of `order`, as text and numbers.
    fn keys(signal: Signal, batches: &[RecordBatch], order: &[u32]) -> Vec<Vec<String>> {
        let columns: Vec<ArrayRef> = sort_columns(signal)
            .iter()
            .map(|name| {
                let parts: Vec<&dyn Array> = batches
                    .iter()
                    .map(|b| b.column_by_name(name).unwrap().as_ref())
                    .collect();
                arrow::compute::concat(&parts).unwrap()
            })
            .collect();
        order
            .iter()
            .map(|&row| {
                columns
                    .iter()
                    .map(|column| match column.as_string_opt::<i32>() {
                        Some(text) => text.value(row as usize).to_string(),
                        None => column
                            .as_primitive::<TimestampNanosecondType>()
                            .value(row as usize)
                            .to_string(),
                    })
                    .collect()
            })
            .collect()
    }

    fn row_strategy() -> impl Strategy<Value = Row> {
        // Few distinct first bytes and times, so that keys tie on a prefix.
        (
            0..SERVICES.len(),
            (0u8..3, any::<[u8; 15]>()),
            prop_oneof![0u64..4, any::<u64>()],
        )
            .prop_map(|(service, (first, rest), time)| {
                let mut trace_id = [0u8; 16];
                trace_id[0] = first * 0x70;
                trace_id[1..].copy_from_slice(&rest);
                (service, trace_id, time)
            })
    }

    proptest! {
        #[test]
        fn fixed_width_keys_sort_as_the_row_format_does(
            batches in proptest::collection::vec(proptest::collection::vec(row_strategy(), 1..40), 1..4),
        ) {
            for (signal, make) in [(Signal::Spans, spans as fn(&[Row]) -> RecordBatch), (Signal::Logs, logs)] {
                let batches: Vec<RecordBatch> = batches.iter().map(|rows| make(rows)).collect();
                let fixed = fixed_width_order(signal, &batches).expect("converted batches take the fixed-width path");
                let general = row_order(signal, &batches).unwrap();
                prop_assert_eq!(keys(signal, &batches, &fixed), keys(signal, &batches, &general));
            }
        }
    }

    #[test]
    fn trace_ids_conversion_does_not_write_are_sorted_the_general_way() {
        let batch = spans(&[(0, [0xab; 16], 2), (0, [0x01; 16], 1)]);
        let upper = StringArray::from(vec!["ABABABABABABABABABABABABABABABAB", "0101"]);
        let index = batch.schema().index_of("trace_id").unwrap();
        let mut columns = batch.columns().to_vec();
        columns[index] = Arc::new(upper);
        let batch = RecordBatch::try_new(batch.schema(), columns).unwrap();
        assert_eq!(
            fixed_width_order(Signal::Spans, std::slice::from_ref(&batch)),
            None
        );
        let sorted = sort_for_locality(Signal::Spans, &[batch]).unwrap();
        let trace_ids = sorted
            .column_by_name("trace_id")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(trace_ids.value(0), "0101");
    }
}
