//! The full-text index: one tantivy index per Parquet segment.
//!
//! Each document is one row of its segment and carries that row's position as
//! the fast field `row`, so a search hit leads straight to a Parquet row. The
//! index of segment `X` lives in `index/X/` and is created and deleted with
//! `segments/X.parquet`. Spans index `name` and attribute values; logs index
//! `body` and attribute values. Exact lookups are left to the catalog
//! (service, time), the segment's trace-id filter written beside the index
//! ([`crate::trace_filter`]) and Parquet statistics and bloom filters.

use std::fs;
use std::path::Path;

use arrow::array::{Array, AsArray, MapArray, RecordBatch, StringArray};
use tantivy::schema::{
    Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST, TEXT,
};
use tantivy::{Index, IndexWriter, TantivyDocument};

use crate::error::{IoContext, Result};
use crate::table::Signal;
use crate::trace_filter::TraceFilter;

/// Memory tantivy may use while building one segment's index.
const WRITER_MEMORY_BYTES: usize = 64 * 1024 * 1024;

/// How a table's columns map to index fields.
#[derive(Clone, Copy)]
enum FieldKind {
    /// The column's value tokenized for full-text search, with positions
    /// (phrase queries work).
    Text,
    /// Every value of a `map<text, text>` column, tokenized, recording only
    /// which rows hold a term: attribute values are short, and positions and
    /// frequencies would add to the cost of indexing them without making
    /// matches more precise.
    MapValues,
}

fn indexed_columns(signal: Signal) -> &'static [(&'static str, FieldKind)] {
    match signal {
        Signal::Spans => &[
            ("name", FieldKind::Text),
            ("attributes", FieldKind::MapValues),
        ],
        Signal::Logs => &[
            ("body", FieldKind::Text),
            ("attributes", FieldKind::MapValues),
        ],
    }
}

/// Whether `column` of the table is in its index, and if so whether the index
/// records positions (phrase queries) for it: `None` for a column the index
/// does not cover.
pub fn indexed_with_positions(signal: Signal, column: &str) -> Option<bool> {
    indexed_columns(signal)
        .iter()
        .find(|(name, _)| *name == column)
        .map(|(_, kind)| matches!(kind, FieldKind::Text))
}

/// The name of the fast field holding a document's row in its segment.
pub const ROW_FIELD: &str = "row";

/// The tantivy schema of a table's index.
pub fn index_schema(signal: Signal) -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field(ROW_FIELD, FAST);
    for (name, kind) in indexed_columns(signal) {
        let options = match kind {
            FieldKind::Text => TEXT,
            FieldKind::MapValues => TextOptions::default().set_indexing_options(
                TextFieldIndexing::default()
                    .set_tokenizer("default")
                    .set_index_option(IndexRecordOption::Basic),
            ),
        };
        builder.add_text_field(name, options);
    }
    builder.build()
}

