//! Distributed SQL: weft's tables on an Apache DataFusion Ballista cluster.
//!
//! A querier started with `--ballista-scheduler` sends each SQL statement's
//! logical plan to a Ballista scheduler instead of running it itself. The
//! scheduler and its executors are weft processes too (`weft ballista
//! scheduler`, `weft ballista executor`), reading the same object store, so
//! they can decode what Ballista does not know by itself:
//!
//! ```text
//!  querier                 scheduler                         executors
//!  TableScan(spans)  ──▶   StoreTable::for_cluster ──scan──▶ SegmentScanExec
//!  [TableNode: tenant,     (catalogs + collectors' unflushed  (fetch the segments
//!   table, storage]         rows; prunes segments, searches    named, read them
//!                           the full-text indexes)             with the predicate)
//! ```
//!
//! [`WeftLogicalCodec`] carries a table as its tenant, name and storage URL;
//! the scheduler opens the table from its own reader of that storage, and its
//! scan plans [`SegmentScanExec`] partitions — groups of segment ids with the
//! row selections the full-text indexes gave — plus the unflushed rows as an
//! in-memory scan, which DataFusion's own codec carries. The groups are the
//! rows of an in-memory scan below the segment scan, because Ballista
//! divides a stage's partitions among its tasks by slicing the scans it
//! knows. [`WeftPhysicalCodec`] carries a [`SegmentScanExec`] to the
//! executors, which fetch their groups' segments into their local cache and
//! read them like a single-node scan does. Every
//! other node is Ballista's and DataFusion's own (both codecs delegate to
//! Ballista's), and `text_match` is resolved by name on every side.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{BinaryArray, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::TableReference;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::{SendableRecordBatchStream, SessionStateBuilder, TaskContext};
use datafusion::logical_expr::{Extension, LogicalPlan, ScalarUDF};
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::from_proto::parse_physical_expr;
use datafusion_proto::physical_plan::to_proto::serialize_physical_expr;
use datafusion_proto::physical_plan::{PhysicalExtensionCodec, PhysicalProtoConverterExtension};
use futures::{StreamExt, TryStreamExt};
use parking_lot::Mutex;
use parquet::arrow::arrow_reader::{RowSelection, RowSelector};
use prost::Message;
use weft_store::catalog::SegmentEntry;
use weft_store::object_storage::SegmentPart;
use weft_store::{Signal, StoreReader, TenantId};

use crate::analysis::sql_functions::{CriticalPathFunction, CriticalPathTable};
use crate::provider::{
    parquet_scan, segment_file, SegmentCache, SnapshotSource, StoreTable, TableOrigin,
};
use crate::text_match::{self, TextMatchUdf};

/// Marks the bytes this module's codecs write, so they and Ballista's own
/// share a plan without guessing.
const MAGIC: &[u8] = b"weft.v1:";

/// A querier's session that runs every statement on the Ballista cluster
/// whose scheduler is at `scheduler` (`host:port`), over the tables of
/// `origin`. `source` gives the tables' schemas here.
pub fn cluster_context(
    scheduler: &str,
    origin: TableOrigin,
    source: Arc<dyn SnapshotSource>,
) -> DfResult<SessionContext> {
    let url = format!("http://{scheduler}");
    let config = SessionConfig::new_with_ballista()
        .with_ballista_logical_extension_codec(Arc::new(WeftLogicalCodec::default()))
        .with_ballista_physical_extension_codec(Arc::new(WeftPhysicalCodec::default()));
    let state = SessionStateBuilder::new()
        .with_config(config)
        .with_default_features()
        .build()
        .upgrade_for_ballista(url)?;
    let ctx = SessionContext::new_with_state(state);
    let cache = Arc::new(SegmentCache::default());
    for signal in Signal::ALL {
        ctx.register_table(
            signal.table_name(),
            Arc::new(
                StoreTable::new(signal, source.clone(), cache.clone()).with_origin(origin.clone()),
            ),
        )?;
    }
    ctx.register_udf(TextMatchUdf::udf());
    ctx.register_udtf(
        "critical_path",
        Arc::new(CriticalPathFunction::for_origin(origin)),
    );
    Ok(ctx)
}

