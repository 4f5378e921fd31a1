//! The full-text index: one tantivy index per Parquet segment.
//!
//! Each document is one distinct value of one indexed column in its segment
//! (a span name, a log body, an attribute value) and carries, in the
//! multi-valued fast field `row`, every row of the segment that holds that
//! value, so a search hit leads straight to its Parquet rows. Values repeat
//! heavily within a segment (span names, `http.route`, `customer.tier`), and
//! indexing each once instead of once per row is most of what makes the index
//! cheap to build. The index of segment `X` lives in `index/X/` and is created
//! and deleted with `segments/X.parquet`. Exact lookups are left to the catalog
//! (service, time), the segment's trace-id filter written beside the index
//! ([`crate::trace_filter`]) and Parquet statistics and bloom filters.
//!
//! Indexes written before values were deduplicated have one document per row
//! (all of a row's attribute values in one text) and no commit payload; see
//! [`documents_are_values`].

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use tantivy::indexer::UserOperation;
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
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
    /// which values hold a term: attribute values are short, and positions and
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

/// The name of the fast field holding the rows of a document's value.
pub const ROW_FIELD: &str = "row";

/// The commit payload of an index whose documents are distinct values.
const VALUES_PAYLOAD: &str = "weft:documents=values";

/// Whether `index` has one document per distinct value (written since values
/// were deduplicated) rather than one per row. The difference matters only to
/// a query that negates: on a per-row index, `NOT x` on attributes misses a
/// row holding a value with `x` and another without, which per value matches.
pub fn documents_are_values(index: &Index) -> Result<bool> {
    Ok(index.load_metas()?.payload.as_deref() == Some(VALUES_PAYLOAD))
}

/// The tantivy schema of a table's index. Field norms are left out: searches
/// select rows and never rank them.
pub fn index_schema(signal: Signal) -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field(ROW_FIELD, FAST);
    for (name, kind) in indexed_columns(signal) {
        let record = match kind {
            FieldKind::Text => IndexRecordOption::WithFreqsAndPositions,
            FieldKind::MapValues => IndexRecordOption::Basic,
        };
        let options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer("default")
                .set_index_option(record)
                .set_fieldnorms(false),
        );
        builder.add_text_field(name, options);
    }
    builder.build()
}

/// The distinct non-empty values of one column, in the order they first
/// appear, each with the rows that hold it (ascending, each row once).
struct RowsByValue<'a> {
    values: Vec<&'a str>,
    /// `rows[offsets[i]..offsets[i + 1]]` hold `values[i]`.
    offsets: Vec<usize>,
    rows: Vec<u32>,
}

impl<'a> RowsByValue<'a> {
    fn of_column(column: &'a dyn Array) -> Self {
        // One pass numbers the values and notes each (value, row) pair; a
        // counting sort then lays the rows out value by value, with no
        // allocation per value.
        let mut ids: HashMap<&str, u32, foldhash::fast::RandomState> = HashMap::default();
        let mut values: Vec<&str> = Vec::new();
        let mut last_row: Vec<u32> = Vec::new();
        let mut pairs: Vec<(u32, u32)> = Vec::new();
        let mut note = |value: &'a str, row: u32| {
            if value.is_empty() {
                return;
            }
            let next = values.len() as u32;
            let id = *ids.entry(value).or_insert(next);
            if id == next {
                values.push(value);
                last_row.push(row);
            } else if last_row[id as usize] == row {
                // A map may hold one value under several keys; its row counts once.
                return;
            } else {
                last_row[id as usize] = row;
            }
            pairs.push((id, row));
        };
        match column.as_map_opt() {
            Some(map) => {
                let map_values = map.values().as_string::<i32>();
                let offsets = map.value_offsets();
                for row in 0..map.len() {
                    for i in offsets[row] as usize..offsets[row + 1] as usize {
                        if map_values.is_valid(i) {
                            note(map_values.value(i), row as u32);
                        }
                    }
                }
            }
            None => {
                let text: &StringArray = column.as_string::<i32>();
                for row in 0..text.len() {
                    if text.is_valid(row) {
                        note(text.value(row), row as u32);
                    }
                }
            }
        }
        let mut offsets = vec![0usize; values.len() + 1];
        for &(id, _) in &pairs {
            offsets[id as usize + 1] += 1;
        }
        for i in 1..offsets.len() {
            offsets[i] += offsets[i - 1];
        }
        let mut next = offsets.clone();
        let mut rows = vec![0u32; pairs.len()];
        for (id, row) in pairs {
            rows[next[id as usize]] = row;
            next[id as usize] += 1;
        }
        RowsByValue {
            values,
            offsets,
            rows,
        }
    }

    fn iter(&self) -> impl Iterator<Item = (&'a str, &[u32])> + '_ {
        self.values
            .iter()
            .enumerate()
            .map(|(i, value)| (*value, &self.rows[self.offsets[i]..self.offsets[i + 1]]))
    }
}

