//! The `spans` and `logs` tables: DataFusion table providers over the store.
//!
//! A scan takes a [`TableSnapshot`] — the catalog's segments plus the
//! acknowledged batches not yet flushed, taken under one lock, so a flush
//! running beside the query neither hides nor doubles a row — and plans:
//!
//! ```text
//!            UnionExec
//!           /         \
//!  DataSourceExec    DataSourceExec
//!  (Parquet: the     (memory: the unflushed tail)
//!   segments left
//!   after pruning)
//! ```
//!
//! Filters are used four ways before a row is decoded: the catalog's time
//! range and service set of each segment prune whole segments (a
//! `PruningPredicate` over [`SegmentStatistics`]); `trace_id = …` or
//! `trace_id IN (…)` skips segments whose trace-id filter rules the ids out;
//! `text_match` on an
//! indexed column is answered by the segment's tantivy index, whose hits
//! become a Parquet row selection (segments without hits are skipped); and
//! the rest goes to the Parquet reader as a predicate (row-group and page
//! statistics, bloom filters on ids, late materialization). Every filter is
//! declared `Inexact`, so DataFusion still applies it exactly above the scan.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{ArrayRef, BooleanArray, StringArray, TimestampNanosecondArray, UInt64Array};
use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::{Column, DFSchema, Result as DfResult, ScalarValue};
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetRowSelection,
};
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::TableType;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_optimizer::pruning::PruningPredicateBuilder;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::ExecutionPlan;
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::RowSelection;
use tantivy::collector::{Collector, SegmentCollector};
use tantivy::{DocId, Index, IndexReader, ReloadPolicy, Score, SegmentOrdinal, SegmentReader};
use weft_store::catalog::SegmentEntry;
use weft_store::object_storage::SegmentPart;
use weft_store::trace_filter::TraceFilter;
use weft_store::{index, segment, Signal, Store, StoreError, StoreReader, TableSnapshot};

use crate::text_match::TextMatchFilter;

/// Where a table's snapshots come from: the store this process writes, or a
/// data directory another process writes.
pub trait SnapshotSource: Send + Sync + 'static {
    fn snapshot(&self, signal: Signal) -> Result<TableSnapshot, StoreError>;
}

impl SnapshotSource for Store {
    fn snapshot(&self, signal: Signal) -> Result<TableSnapshot, StoreError> {
        Ok(self.table(signal).snapshot())
    }
}

impl SnapshotSource for StoreReader {
    fn snapshot(&self, signal: Signal) -> Result<TableSnapshot, StoreError> {
        StoreReader::snapshot(self, signal)
    }
}

/// What queries keep open of each segment between them: its full-text index
/// reader and its trace-id filter. Segments never change once written, so
/// both stay valid until the segment is deleted.
#[derive(Default)]
pub(crate) struct SegmentCache {
    indexes: Mutex<HashMap<PathBuf, SegmentIndex>>,
    trace_filters: Mutex<HashMap<PathBuf, Arc<Option<TraceFilter>>>>,
}

/// An open full-text index and how its documents map to rows.
#[derive(Clone)]
struct SegmentIndex {
    reader: IndexReader,
    rows: index::DocumentRows,
}

/// More entries than this and a cache starts over; an index reader holds a
/// few file handles and memory maps, a trace filter ~1.2 bytes per trace.
const MAX_CACHED_SEGMENTS: usize = 4096;

fn cached<T: Clone>(
    map: &Mutex<HashMap<PathBuf, T>>,
    key: &Path,
    load: impl FnOnce() -> Result<T, String>,
) -> Result<T, String> {
    if let Some(value) = map.lock().get(key) {
        return Ok(value.clone());
    }
    let value = load()?;
    let mut map = map.lock();
    if map.len() >= MAX_CACHED_SEGMENTS {
        map.clear();
    }
    map.insert(key.to_path_buf(), value.clone());
    Ok(value)
}

impl SegmentCache {
    fn index(&self, dir: &Path) -> Result<SegmentIndex, String> {
        cached(&self.indexes, dir, || {
            let index = Index::open_in_dir(dir).map_err(|e| e.to_string())?;
            let rows = index::DocumentRows::open(&index, dir).map_err(|e| e.to_string())?;
            let reader = index
                .reader_builder()
                .reload_policy(ReloadPolicy::Manual)
                .try_into()
                .map_err(|e: tantivy::TantivyError| e.to_string())?;
            Ok(SegmentIndex { reader, rows })
        })
    }

