//! The full-text index: one tantivy index per Parquet segment.
//!
//! Each document is one distinct value of one indexed column in its segment
//! (a span name, a log body, an attribute value), so a search hit leads
//! straight to the Parquet rows that hold that value. Values repeat heavily
//! within a segment (span names, `http.route`, `customer.tier`), and indexing
//! each once instead of once per row is most of what makes the index cheap to
//! build. The rows of every value are in a file of their own beside tantivy's
//! ([`ROWS_FILE`]: per value, its rows as varint deltas or as a bitmap),
//! and a document holds only where its value's rows start, in the fast field
//! [`ROWS_AT_FIELD`]: kept in a multi-valued fast field, the rows cost tantivy
//! more to take in and lay out than the text itself. The index of segment `X`
//! lives in `index/X/` and is created and deleted with `segments/X.parquet`.
//! Exact lookups are left to the catalog (service, time), the segment's
//! trace-id filter written beside the index ([`crate::trace_filter`]) and
//! Parquet statistics and bloom filters.
//!
//! Indexes of earlier versions are still read ([`DocumentRows`]): until
//! 2026-11-28 each document held its rows in the fast field `row`, and before
//! values were deduplicated there was one document per row (all of a row's
//! attribute values in one text) and no commit payload.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch, StringArray};
use prost::encoding::{decode_varint, encode_varint};
use tantivy::columnar::Column;
use tantivy::directory::{Directory, MmapDirectory, OwnedBytes};
use tantivy::indexer::UserOperation;
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, FAST};
use tantivy::store::{Compressor, ZstdCompressor};
use tantivy::{DocId, Index, IndexSettings, IndexWriter, SegmentReader, TantivyDocument};

use crate::error::{IoContext, Result, StoreError};
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

/// The fast field of a document: where its value's rows start in [`ROWS_FILE`].
pub const ROWS_AT_FIELD: &str = "rows_at";

/// The file in an index directory holding the rows of each value.
pub const ROWS_FILE: &str = "value_rows";

/// The first bytes of [`ROWS_FILE`]; offsets in `rows_at` count from the
/// file's start.
const ROWS_FILE_MAGIC: &[u8; 8] = b"weftrow1";

/// The fast field holding the rows of a document in earlier indexes.
const ROW_FIELD: &str = "row";

/// The commit payload of an index whose documents are distinct values and
/// whose rows are in [`ROWS_FILE`].
const ROWS_IN_FILE_PAYLOAD: &str = "weft:documents=values;rows=value_rows";

/// The commit payload of an earlier index whose documents are distinct values,
/// each holding its rows in the fast field `row`.
const ROWS_IN_FIELD_PAYLOAD: &str = "weft:documents=values";

/// The rows of a segment that each document of its index stands for.
#[derive(Clone)]
pub struct DocumentRows {
    layout: Layout,
}

#[derive(Clone)]
enum Layout {
    /// One document per row, its row in the fast field `row`.
    DocumentPerRow,
    /// One document per value, its rows in the fast field `row`.
    RowsInField,
    /// One document per value, its rows in [`ROWS_FILE`] (memory-mapped).
    RowsInFile(OwnedBytes),
}

impl DocumentRows {
    /// How the documents of `index`, which lives in `dir`, lead to rows.
    pub fn open(index: &Index, dir: &Path) -> Result<Self> {
        let layout = match index.load_metas()?.payload.as_deref() {
            Some(ROWS_IN_FILE_PAYLOAD) => {
                let path = dir.join(ROWS_FILE);
                let bytes = MmapDirectory::open(dir)
                    .map_err(tantivy::TantivyError::from)?
                    .open_read(Path::new(ROWS_FILE))
                    .map_err(tantivy::TantivyError::from)?
                    .read_bytes()
                    .at(&path)?;
                if !bytes.as_slice().starts_with(ROWS_FILE_MAGIC) {
                    return Err(StoreError::CorruptIndex {
                        path,
                        reason: "it does not start as a rows file".into(),
                    });
                }
                Layout::RowsInFile(bytes)
            }
            Some(ROWS_IN_FIELD_PAYLOAD) => Layout::RowsInField,
            _ => Layout::DocumentPerRow,
        };
        Ok(Self { layout })
    }