/// The stores a scheduler or an executor reads: one object store, one
/// reader (and local cache) per tenant, opened on first use.
pub struct ClusterStore {
    storage: String,
    open: Box<dyn Fn(&TenantId) -> StoreReader + Send + Sync>,
    readers: Mutex<HashMap<TenantId, Arc<StoreReader>>>,
    cache: Arc<SegmentCache>,
}

impl fmt::Debug for ClusterStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterStore")
            .field("storage", &self.storage)
            .finish()
    }
}

impl ClusterStore {
    /// The store at `storage` (the `--storage` URL), whose tenants' readers
    /// `open` makes.
    pub fn new(
        storage: impl Into<String>,
        open: impl Fn(&TenantId) -> StoreReader + Send + Sync + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            storage: storage.into(),
            open: Box::new(open),
            readers: Mutex::new(HashMap::new()),
            cache: Arc::new(SegmentCache::default()),
        })
    }

    fn reader(&self, tenant: &TenantId) -> Arc<StoreReader> {
        self.readers
            .lock()
            .entry(tenant.clone())
            .or_insert_with(|| Arc::new((self.open)(tenant)))
            .clone()
    }

    /// Refuses a plan made over another object store: its segments are not
    /// the ones this process would read.
    fn check(&self, storage: &str) -> DfResult<()> {
        if storage == self.storage {
            Ok(())
        } else {
            Err(DataFusionError::Plan(format!(
                "the querier reads {storage} but this Ballista process reads {}; start both with the same --storage",
                self.storage
            )))
        }
    }
}

/// A table as it travels in a logical plan.
#[derive(Clone, PartialEq, Message)]
struct TableNode {
    /// `spans`, `logs`, or `critical_path`.
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    tenant: String,
    #[prost(string, tag = "3")]
    storage: String,
    /// For `critical_path`: its trace id.
    #[prost(string, tag = "4")]
    trace_id: String,
}

const CRITICAL_PATH: &str = "critical_path";

fn signal_of(table: &str) -> DfResult<Signal> {
    Signal::ALL
        .into_iter()
        .find(|s| s.table_name() == table)
        .ok_or_else(|| DataFusionError::Plan(format!("weft has no table {table:?}")))
}

fn tenant_of(tenant: &str) -> DfResult<TenantId> {
    tenant
        .parse()
        .map_err(|e| DataFusionError::Plan(format!("bad tenant {tenant:?} in a plan: {e}")))
}

fn strip_magic(buf: &[u8]) -> Option<&[u8]> {
    buf.strip_prefix(MAGIC)
}

fn encode_ours(message: &impl Message, buf: &mut Vec<u8>) {
    buf.extend_from_slice(MAGIC);
    message.encode(buf).expect("a Vec grows as needed");
}

fn decode_error(what: &str, e: prost::DecodeError) -> DataFusionError {
    DataFusionError::Internal(format!(
        "cannot decode weft's {what} in a Ballista plan: {e}"
    ))
}

/// Ballista's logical codec, plus weft's tables. Only a process given a
/// [`ClusterStore`] (a scheduler) can decode them.
#[derive(Debug, Default)]
pub struct WeftLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    store: Option<Arc<ClusterStore>>,
}

impl WeftLogicalCodec {
    pub fn new(store: Arc<ClusterStore>) -> Self {
        Self {
            ballista: BallistaLogicalExtensionCodec::default(),
            store: Some(store),
        }
    }

    fn store(&self) -> DfResult<&Arc<ClusterStore>> {
        self.store.as_ref().ok_or_else(|| {
            DataFusionError::Plan(
                "weft's tables are planned on a `weft ballista scheduler`, not here".to_string(),
            )
        })
    }
}