    fn trace_filter(&self, index_dir: &Path) -> Result<Arc<Option<TraceFilter>>, String> {
        cached(&self.trace_filters, index_dir, || {
            TraceFilter::read(index_dir)
                .map(Arc::new)
                .map_err(|e| e.to_string())
        })
    }
}

/// The trace ids a filter pins the scan to: `trace_id = '…'`,
/// `trace_id IN ('…', …)`, or equalities joined by `OR` (which is what
/// DataFusion makes of a short `IN` list).
fn wanted_trace_ids(filters: &[Expr]) -> Option<Vec<String>> {
    filters.iter().find_map(trace_ids_of)
}

fn trace_ids_of(expr: &Expr) -> Option<Vec<String>> {
    use datafusion::logical_expr::{BinaryExpr, Operator};
    let literal = |expr: &Expr| match expr {
        Expr::Literal(value, _) => value.try_as_str().flatten().map(str::to_string),
        _ => None,
    };
    let is_trace_id = |expr: &Expr| matches!(expr, Expr::Column(c) if c.name == "trace_id");
    match expr {
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Eq,
            right,
        }) => {
            if is_trace_id(left) {
                literal(right).map(|id| vec![id])
            } else if is_trace_id(right) {
                literal(left).map(|id| vec![id])
            } else {
                None
            }
        }
        Expr::BinaryExpr(BinaryExpr {
            left,
            op: Operator::Or,
            right,
        }) => {
            let mut ids = trace_ids_of(left)?;
            ids.extend(trace_ids_of(right)?);
            Some(ids)
        }
        Expr::InList(list) if !list.negated && is_trace_id(&list.expr) => {
            list.list.iter().map(literal).collect()
        }
        _ => None,
    }
}

/// One table of the store, as DataFusion sees it. Cheap to clone.
#[derive(Clone)]
pub struct StoreTable {
    signal: Signal,
    schema: SchemaRef,
    source: Arc<dyn SnapshotSource>,
    cache: Arc<SegmentCache>,
    /// Whose table this is in which object store, for a plan sent to a
    /// Ballista cluster ([`crate::distributed`]).
    origin: Option<TableOrigin>,
    /// Set where a Ballista scheduler plans: scans name the segments for
    /// the executors to read instead of reading them here.
    cluster_files: Option<Arc<StoreReader>>,
}

/// Which tenant's table, kept in which object store: what a Ballista
/// scheduler needs to open the same table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableOrigin {
    pub tenant: weft_store::TenantId,
    /// The `--storage` URL.
    pub storage: String,
}

impl std::fmt::Debug for StoreTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreTable")
            .field("table", &self.signal.table_name())
            .finish()
    }
}

impl StoreTable {
    pub(crate) fn new(
        signal: Signal,
        source: Arc<dyn SnapshotSource>,
        cache: Arc<SegmentCache>,
    ) -> Self {
        Self {
            signal,
            schema: signal.schema(),
            source,
            cache,
            origin: None,
            cluster_files: None,
        }
    }

    /// The same table, known to be `origin`'s, so it can be sent to a
    /// Ballista cluster.
    pub(crate) fn with_origin(mut self, origin: TableOrigin) -> Self {
        self.origin = Some(origin);
        self
    }

    /// The table as a Ballista scheduler plans it: from `reader`'s
    /// snapshots, with scans that leave reading the segments to executors.
    pub(crate) fn for_cluster(
        signal: Signal,
        origin: TableOrigin,
        reader: Arc<StoreReader>,
        cache: Arc<SegmentCache>,
    ) -> Self {
        Self {
            cluster_files: Some(reader.clone()),
            ..Self::new(signal, reader, cache).with_origin(origin)
        }
    }

    pub(crate) fn signal(&self) -> Signal {
        self.signal
    }

    pub(crate) fn origin(&self) -> Option<&TableOrigin> {
        self.origin.as_ref()
    }