    /// Whether each document is one distinct value rather than one row. The
    /// difference matters only to a query that negates: on a per-row index,
    /// `NOT x` on attributes misses a row holding a value with `x` and another
    /// without, which per value matches.
    pub fn documents_are_values(&self) -> bool {
        !matches!(self.layout, Layout::DocumentPerRow)
    }

    /// The lookup for one tantivy segment of the index.
    pub fn for_segment(&self, reader: &SegmentReader) -> tantivy::Result<SegmentRows> {
        Ok(match &self.layout {
            Layout::DocumentPerRow | Layout::RowsInField => {
                SegmentRows::InField(reader.fast_fields().u64(ROW_FIELD)?)
            }
            Layout::RowsInFile(bytes) => SegmentRows::InFile {
                rows_at: reader.fast_fields().u64(ROWS_AT_FIELD)?,
                bytes: bytes.clone(),
            },
        })
    }
}

/// The rows of the documents of one tantivy segment of an index.
pub enum SegmentRows {
    InField(Column<u64>),
    InFile {
        rows_at: Column<u64>,
        bytes: OwnedBytes,
    },
}

impl SegmentRows {
    /// Appends the rows `doc` stands for to `rows`, ascending. A rows file
    /// that does not hold what its offsets promise (a damaged file) yields
    /// what could be read of it rather than a panic.
    pub fn append_rows(&self, doc: DocId, rows: &mut Vec<u64>) {
        match self {
            SegmentRows::InField(column) => rows.extend(column.values_for_doc(doc)),
            SegmentRows::InFile { rows_at, bytes } => {
                let encoded = rows_at
                    .first(doc)
                    .and_then(|at| usize::try_from(at).ok())
                    .and_then(|at| bytes.as_slice().get(at..));
                if let Some(encoded) = encoded {
                    decode_rows(encoded, rows);
                }
            }
        }
    }
}

/// Appends `rows` (ascending, at least one) to a rows file, in whichever of
/// two forms is smaller: a value in a few rows as the distance of each from
/// the one before (the first from 0), a value in many (`http.request.method`,
/// a status) as a bitmap from its first row to its last. Both start with a
/// varint holding the number of rows and, in its lowest bit, the form.
fn encode_rows(rows: &[u32], file: &mut Vec<u8>) {
    let start = file.len();
    encode_varint((rows.len() as u64) << 1, file);
    let mut previous = 0;
    for &row in rows {
        encode_varint(u64::from(row - previous), file);
        previous = row;
    }
    let (first, last) = (rows[0], rows[rows.len() - 1]);
    let bitmap_bytes = ((last - first) as usize + 8) / 8;
    // Two or three bytes say where the bitmap starts; a bitmap is only ever
    // chosen when it saves more than that.
    if bitmap_bytes + 8 < file.len() - start {
        file.truncate(start);
        encode_varint(((rows.len() as u64) << 1) | 1, file);
        encode_varint(u64::from(first), file);
        let bits = file.len();
        file.resize(bits + bitmap_bytes, 0);
        for &row in rows {
            let bit = (row - first) as usize;
            file[bits + bit / 8] |= 1 << (bit % 8);
        }
    }
}

/// Appends the rows encoded at the start of `encoded` (by [`encode_rows`]).
fn decode_rows(mut encoded: &[u8], rows: &mut Vec<u64>) -> Option<()> {
    let header = decode_varint(&mut encoded).ok()?;
    let count = header >> 1;
    if header & 1 == 0 {
        let mut row = 0u64;
        for _ in 0..count {
            row += decode_varint(&mut encoded).ok()?;
            rows.push(row);
        }
    } else {
        let first = decode_varint(&mut encoded).ok()?;
        let mut left = count;
        for (i, &byte) in encoded.iter().enumerate() {
            let mut bits = byte;
            while bits != 0 && left > 0 {
                rows.push(first + (i * 8) as u64 + u64::from(bits.trailing_zeros()));
                bits &= bits - 1;
                left -= 1;
            }
            if left == 0 {
                break;
            }
        }
    }
    Some(())
}