impl LogicalExtensionCodec for WeftLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> DfResult<Extension> {
        self.ballista.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> DfResult<()> {
        self.ballista.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> DfResult<Arc<dyn TableProvider>> {
        let Some(ours) = strip_magic(buf) else {
            return self
                .ballista
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        let node = TableNode::decode(ours).map_err(|e| decode_error("table", e))?;
        let store = self.store()?;
        store.check(&node.storage)?;
        let origin = TableOrigin {
            tenant: tenant_of(&node.tenant)?,
            storage: node.storage,
        };
        let reader = store.reader(&origin.tenant);
        if node.table == CRITICAL_PATH {
            let spans =
                StoreTable::for_cluster(Signal::Spans, origin.clone(), reader, store.cache.clone());
            return Ok(Arc::new(CriticalPathTable::over(
                node.trace_id,
                origin,
                Arc::new(spans),
            )));
        }
        let signal = signal_of(&node.table)?;
        Ok(Arc::new(StoreTable::for_cluster(
            signal,
            origin,
            reader,
            store.cache.clone(),
        )))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> DfResult<()> {
        let missing_origin = || {
            DataFusionError::Plan(format!(
                "{table_ref} cannot be sent to Ballista: the querier does not know its object store"
            ))
        };
        if let Some(table) = node.downcast_ref::<StoreTable>() {
            let origin = table.origin().ok_or_else(missing_origin)?;
            encode_ours(
                &TableNode {
                    table: table.signal().table_name().to_string(),
                    tenant: origin.tenant.to_string(),
                    storage: origin.storage.clone(),
                    trace_id: String::new(),
                },
                buf,
            );
            return Ok(());
        }
        if let Some(path) = node.downcast_ref::<CriticalPathTable>() {
            let origin = path.origin().ok_or_else(missing_origin)?;
            encode_ours(
                &TableNode {
                    table: CRITICAL_PATH.to_string(),
                    tenant: origin.tenant.to_string(),
                    storage: origin.storage.clone(),
                    trace_id: path.trace_id().to_string(),
                },
                buf,
            );
            return Ok(());
        }
        self.ballista
            .try_encode_table_provider(table_ref, node, buf)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        match name {
            text_match::NAME => Ok(Arc::new(TextMatchUdf::udf())),
            _ => self.ballista.try_decode_udf(name, buf),
        }
    }
}

/// A [`SegmentScanExec`] as it travels to an executor.
#[derive(Clone, PartialEq, Message)]
struct SegmentScanNode {
    #[prost(string, tag = "1")]
    table: String,
    #[prost(string, tag = "2")]
    tenant: String,
    // Tag 3: the segment groups travel as the scan's input (`work`).
    /// Absent: every column.
    #[prost(message, optional, tag = "4")]
    projection: Option<ProjectionNode>,
    #[prost(message, optional, tag = "5")]
    predicate: Option<datafusion_proto::protobuf::PhysicalExprNode>,
    #[prost(uint64, optional, tag = "6")]
    limit: Option<u64>,
}

#[derive(Clone, PartialEq, Message)]
struct ProjectionNode {
    #[prost(uint32, repeated, tag = "1")]
    columns: Vec<u32>,
}

#[derive(Clone, PartialEq, Message)]
struct PartitionNode {
    #[prost(message, repeated, tag = "1")]
    segments: Vec<SegmentNode>,
}

#[derive(Clone, PartialEq, Message)]
struct SegmentNode {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(uint64, tag = "2")]
    bytes: u64,
    #[prost(uint64, tag = "3")]
    rows: u64,
    /// The full-text index's row selection, as runs: `count << 1 | skip`.
    /// Absent: every row.
    #[prost(message, optional, tag = "4")]
    selection: Option<SelectionNode>,
}

#[derive(Clone, PartialEq, Message)]
struct SelectionNode {
    #[prost(uint64, repeated, tag = "1")]
    runs: Vec<u64>,
}

/// One segment a [`SegmentScanExec`] partition reads, and which of its rows.
#[derive(Clone, Debug)]
pub(crate) struct ScanSegment {
    id: String,
    bytes: u64,
    rows: u64,
    selection: Option<RowSelection>,
}

/// Reads the segments a Ballista scheduler named: each partition fetches its
/// group of segments into this process's cache, then scans them as Parquet
/// with the predicate, projection and row selections the scheduler planned.
#[derive(Clone)]
pub struct SegmentScanExec {
    signal: Signal,
    tenant: TenantId,
    files: Arc<StoreReader>,
    /// The segments to read: an in-memory scan with one partition per
    /// group, whose one row is the group's encoded [`PartitionNode`].
    /// Ballista slices a stage's partitions among its tasks only for the
    /// scans it knows, this one among them; a scan of its own would be read
    /// whole by every task.
    work: Arc<dyn ExecutionPlan>,
    request: ScanRequest,
    properties: Arc<PlanProperties>,
}

/// What a scan reads of each segment: which columns, the predicate rows
/// are filtered with in the Parquet reader, and at most how many rows.
#[derive(Clone, Debug, Default)]
pub(crate) struct ScanRequest {
    pub projection: Option<Vec<usize>>,
    pub predicate: Option<Arc<dyn PhysicalExpr>>,
    pub limit: Option<usize>,
}

impl fmt::Debug for SegmentScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SegmentScanExec")
            .field("table", &self.signal.table_name())
            .field("tenant", &self.tenant)
            .field("partitions", &self.partition_count())
            .finish()
    }
}