enum Source<'a> {
    Text(&'a StringArray),
    Map(&'a MapArray),
}

/// Builds the index of a sorted segment batch in `dir`, durably: built in a
/// temporary directory, then renamed into place.
pub fn build_index(signal: Signal, batch: &RecordBatch, dir: &Path) -> Result<()> {
    let tmp = dir.with_extension("tmp");
    if tmp.exists() {
        fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    fs::create_dir_all(&tmp).at(&tmp)?;
    let schema = index_schema(signal);
    let index = Index::create_in_dir(&tmp, schema.clone())?;
    let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
    let row_field = schema.get_field(ROW_FIELD)?;
    let sources: Vec<(Field, Source)> = indexed_columns(signal)
        .iter()
        .map(|(name, kind)| {
            let field = schema
                .get_field(name)
                .expect("field is in the index schema");
            let column = batch
                .column_by_name(name)
                .expect("column is in the table schema");
            let source = match kind {
                FieldKind::Text => Source::Text(column.as_string::<i32>()),
                FieldKind::MapValues => Source::Map(column.as_map()),
            };
            (field, source)
        })
        .collect();
    let mut joined = String::new();
    for row in 0..batch.num_rows() {
        let mut doc = TantivyDocument::default();
        doc.add_u64(row_field, row as u64);
        for (field, source) in &sources {
            match source {
                Source::Text(values) => {
                    if values.is_valid(row) {
                        doc.add_text(*field, values.value(row));
                    }
                }
                Source::Map(map) => {
                    // One text of all the row's values: the field has no
                    // positions, so this matches exactly what one value per
                    // call would, with one token stream instead of one per value.
                    let values = map.values().as_string::<i32>();
                    let offsets = map.value_offsets();
                    joined.clear();
                    for i in offsets[row] as usize..offsets[row + 1] as usize {
                        if values.is_valid(i) {
                            joined.push_str(values.value(i));
                            joined.push('\n');
                        }
                    }
                    if !joined.is_empty() {
                        doc.add_text(*field, &joined);
                    }
                }
            }
        }
        writer.add_document(doc)?;
    }
    writer.commit()?;
    let segments = index.searchable_segment_ids()?;
    if segments.len() > 1 {
        writer.merge(&segments).wait()?;
    }
    writer.wait_merging_threads()?;
    // Drop what the merge left behind, so the directory holds one segment.
    let writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
    writer.garbage_collect_files().wait()?;
    drop(writer);
    TraceFilter::of_batch(batch)?.write(&tmp)?;
    fs::rename(&tmp, dir).at(dir)?;
    if let Some(parent) = dir.parent() {
        crate::wal::sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::logs_to_batch;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use tantivy::collector::TopDocs;
    use tantivy::query::QueryParser;

    fn search_rows(dir: &Path, field: &str, query: &str) -> Vec<u64> {
        let index = Index::open_in_dir(dir).unwrap();
        let searcher = index.reader().unwrap().searcher();
        let field = index.schema().get_field(field).unwrap();
        let query = QueryParser::for_index(&index, vec![field])
            .parse_query(query)
            .unwrap();
        let hits = searcher
            .search(&query, &TopDocs::with_limit(10).order_by_score())
            .unwrap();
        let mut rows: Vec<u64> = hits
            .iter()
            .map(|(_, address)| {
                searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .u64(ROW_FIELD)
                    .unwrap()
                    .first(address.doc_id)
                    .unwrap()
            })
            .collect();
        rows.sort_unstable();
        rows
    }

    #[test]
    fn attribute_values_are_searchable_each_on_its_own() {
        use opentelemetry_proto::tonic::common::v1::KeyValue;
        let attribute = |key: &str, value: &str| KeyValue {
            key: key.into(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
            ..Default::default()
        };
        let records = vec![
            vec![
                attribute("customer.tier", "gold"),
                attribute("region", "eu-west"),
            ],
            vec![
                attribute("customer.tier", "silver"),
                attribute("region", "gold-coast"),
            ],
            vec![attribute("customer.tier", "bronze")],
        ];
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records
                        .into_iter()
                        .map(|attributes| LogRecord {
                            time_unix_nano: 1,
                            attributes,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = logs_to_batch(&request).batch;
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("seg");
        build_index(Signal::Logs, &batch, &index_dir).unwrap();
        assert_eq!(search_rows(&index_dir, "attributes", "gold"), vec![0, 1]);
        assert_eq!(
            search_rows(&index_dir, "attributes", "silver AND coast"),
            vec![1]
        );
        // Values of one row are separate: "west" and "silver" are in different rows.
        assert_eq!(
            search_rows(&index_dir, "attributes", "west AND silver"),
            Vec::<u64>::new()
        );
        assert_eq!(search_rows(&index_dir, "attributes", "bronze"), vec![2]);
    }

    #[test]
    fn a_search_hit_leads_to_its_row() {
        let bodies = [
            "connection reset by peer",
            "upstream timeout from conductor",
            "ok",
        ];
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: bodies
                        .iter()
                        .map(|b| LogRecord {
                            time_unix_nano: 1,
                            body: Some(AnyValue {
                                value: Some(Value::StringValue(b.to_string())),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let batch = logs_to_batch(&request).batch;
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("seg");
        build_index(Signal::Logs, &batch, &index_dir).unwrap();
        let index = Index::open_in_dir(&index_dir).unwrap();
        assert_eq!(index.searchable_segment_ids().unwrap().len(), 1);
        assert_eq!(
            search_rows(&index_dir, "body", "timeout AND conductor"),
            vec![1]
        );
    }
}