    /// The segments the filters leave, each with the rows the full-text
    /// index selects (`None`: every row).
    fn select_segments(
        &self,
        snapshot: &TableSnapshot,
        predicate: Option<&Arc<dyn PhysicalExpr>>,
        trace_ids: Option<&[String]>,
        text_filters: &[TextMatchFilter],
    ) -> DfResult<Vec<(SegmentEntry, Option<RowSelection>)>> {
        let external = |what: &str, dir: &Path, e: String| {
            datafusion::error::DataFusionError::External(
                format!("{what} {}: {e}", dir.display()).into(),
            )
        };
        let pruning = predicate.and_then(|predicate| {
            PruningPredicateBuilder::new()
                .with_file_schema(self.schema.clone())
                .build(predicate.clone())
        });
        let keep = match pruning {
            Some(pruning) => pruning.prune(&SegmentStatistics {
                signal: self.signal,
                segments: &snapshot.segments,
            })?,
            None => vec![true; snapshot.segments.len()],
        };
        let part = if !text_filters.is_empty() {
            Some(SegmentPart::Index)
        } else {
            trace_ids.map(|_| SegmentPart::TraceFilter)
        };
        if let Some(part) = part {
            let kept: Vec<&str> = (snapshot.segments.iter().zip(&keep))
                .filter(|(_, keep)| **keep)
                .map(|(entry, _)| entry.id.as_str())
                .collect();
            snapshot
                .fetch(&kept, part)
                .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
        }
        let mut selected = Vec::new();
        for (entry, keep) in snapshot.segments.iter().zip(keep) {
            if !keep {
                continue;
            }
            if let Some(trace_ids) = trace_ids {
                let dir = snapshot.index_dir(&entry.id);
                let filter = self
                    .cache
                    .trace_filter(&dir)
                    .map_err(|e| external("trace-id filter", &dir, e))?;
                if let Some(filter) = filter.as_ref() {
                    if !trace_ids.iter().any(|id| filter.may_contain(id)) {
                        continue;
                    }
                }
            }
            let rows = if text_filters.is_empty() {
                None
            } else {
                let dir = snapshot.index_dir(&entry.id);
                let hits = self
                    .search_index(&dir, text_filters)
                    .map_err(|e| external("full-text index", &dir, e))?;
                match hits {
                    Some(hits) if hits.is_empty() => continue,
                    Some(hits) => Some(row_selection(&hits, entry.rows as usize)),
                    None => None,
                }
            };
            selected.push((entry.clone(), rows));
        }
        Ok(selected)
    }

    /// The rows of one segment matching every indexed `text_match` filter, or
    /// `None` if its index cannot narrow them.
    ///
    /// Each filter is searched on its own and the rows intersected: a document
    /// of the index is one value of one column, so two filters on different
    /// columns never match the same document.
    fn search_index(
        &self,
        dir: &Path,
        filters: &[TextMatchFilter],
    ) -> Result<Option<Vec<u64>>, String> {
        let index = self.cache.index(dir)?;
        let searcher = index.reader.searcher();
        let schema = searcher.schema();
        let mut selected: Option<Vec<u64>> = None;
        for filter in filters {
            let Some(positions) = index::indexed_with_positions(self.signal, &filter.column) else {
                continue;
            };
            if !index.rows.documents_are_values() && !positions && filter.query.negates() {
                // An older index joined each row's attribute values into one
                // document; a negation there is not a superset of the answer.
                continue;
            }
            let Ok(field) = schema.get_field(&filter.column) else {
                continue;
            };
            let mut rows = searcher
                .search(
                    &*filter.query.to_tantivy(field, positions),
                    &RowCollector(&index.rows),
                )
                .map_err(|e| e.to_string())?;
            rows.sort_unstable();
            rows.dedup();
            let rows = match selected {
                None => rows,
                Some(before) => intersect_sorted(&before, &rows),
            };
            if rows.is_empty() {
                return Ok(Some(rows));
            }
            selected = Some(rows);
        }
        Ok(selected)
    }
}

/// The values in both of two sorted, deduplicated lists.
fn intersect_sorted(a: &[u64], b: &[u64]) -> Vec<u64> {
    let mut both = Vec::with_capacity(a.len().min(b.len()));
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    both
}

/// A Parquet row selection of exactly `rows` (sorted) out of `total`.
fn row_selection(rows: &[u64], total: usize) -> RowSelection {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for &row in rows {
        let row = row as usize;
        if row >= total {
            break;
        }
        match ranges.last_mut() {
            Some(last) if last.end == row => last.end = row + 1,
            _ => ranges.push(row..row + 1),
        }
    }
    RowSelection::from_consecutive_ranges(ranges.into_iter(), total)
}