impl ScanSegment {
    pub(crate) fn new(entry: &SegmentEntry, selection: Option<RowSelection>) -> Self {
        Self {
            id: entry.id.clone(),
            bytes: entry.bytes,
            rows: entry.rows,
            selection,
        }
    }
}

impl SegmentScanExec {
    pub(crate) fn new(
        signal: Signal,
        tenant: TenantId,
        files: Arc<StoreReader>,
        partitions: Vec<Vec<ScanSegment>>,
        request: ScanRequest,
    ) -> DfResult<Self> {
        let schema = work_schema();
        let batches = partitions
            .iter()
            .map(|group| {
                let node = partition_node(group).encode_to_vec();
                let column = BinaryArray::from_iter_values([node]);
                Ok(vec![RecordBatch::try_new(
                    schema.clone(),
                    vec![Arc::new(column)],
                )?])
            })
            .collect::<DfResult<Vec<_>>>()?;
        let work = MemorySourceConfig::try_new_exec(&batches, schema, None)?;
        Self::over(signal, tenant, files, work, request)
    }

    fn over(
        signal: Signal,
        tenant: TenantId,
        files: Arc<StoreReader>,
        work: Arc<dyn ExecutionPlan>,
        request: ScanRequest,
    ) -> DfResult<Self> {
        let schema = match &request.projection {
            Some(columns) => Arc::new(signal.schema().project(columns)?),
            None => signal.schema(),
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(work.properties().partitioning.partition_count()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(Self {
            signal,
            tenant,
            files,
            work,
            request,
            properties: Arc::new(properties),
        })
    }

    fn partition_count(&self) -> usize {
        self.properties.partitioning.partition_count()
    }

    fn to_node(&self, codec: &dyn PhysicalExtensionCodec) -> DfResult<SegmentScanNode> {
        Ok(SegmentScanNode {
            table: self.signal.table_name().to_string(),
            tenant: self.tenant.to_string(),
            projection: self
                .request
                .projection
                .as_ref()
                .map(|columns| ProjectionNode {
                    columns: columns.iter().map(|&c| c as u32).collect(),
                }),
            predicate: self
                .request
                .predicate
                .as_ref()
                .map(|p| serialize_physical_expr(p, codec))
                .transpose()?,
            limit: self.request.limit.map(|l| l as u64),
        })
    }

    fn from_node(
        node: SegmentScanNode,
        work: Arc<dyn ExecutionPlan>,
        store: &ClusterStore,
        ctx: &TaskContext,
        codec: &dyn PhysicalExtensionCodec,
    ) -> DfResult<Self> {
        let signal = signal_of(&node.table)?;
        let tenant = tenant_of(&node.tenant)?;
        let predicate = node
            .predicate
            .as_ref()
            .map(|p| parse_physical_expr(p, ctx, &signal.schema(), codec))
            .transpose()?;
        Self::over(
            signal,
            tenant.clone(),
            store.reader(&tenant),
            work,
            ScanRequest {
                projection: node
                    .projection
                    .map(|p| p.columns.into_iter().map(|c| c as usize).collect()),
                predicate,
                limit: node.limit.map(|l| l as usize),
            },
        )
    }

    /// Fetches one group's segments and scans them.
    async fn read_group(
        &self,
        group: Vec<ScanSegment>,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let (signal, files) = (self.signal, self.files.clone());
        // Downloads block: off the runtime's threads.
        let fetched = tokio::task::spawn_blocking(move || {
            let table = files.files(signal);
            let ids: Vec<&str> = group.iter().map(|s| s.id.as_str()).collect();
            table.fetch(&ids, SegmentPart::Parquet)?;
            Ok::<_, weft_store::StoreError>(
                group
                    .into_iter()
                    .map(|s| (table.segment_path(&s.id), s))
                    .collect::<Vec<_>>(),
            )
        })
        .await
        .map_err(|e| DataFusionError::External(e.into()))?
        .map_err(|e| DataFusionError::External(e.into()))?;
        let files = fetched
            .into_iter()
            .map(|(path, s)| segment_file(&path, s.bytes, s.selection))
            .collect::<DfResult<Vec<_>>>()?;
        let scan = parquet_scan(
            signal.schema(),
            vec![files],
            self.request.predicate.as_ref(),
            self.request.projection.as_ref(),
            self.request.limit,
            context.runtime_env().as_ref(),
        )?;
        scan.execute(0, context)
    }
}

/// The one column of a [`SegmentScanExec`]'s work items.
fn work_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "segments",
        DataType::Binary,
        false,
    )]))
}