/// Documents handed to tantivy's indexing thread at once: one channel message
/// per batch instead of per document.
const DOCUMENTS_PER_BATCH: usize = 4096;

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
    for (name, _) in indexed_columns(signal) {
        let field: Field = schema
            .get_field(name)
            .expect("field is in the index schema");
        let column = batch
            .column_by_name(name)
            .expect("column is in the table schema");
        let found = RowsByValue::of_column(column);
        let mut documents = Vec::with_capacity(DOCUMENTS_PER_BATCH);
        for (value, rows) in found.iter() {
            let mut doc = TantivyDocument::default();
            doc.add_text(field, value);
            for &row in rows {
                doc.add_u64(row_field, u64::from(row));
            }
            documents.push(UserOperation::Add(doc));
            if documents.len() == DOCUMENTS_PER_BATCH {
                writer.run(std::mem::take(&mut documents))?;
            }
        }
        writer.run(documents)?;
    }
    let mut commit = writer.prepare_commit()?;
    commit.set_payload(VALUES_PAYLOAD);
    commit.commit()?;
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
            .search(&query, &TopDocs::with_limit(100).order_by_score())
            .unwrap();
        let mut rows: Vec<u64> = hits
            .iter()
            .flat_map(|(_, address)| {
                let rows = searcher
                    .segment_reader(address.segment_ord)
                    .fast_fields()
                    .u64(ROW_FIELD)
                    .unwrap();
                rows.values_for_doc(address.doc_id).collect::<Vec<_>>()
            })
            .collect();
        rows.sort_unstable();
        rows.dedup();
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
        let batch = logs_to_batch(&request).unwrap().batch;
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("seg");
        build_index(Signal::Logs, &batch, &index_dir).unwrap();
        assert_eq!(search_rows(&index_dir, "attributes", "gold"), vec![0, 1]);
        assert_eq!(
            search_rows(&index_dir, "attributes", "gold AND coast"),
            vec![1]
        );
        // A query matches within one value, as `text_match` does.
        assert_eq!(
            search_rows(&index_dir, "attributes", "silver AND coast"),
            Vec::<u64>::new()
        );
        // Values of one row are separate: "west" and "silver" are in different rows.
        assert_eq!(
            search_rows(&index_dir, "attributes", "west AND silver"),
            Vec::<u64>::new()
        );
        assert_eq!(search_rows(&index_dir, "attributes", "bronze"), vec![2]);
    }

    #[test]
    fn an_index_without_the_payload_is_one_of_rows() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::create_in_dir(dir.path(), index_schema(Signal::Spans)).unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        writer.commit().unwrap();
        assert!(!documents_are_values(&index).unwrap());
    }

    #[test]
    fn each_distinct_value_lists_its_rows_once() {
        use arrow::array::{MapBuilder, StringBuilder};
        let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for row in [
            &[("a", "gold"), ("b", "gold"), ("c", "")][..],
            &[],
            &[("a", "silver"), ("b", "gold")],
        ] {
            for (key, value) in row {
                builder.keys().append_value(key);
                builder.values().append_value(value);
            }
            builder.append(true).unwrap();
        }
        let map = builder.finish();
        let found = RowsByValue::of_column(&map);
        let found: Vec<(&str, Vec<u32>)> = found.iter().map(|(v, r)| (v, r.to_vec())).collect();
        assert_eq!(found, vec![("gold", vec![0, 2]), ("silver", vec![2])]);

        let names = StringArray::from(vec![Some("GET"), None, Some("POST"), Some("GET")]);
        let found = RowsByValue::of_column(&names);
        let found: Vec<(&str, Vec<u32>)> = found.iter().map(|(v, r)| (v, r.to_vec())).collect();
        assert_eq!(found, vec![("GET", vec![0, 3]), ("POST", vec![2])]);
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
        let batch = logs_to_batch(&request).unwrap().batch;
        let dir = tempfile::tempdir().unwrap();
        let index_dir = dir.path().join("seg");
        build_index(Signal::Logs, &batch, &index_dir).unwrap();
        let index = Index::open_in_dir(&index_dir).unwrap();
        assert_eq!(index.searchable_segment_ids().unwrap().len(), 1);
        assert!(documents_are_values(&index).unwrap());
        assert_eq!(
            search_rows(&index_dir, "body", "timeout AND conductor"),
            vec![1]
        );
    }
}