#[async_trait]
impl TableProvider for StoreTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut text_filters = Vec::new();
        let mut other_filters = Vec::new();
        for filter in filters {
            match TextMatchFilter::from_expr(filter) {
                Some(parsed) => text_filters.push(
                    parsed.map_err(|e| datafusion::error::DataFusionError::Plan(e.to_string()))?,
                ),
                None => other_filters.push(filter.clone()),
            }
        }
        let df_schema = DFSchema::try_from(self.schema.clone())?;
        let predicate = conjunction(other_filters)
            .map(|expr| state.create_physical_expr(expr, &df_schema))
            .transpose()?;
        text_filters.retain(|f| index::indexed_with_positions(self.signal, &f.column).is_some());
        let trace_ids = wanted_trace_ids(filters);

        // File I/O: a separate process's WAL tail, index searches, trace
        // filters read for the first time, segments fetched from an object
        // store. Off the runtime's threads.
        let table = self.clone();
        let (snapshot, segments) = {
            let predicate = predicate.clone();
            tokio::task::spawn_blocking(move || {
                let snapshot = table
                    .source
                    .snapshot(table.signal)
                    .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
                let segments = table.select_segments(
                    &snapshot,
                    predicate.as_ref(),
                    trace_ids.as_deref(),
                    &text_filters,
                )?;
                // On a Ballista scheduler the executors fetch what they read.
                if table.cluster_files.is_none() {
                    let ids: Vec<&str> = segments
                        .iter()
                        .map(|(entry, _)| entry.id.as_str())
                        .collect();
                    snapshot
                        .fetch(&ids, SegmentPart::Parquet)
                        .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
                }
                Ok::<_, datafusion::error::DataFusionError>((snapshot, segments))
            })
            .await
            .map_err(|e| datafusion::error::DataFusionError::External(e.into()))??
        };
        let projection = projection.cloned();
        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !segments.is_empty() {
            let partitions = state.config().target_partitions().clamp(1, segments.len());
            let mut groups = vec![Vec::new(); partitions];
            for (i, segment) in segments.into_iter().enumerate() {
                groups[i % partitions].push(segment);
            }
            inputs.push(match (&self.cluster_files, &self.origin) {
                (Some(files), Some(origin)) => Arc::new(crate::distributed::SegmentScanExec::new(
                    self.signal,
                    origin.tenant.clone(),
                    files.clone(),
                    groups
                        .into_iter()
                        .map(|group| {
                            group
                                .into_iter()
                                .map(|(entry, rows)| {
                                    crate::distributed::ScanSegment::new(&entry, rows)
                                })
                                .collect()
                        })
                        .collect(),
                    crate::distributed::ScanRequest {
                        projection: projection.clone(),
                        predicate: predicate.clone(),
                        limit,
                    },
                )?),
                _ => {
                    let groups = groups
                        .into_iter()
                        .map(|group| {
                            group
                                .into_iter()
                                .map(|(entry, rows)| {
                                    segment_file(
                                        &snapshot.segment_path(&entry.id),
                                        entry.bytes,
                                        rows,
                                    )
                                })
                                .collect()
                        })
                        .collect::<DfResult<_>>()?;
                    parquet_scan(
                        self.schema.clone(),
                        groups,
                        predicate.as_ref(),
                        projection.as_ref(),
                        limit,
                        state.runtime_env(),
                    )?
                }
            });
        }
        if !snapshot.unflushed.is_empty() {
            inputs.push(MemorySourceConfig::try_new_exec(
                &[snapshot.unflushed],
                self.schema.clone(),
                projection.clone(),
            )?);
        }
        match inputs.len() {
            0 => {
                let schema = match &projection {
                    Some(p) => Arc::new(self.schema.project(p)?),
                    None => self.schema.clone(),
                };
                Ok(Arc::new(EmptyExec::new(schema)))
            }
            1 => Ok(inputs.pop().expect("one input")),
            _ => UnionExec::try_new(inputs),
        }
    }
}

/// What the Parquet reader needs of one segment: its file, its size and
/// the rows the full-text index selected (`None`: all).
pub(crate) fn segment_file(
    path: &Path,
    bytes: u64,
    rows: Option<RowSelection>,
) -> DfResult<PartitionedFile> {
    // Object store paths are absolute; the data directory may be relative.
    let path = std::path::absolute(path)
        .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?;
    let file = PartitionedFile::new(path.to_string_lossy().into_owned(), bytes);
    Ok(match rows {
        Some(rows) => file.with_extension(ParquetRowSelection::new(rows)),
        None => file,
    })
}