fn partition_node(group: &[ScanSegment]) -> PartitionNode {
    PartitionNode {
        segments: group
            .iter()
            .map(|s| SegmentNode {
                id: s.id.clone(),
                bytes: s.bytes,
                rows: s.rows,
                selection: s.selection.as_ref().map(|rows| SelectionNode {
                    runs: rows
                        .iter()
                        .map(|r| (r.row_count as u64) << 1 | u64::from(r.skip))
                        .collect(),
                }),
            })
            .collect(),
    }
}

/// The groups of segments in a batch of work items.
fn groups_of(batch: &RecordBatch) -> DfResult<Vec<Vec<ScanSegment>>> {
    let column = batch
        .column(0)
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| DataFusionError::Internal("segment scan work is not binary".into()))?;
    column
        .iter()
        .flatten()
        .map(|bytes| {
            let node =
                PartitionNode::decode(bytes).map_err(|e| decode_error("segment group", e))?;
            Ok(node
                .segments
                .into_iter()
                .map(|s| ScanSegment {
                    id: s.id,
                    bytes: s.bytes,
                    rows: s.rows,
                    selection: s.selection.map(|selection| {
                        RowSelection::from(
                            selection
                                .runs
                                .iter()
                                .map(|&run| RowSelector {
                                    row_count: (run >> 1) as usize,
                                    skip: run & 1 == 1,
                                })
                                .collect::<Vec<_>>(),
                        )
                    }),
                })
                .collect())
        })
        .collect()
}

impl DisplayAs for SegmentScanExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "SegmentScanExec: table={}, partitions={}",
                self.signal.table_name(),
                self.partition_count()
            ),
            DisplayFormatType::TreeRender => write!(f, "table={}", self.signal.table_name()),
        }
    }
}

impl ExecutionPlan for SegmentScanExec {
    fn name(&self) -> &str {
        "SegmentScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.work]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        // The work items are tiny: spreading them is Ballista's job.
        vec![false]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        match &self.request.predicate {
            Some(predicate) => f(predicate),
            None => Ok(TreeNodeRecursion::Continue),
        }
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let [work] = children.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "SegmentScanExec takes one child, not {}",
                children.len()
            )));
        };
        Ok(Arc::new(Self::over(
            self.signal,
            self.tenant.clone(),
            self.files.clone(),
            work.clone(),
            self.request.clone(),
        )?))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let work = self.work.execute(partition, context.clone())?;
        let scan = Arc::new(self.clone());
        let stream = work
            .map(move |batch| {
                let scan = scan.clone();
                let context = context.clone();
                async move {
                    let groups = groups_of(&batch?)?;
                    let mut streams = Vec::with_capacity(groups.len());
                    for group in groups {
                        streams.push(scan.read_group(group, context.clone()).await?);
                    }
                    Ok::<_, DataFusionError>(futures::stream::iter(streams).flatten())
                }
            })
            .buffered(1)
            .try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema(),
            stream.boxed(),
        )))
    }
}