/// The tantivy schema of a table's index. Field norms are left out: searches
/// select rows and never rank them.
pub fn index_schema(signal: Signal) -> Schema {
    let mut builder = Schema::builder();
    builder.add_u64_field(ROWS_AT_FIELD, FAST);
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

/// How many of a row's map entries [`RowsByValue`] remembers the last value of.
const RECENT_POSITIONS: usize = 64;

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
        // The value last seen at each position of a row (a text column has
        // one; a map, one per entry up to `RECENT_POSITIONS`) and its number.
        // Rows of one shape side by side often repeat a value where the row
        // before had it (a method, a status, a tier), and comparing it with
        // that value costs less than hashing it.
        let mut recent: Vec<(&'a str, u32)> = Vec::new();
        let mut note = |value: &'a str, row: u32, position: usize| {
            if value.is_empty() {
                return;
            }
            let id = match recent.get(position) {
                Some(&(seen, id)) if seen == value => id,
                _ => {
                    let next = values.len() as u32;
                    let id = *ids.entry(value).or_insert(next);
                    if id == next {
                        values.push(value);
                        last_row.push(u32::MAX);
                    }
                    if position < RECENT_POSITIONS {
                        if position >= recent.len() {
                            recent.resize(position + 1, ("", 0));
                        }
                        recent[position] = (value, id);
                    }
                    id
                }
            };
            // A map may hold one value under several keys; its row counts once.
            if last_row[id as usize] != row {
                last_row[id as usize] = row;
                pairs.push((id, row));
            }
        };
        match column.as_map_opt() {
            Some(map) => {
                let map_values = map.values().as_string::<i32>();
                let offsets = map.value_offsets();
                for row in 0..map.len() {
                    let entries = offsets[row] as usize..offsets[row + 1] as usize;
                    let first = entries.start;
                    for i in entries {
                        if map_values.is_valid(i) {
                            note(map_values.value(i), row as u32, i - first);
                        }
                    }
                }
            }
            None => {
                let text: &StringArray = column.as_string::<i32>();
                for row in 0..text.len() {
                    if text.is_valid(row) {
                        note(text.value(row), row as u32, 0);
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
    // Documents store nothing, but tantivy's document store still keeps a
    // 4-byte position per document, which lz4 leaves at ~3 bytes per
    // distinct value and zstd at a fraction of one.
    let settings = IndexSettings {
        docstore_compression: Compressor::Zstd(ZstdCompressor {
            compression_level: Some(1),
        }),
        ..IndexSettings::default()
    };
    let index = Index::builder()
        .schema(schema.clone())
        .settings(settings)
        .create_in_dir(&tmp)?;
    let mut writer: IndexWriter = index.writer_with_num_threads(1, WRITER_MEMORY_BYTES)?;
    let rows_at_field = schema.get_field(ROWS_AT_FIELD)?;
    let mut rows_file = ROWS_FILE_MAGIC.to_vec();
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
            // A default document reserves 1 KiB; the text and one number
            // need a few bytes more than the text (tantivy's type tags and
            // lengths), and the allocation is made once per value.
            let mut doc = TantivyDocument::with_capacity(value.len() + 32);
            doc.add_text(field, value);
            doc.add_u64(rows_at_field, rows_file.len() as u64);
            encode_rows(rows, &mut rows_file);
            documents.push(UserOperation::Add(doc));
            if documents.len() == DOCUMENTS_PER_BATCH {
                writer.run(std::mem::take(&mut documents))?;
            }
        }
        writer.run(documents)?;
    }
    let mut commit = writer.prepare_commit()?;
    commit.set_payload(ROWS_IN_FILE_PAYLOAD);
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
    crate::catalog::write_synced(&tmp.join(ROWS_FILE), &rows_file)?;
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
    use tantivy::collector::DocSetCollector;
    use tantivy::query::QueryParser;

    fn search_rows(dir: &Path, field: &str, query: &str) -> Vec<u64> {
        let index = Index::open_in_dir(dir).unwrap();
        let document_rows = DocumentRows::open(&index, dir).unwrap();
        let searcher = index.reader().unwrap().searcher();
        let field = index.schema().get_field(field).unwrap();
        let query = QueryParser::for_index(&index, vec![field])
            .parse_query(query)
            .unwrap();
        let hits = searcher.search(&query, &DocSetCollector).unwrap();
        let mut rows = Vec::new();
        for address in hits {
            document_rows
                .for_segment(searcher.segment_reader(address.segment_ord))
                .unwrap()
                .append_rows(address.doc_id, &mut rows);
        }
        rows.sort_unstable();
        rows.dedup();
        rows
    }

    /// Builds the index of `records` (as one request's log records, each with
    /// time 1) in a new directory; returns the directory and the index in it.
    fn index_of_logs(
        records: impl IntoIterator<Item = LogRecord>,
    ) -> (tempfile::TempDir, std::path::PathBuf) {
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: records
                        .into_iter()
                        .map(|record| LogRecord {
                            time_unix_nano: 1,
                            ..record
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
        (dir, index_dir)
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
        let (_dir, index_dir) = index_of_logs(records.into_iter().map(|attributes| LogRecord {
            attributes,
            ..Default::default()
        }));
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
        assert!(!DocumentRows::open(&index, dir.path())
            .unwrap()
            .documents_are_values());
    }

    /// Writes an index as earlier versions did: rows in the fast field `row`.
    fn write_index_with_row_field(dir: &Path, payload: Option<&str>, docs: &[(&str, &[u64])]) {
        let mut builder = Schema::builder();
        let row = builder.add_u64_field(ROW_FIELD, FAST);
        let body = builder.add_text_field("body", tantivy::schema::TEXT);
        let index = Index::create_in_dir(dir, builder.build()).unwrap();
        let mut writer: IndexWriter = index.writer_with_num_threads(1, 15_000_000).unwrap();
        for (text, rows) in docs {
            let mut doc = TantivyDocument::default();
            doc.add_text(body, text);
            for &r in *rows {
                doc.add_u64(row, r);
            }
            writer.add_document(doc).unwrap();
        }
        let mut commit = writer.prepare_commit().unwrap();
        if let Some(payload) = payload {
            commit.set_payload(payload);
        }
        commit.commit().unwrap();
    }

    #[test]
    fn indexes_of_earlier_versions_still_lead_to_their_rows() {
        let per_value = tempfile::tempdir().unwrap();
        write_index_with_row_field(
            per_value.path(),
            Some(ROWS_IN_FIELD_PAYLOAD),
            &[("disk full", &[3, 9]), ("timeout", &[4])],
        );
        assert_eq!(search_rows(per_value.path(), "body", "full"), vec![3, 9]);
        let index = Index::open_in_dir(per_value.path()).unwrap();
        assert!(DocumentRows::open(&index, per_value.path())
            .unwrap()
            .documents_are_values());

        let per_row = tempfile::tempdir().unwrap();
        write_index_with_row_field(per_row.path(), None, &[("a", &[0]), ("b a", &[1])]);
        assert_eq!(search_rows(per_row.path(), "body", "a"), vec![0, 1]);
    }

    #[test]
    fn a_value_in_many_rows_leads_to_all_of_them() {
        // Counts and gaps above 127 take more than one varint byte.
        let mut needles: Vec<u64> = (0..600u64).map(|i| i * i / 7).collect();
        needles.dedup();
        let rows = *needles.last().unwrap() + 1;
        let body = |row: u64| {
            let text = if needles.binary_search(&row).is_ok() {
                "needle".to_string()
            } else {
                format!("hay {row}")
            };
            Some(AnyValue {
                value: Some(Value::StringValue(text)),
            })
        };
        let (_dir, index_dir) = index_of_logs((0..rows).map(|row| LogRecord {
            body: body(row),
            ..Default::default()
        }));
        assert_eq!(search_rows(&index_dir, "body", "needle"), needles);
        let hay: Vec<u64> = (0..rows)
            .filter(|row| needles.binary_search(row).is_err())
            .collect();
        assert_eq!(search_rows(&index_dir, "body", "hay"), hay);
    }

    proptest::proptest! {
        #[test]
        fn rows_read_back_as_written(
            values in proptest::collection::vec(
                proptest::collection::btree_set(0u32..5000, 1..400),
                1..6,
            ),
            dense_from in 0u32..4000,
        ) {
            // Half of the values also get a dense run, so both forms are used.
            let values: Vec<Vec<u32>> = values
                .into_iter()
                .enumerate()
                .map(|(i, rows)| {
                    let mut rows: Vec<u32> = rows.into_iter().collect();
                    if i % 2 == 0 {
                        rows.extend(dense_from..dense_from + 900);
                        rows.sort_unstable();
                        rows.dedup();
                    }
                    rows
                })
                .collect();
            let mut file = Vec::new();
            let mut starts = Vec::new();
            for rows in &values {
                starts.push(file.len());
                encode_rows(rows, &mut file);
            }
            for (rows, start) in values.iter().zip(starts) {
                let mut read = Vec::new();
                proptest::prop_assert!(decode_rows(&file[start..], &mut read).is_some());
                let written: Vec<u64> = rows.iter().map(|&r| u64::from(r)).collect();
                proptest::prop_assert_eq!(read, written);
            }
        }
    }

    #[test]
    fn a_value_in_most_rows_takes_a_bitmap() {
        let rows: Vec<u32> = (1000..9000).filter(|r| r % 3 != 0).collect();
        let mut file = Vec::new();
        encode_rows(&rows, &mut file);
        assert!(file.len() < 8000 / 8 + 8, "{} bytes", file.len());
        let mut read = Vec::new();
        decode_rows(&file, &mut read).unwrap();
        assert_eq!(read, rows.iter().map(|&r| u64::from(r)).collect::<Vec<_>>());
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

    proptest::proptest! {
        /// Rows of a few shapes over a small alphabet, so values repeat at
        /// the same positions, at others, and twice in one row: each distinct
        /// value, in the order it first appears, lists the rows holding it.
        #[test]
        fn rows_by_value_are_what_a_plain_scan_finds(
            rows in proptest::collection::vec(
                proptest::collection::vec(proptest::option::of(0_u8..6), 0..6),
                0..60,
            ),
        ) {
            use arrow::array::{MapBuilder, StringBuilder};
            let text = |v: u8| if v == 0 { String::new() } else { format!("v{v}") };
            let mut builder = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
            for row in &rows {
                for (key, value) in row.iter().enumerate() {
                    builder.keys().append_value(format!("k{key}"));
                    builder.values().append_option(value.map(text));
                }
                builder.append(true).unwrap();
            }
            let map = builder.finish();
            let mut expected: Vec<(String, Vec<u32>)> = Vec::new();
            for (row, entries) in rows.iter().enumerate() {
                for value in entries.iter().flatten().map(|v| text(*v)) {
                    if value.is_empty() {
                        continue;
                    }
                    match expected.iter_mut().find(|(seen, _)| *seen == value) {
                        Some((_, rows)) if rows.last() == Some(&(row as u32)) => {}
                        Some((_, rows)) => rows.push(row as u32),
                        None => expected.push((value, vec![row as u32])),
                    }
                }
            }
            let found = RowsByValue::of_column(&map);
            let found: Vec<(String, Vec<u32>)> =
                found.iter().map(|(v, r)| (v.to_string(), r.to_vec())).collect();
            proptest::prop_assert_eq!(found, expected);
        }
    }

    #[test]
    fn a_search_hit_leads_to_its_row() {
        let bodies = [
            "connection reset by peer",
            "upstream timeout from conductor",
            "ok",
        ];
        let (_dir, index_dir) = index_of_logs(bodies.iter().map(|b| LogRecord {
            body: Some(AnyValue {
                value: Some(Value::StringValue(b.to_string())),
            }),
            ..Default::default()
        }));
        let index = Index::open_in_dir(&index_dir).unwrap();
        assert_eq!(index.searchable_segment_ids().unwrap().len(), 1);
        assert!(DocumentRows::open(&index, &index_dir)
            .unwrap()
            .documents_are_values());
        assert_eq!(
            search_rows(&index_dir, "body", "timeout AND conductor"),
            vec![1]
        );
    }
}