/// A Parquet scan of segment files, one partition per group, with the
/// filters pushed into the reader (row groups and pages skipped by their
/// statistics, bloom filters on ids, late materialization).
pub(crate) fn parquet_scan(
    schema: SchemaRef,
    groups: Vec<Vec<PartitionedFile>>,
    predicate: Option<&Arc<dyn PhysicalExpr>>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
    runtime: &RuntimeEnv,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let url = ObjectStoreUrl::local_filesystem();
    let store = runtime.object_store(&url)?;
    let metadata_cache = runtime.cache_manager.get_file_metadata_cache();
    let mut parquet = ParquetSource::new(schema)
        .with_parquet_file_reader_factory(Arc::new(CachedParquetFileReaderFactory::new(
            store,
            metadata_cache,
        )))
        .with_pushdown_filters(true)
        .with_reorder_filters(true)
        .with_enable_page_index(true)
        .with_bloom_filter_on_read(true);
    if let Some(predicate) = predicate {
        parquet = parquet.with_predicate(predicate.clone());
    }
    let config = FileScanConfigBuilder::new(url, Arc::new(parquet))
        .with_file_groups(groups.into_iter().map(FileGroup::new).collect())
        .with_projection_indices(projection.cloned())?
        .with_limit(limit)
        .build();
    Ok(DataSourceExec::from_data_source(config))
}

/// What the catalog knows of each segment, in the shape DataFusion's pruning
/// asks for: one "container" per segment.
struct SegmentStatistics<'a> {
    signal: Signal,
    segments: &'a [SegmentEntry],
}

impl SegmentStatistics<'_> {
    fn is_time(&self, column: &Column) -> bool {
        column.name == segment::time_column(self.signal)
    }

    fn is_service(column: &Column) -> bool {
        column.name == "service_name"
    }

    fn times(&self, pick: fn(&SegmentEntry) -> i64) -> ArrayRef {
        Arc::new(
            TimestampNanosecondArray::from_iter_values(self.segments.iter().map(pick))
                .with_timezone("UTC"),
        )
    }

    fn services(&self, pick: fn(&[String]) -> Option<&String>) -> ArrayRef {
        Arc::new(StringArray::from_iter(
            self.segments.iter().map(|s| pick(&s.services)),
        ))
    }
}

impl PruningStatistics for SegmentStatistics<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        if self.is_time(column) {
            Some(self.times(|s| s.min_time_ns))
        } else if Self::is_service(column) {
            Some(self.services(|s| s.first()))
        } else {
            None
        }
    }

    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        if self.is_time(column) {
            Some(self.times(|s| s.max_time_ns))
        } else if Self::is_service(column) {
            Some(self.services(|s| s.last()))
        } else {
            None
        }
    }

    fn num_containers(&self) -> usize {
        self.segments.len()
    }

    fn null_counts(&self, _column: &Column) -> Option<ArrayRef> {
        None
    }

    fn row_counts(&self) -> Option<ArrayRef> {
        Some(Arc::new(UInt64Array::from_iter_values(
            self.segments.iter().map(|s| s.rows),
        )))
    }

    fn contained(&self, column: &Column, values: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        if !Self::is_service(column) {
            return None;
        }
        let wanted: HashSet<&str> = values
            .iter()
            .filter_map(|v| v.try_as_str().flatten())
            .collect();
        Some(BooleanArray::from_iter(self.segments.iter().map(|s| {
            let present = s
                .services
                .iter()
                .filter(|name| wanted.contains(name.as_str()));
            match present.count() {
                0 => Some(false),
                n if n == s.services.len() => Some(true),
                _ => None,
            }
        })))
    }
}

/// Collects the rows of every matching document (one per document in indexes
/// written before values were deduplicated, all the rows of its value since).
struct RowCollector<'a>(&'a index::DocumentRows);

struct SegmentRows {
    rows: index::SegmentRows,
    hits: Vec<u64>,
}

impl Collector for RowCollector<'_> {
    type Fruit = Vec<u64>;
    type Child = SegmentRows;

    fn for_segment(
        &self,
        _segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<SegmentRows> {
        Ok(SegmentRows {
            rows: self.0.for_segment(reader)?,
            hits: Vec::new(),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, fruits: Vec<Vec<u64>>) -> tantivy::Result<Vec<u64>> {
        Ok(fruits.concat())
    }
}

impl SegmentCollector for SegmentRows {
    type Fruit = Vec<u64>;

    fn collect(&mut self, doc: DocId, _score: Score) {
        self.rows.append_rows(doc, &mut self.hits);
    }

    fn harvest(self) -> Vec<u64> {
        self.hits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_selection_selects_exactly_the_hits() {
        use parquet::arrow::arrow_reader::RowSelector;
        let selection = row_selection(&[0, 1, 2, 7, 9], 10);
        let selectors: Vec<RowSelector> = selection.iter().copied().collect();
        assert_eq!(
            selectors,
            vec![
                RowSelector::select(3),
                RowSelector::skip(4),
                RowSelector::select(1),
                RowSelector::skip(1),
                RowSelector::select(1),
            ]
        );
    }
}