/// Ballista's physical codec, plus [`SegmentScanExec`]. Only a process
/// given a [`ClusterStore`] (an executor, or a scheduler) can decode it.
#[derive(Debug, Default)]
pub struct WeftPhysicalCodec {
    ballista: BallistaPhysicalExtensionCodec,
    store: Option<Arc<ClusterStore>>,
}

impl WeftPhysicalCodec {
    pub fn new(store: Arc<ClusterStore>) -> Self {
        Self {
            ballista: BallistaPhysicalExtensionCodec::default(),
            store: Some(store),
        }
    }
}

impl PhysicalExtensionCodec for WeftPhysicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[Arc<dyn ExecutionPlan>],
        ctx: &TaskContext,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let Some(ours) = strip_magic(buf) else {
            return self.ballista.try_decode(buf, inputs, ctx, proto_converter);
        };
        let node = SegmentScanNode::decode(ours).map_err(|e| decode_error("segment scan", e))?;
        let store = self.store.as_ref().ok_or_else(|| {
            DataFusionError::Plan(
                "weft's segment scans run on a `weft ballista executor`, not here".to_string(),
            )
        })?;
        let [work] = inputs else {
            return Err(DataFusionError::Internal(format!(
                "a segment scan has one input, not {}",
                inputs.len()
            )));
        };
        Ok(Arc::new(SegmentScanExec::from_node(
            node,
            work.clone(),
            store,
            ctx,
            self,
        )?))
    }

    fn try_encode(
        &self,
        node: Arc<dyn ExecutionPlan>,
        buf: &mut Vec<u8>,
        proto_converter: &dyn PhysicalProtoConverterExtension,
    ) -> DfResult<()> {
        match node.downcast_ref::<SegmentScanExec>() {
            Some(scan) => {
                encode_ours(&scan.to_node(self)?, buf);
                Ok(())
            }
            None => self.ballista.try_encode(node, buf, proto_converter),
        }
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> DfResult<Arc<ScalarUDF>> {
        match name {
            text_match::NAME => Ok(Arc::new(TextMatchUdf::udf())),
            _ => self.ballista.try_decode_udf(name, buf),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::logical_expr::Operator;
    use datafusion::physical_expr::expressions::{col, lit, BinaryExpr};
    use datafusion::physical_plan::collect_partitioned;
    use datafusion_proto::physical_plan::AsExecutionPlan;
    use datafusion_proto::protobuf::PhysicalPlanNode;

    use super::*;

    fn store(dir: &std::path::Path, storage: &str) -> Arc<ClusterStore> {
        let root = dir.to_path_buf();
        ClusterStore::new(storage, move |tenant| {
            StoreReader::new(tenant.data_dir(&root))
        })
    }

    fn origin(storage: &str) -> TableOrigin {
        TableOrigin {
            tenant: "acme".parse().unwrap(),
            storage: storage.to_string(),
        }
    }

    #[tokio::test]
    async fn a_segment_scan_reaches_an_executor_as_the_scheduler_planned_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), "s3://bucket/weft");
        let codec = WeftPhysicalCodec::new(store.clone());
        let schema = Signal::Spans.schema();
        let predicate: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            col("service_name", &schema).unwrap(),
            Operator::Eq,
            lit("crm-database"),
        ));
        let entry = |id: &str| SegmentEntry {
            id: id.to_string(),
            rows: 100,
            bytes: 4096,
            arrow_bytes: 0,
            min_time_ns: 0,
            max_time_ns: 0,
            services: Vec::new(),
        };
        let selection = RowSelection::from(vec![
            RowSelector::skip(3),
            RowSelector::select(2),
            RowSelector::skip(95),
        ]);
        let tenant: TenantId = "acme".parse().unwrap();
        let planned = SegmentScanExec::new(
            Signal::Spans,
            tenant.clone(),
            store.reader(&tenant),
            vec![
                vec![ScanSegment::new(&entry("a"), Some(selection.clone()))],
                vec![
                    ScanSegment::new(&entry("b"), None),
                    ScanSegment::new(&entry("c"), None),
                ],
            ],
            ScanRequest {
                projection: Some(vec![0, 3]),
                predicate: Some(predicate.clone()),
                limit: Some(7),
            },
        )
        .unwrap();

        // Through DataFusion's plan codec, as Ballista sends it.
        let planned: Arc<dyn ExecutionPlan> = Arc::new(planned);
        let proto = PhysicalPlanNode::try_from_physical_plan(planned, &codec).unwrap();
        let ctx = TaskContext::default();
        let decoded = proto.try_into_physical_plan(&ctx, &codec).unwrap();
        let scan = decoded.downcast_ref::<SegmentScanExec>().unwrap();
        assert_eq!(scan.signal, Signal::Spans);
        assert_eq!(scan.tenant, tenant);
        assert_eq!(scan.request.projection, Some(vec![0, 3]));
        assert_eq!(scan.request.limit, Some(7));
        assert_eq!(
            scan.request.predicate.as_ref().map(ToString::to_string),
            Some(predicate.to_string())
        );
        assert_eq!(decoded.properties().partitioning.partition_count(), 2);
        assert_eq!(decoded.schema(), Arc::new(schema.project(&[0, 3]).unwrap()));
        let work = collect_partitioned(scan.work.clone(), Arc::new(ctx))
            .await
            .unwrap();
        let groups: Vec<Vec<ScanSegment>> = work
            .iter()
            .map(|batches| {
                batches
                    .iter()
                    .flat_map(|b| groups_of(b).unwrap())
                    .flatten()
                    .collect()
            })
            .collect();
        let ids: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.iter().map(|s| s.id.as_str()).collect())
            .collect();
        assert_eq!(ids, vec![vec!["a"], vec!["b", "c"]]);
        assert_eq!(groups[0][0].selection, Some(selection));
        assert_eq!(groups[1][0].selection, None);
        assert_eq!(groups[1][1].bytes, 4096);
    }

    #[test]
    fn a_scheduler_opens_only_tables_of_its_own_object_store() {
        let dir = tempfile::tempdir().unwrap();
        let querier = WeftLogicalCodec::default();
        let table = StoreTable::new(
            Signal::Logs,
            Arc::new(StoreReader::new(dir.path())),
            Arc::new(SegmentCache::default()),
        )
        .with_origin(origin("s3://bucket/weft"));
        let logs = TableReference::bare("logs");
        let mut buf = Vec::new();
        querier
            .try_encode_table_provider(&logs, Arc::new(table), &mut buf)
            .unwrap();
        let schema = Signal::Logs.schema();
        let ctx = TaskContext::default();

        let same = WeftLogicalCodec::new(store(dir.path(), "s3://bucket/weft"));
        let opened = same
            .try_decode_table_provider(&buf, &logs, schema.clone(), &ctx)
            .unwrap();
        let opened = opened.downcast_ref::<StoreTable>().unwrap();
        assert_eq!(opened.signal(), Signal::Logs);
        assert_eq!(opened.origin(), Some(&origin("s3://bucket/weft")));

        let other = WeftLogicalCodec::new(store(dir.path(), "s3://other/weft"));
        let refused = other
            .try_decode_table_provider(&buf, &logs, schema.clone(), &ctx)
            .unwrap_err()
            .to_string();
        assert!(
            refused.contains("s3://bucket/weft") && refused.contains("s3://other/weft"),
            "{refused}"
        );
        // A querier does not plan weft's tables itself.
        assert!(querier
            .try_decode_table_provider(&buf, &logs, schema, &ctx)
            .is_err());
    }

    #[test]
    fn a_table_the_querier_cannot_place_is_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let table = StoreTable::new(
            Signal::Spans,
            Arc::new(StoreReader::new(dir.path())),
            Arc::new(SegmentCache::default()),
        );
        let error = WeftLogicalCodec::default()
            .try_encode_table_provider(
                &TableReference::bare("spans"),
                Arc::new(table),
                &mut Vec::new(),
            )
            .unwrap_err()
            .to_string();
        assert!(error.contains("spans"), "{error}");
    }
}
