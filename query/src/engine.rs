//! The SQL engine: one DataFusion session over the store, read-only and
//! bounded in time, memory and result size.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::SessionStateBuilder;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{execute_stream, ExecutionPlan};
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;
use parking_lot::RwLock;
use weft_store::{Signal, TenantId};

use crate::provider::{SegmentCache, SnapshotSource, StoreTable};
use crate::text_match::TextMatchUdf;

/// Limits every query runs under.
#[derive(Clone, Debug)]
pub struct QueryConfig {
    /// A query still running after this long is cancelled.
    pub timeout: Duration,
    /// At most this many rows are returned; the result says when more existed.
    pub max_rows: usize,
    /// Memory all running queries may use for sorts, joins and aggregations
    /// together; beyond it they spill to disk or fail.
    pub memory_limit_bytes: usize,
    /// Memory one query may use of that, so one query cannot take it all.
    pub memory_limit_per_query_bytes: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            max_rows: 10_000,
            memory_limit_bytes: 2 * 1024 * 1024 * 1024,
            memory_limit_per_query_bytes: 512 * 1024 * 1024,
        }
    }
}

/// The answer to one query.
#[derive(Debug)]
pub struct QueryResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// The query had more rows than [`QueryConfig::max_rows`]; the rest were not read.
    pub truncated: bool,
}

impl QueryResult {
    pub fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The query is wrong: bad SQL, unknown column, a write, a type error.
    #[error("{0}")]
    Invalid(String),
    /// The query ran past [`QueryConfig::timeout`].
    #[error("query cancelled after the time limit of {}", humantime::format_duration(*.0))]
    Timeout(Duration),
    /// The query needed more memory than it may use.
    #[error("query needs more memory than the limit allows: {0}")]
    TooBig(String),
    /// The store could not be read.
    #[error("{0}")]
    Internal(String),
    /// A service the query needs cannot be reached now (the Ballista
    /// scheduler); the same query may work later.
    #[error("{0}")]
    Unavailable(String),
}

impl From<DataFusionError> for QueryError {
    fn from(error: DataFusionError) -> Self {
        match error.find_root() {
            DataFusionError::ResourcesExhausted(message) => QueryError::TooBig(message.clone()),
            DataFusionError::External(_) | DataFusionError::IoError(_) => {
                QueryError::Internal(error.to_string())
            }
            DataFusionError::ObjectStore(_) | DataFusionError::ParquetError(_) => {
                QueryError::Internal(error.to_string())
            }
            DataFusionError::Internal(_) => QueryError::Internal(error.to_string()),
            _ => QueryError::Invalid(error.to_string()),
        }
    }
}

/// SQL over the store's `spans` and `logs` tables.
pub struct QueryEngine {
    ctx: SessionContext,
    config: QueryConfig,
    /// Where users' statements run when a Ballista cluster is configured,
    /// and its scheduler's address.
    cluster: Option<(SessionContext, String)>,
}

/// A Ballista cluster that runs users' SQL statements
/// ([`crate::distributed`]).
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The scheduler, `host:port`.
    pub scheduler: String,
    /// The object store the cluster reads, the `--storage` URL.
    pub storage: String,
}

impl QueryEngine {
    pub fn new(source: Arc<dyn SnapshotSource>, config: QueryConfig) -> Result<Self, QueryError> {
        let runtime = shared_runtime(&config)?;
        Self::with_runtime(source, config, runtime)
    }

    /// An engine whose queries share `runtime`'s memory pool with other
    /// engines'.
    fn with_runtime(
        source: Arc<dyn SnapshotSource>,
        config: QueryConfig,
        runtime: Arc<RuntimeEnv>,
    ) -> Result<Self, QueryError> {
        let session = SessionConfig::new()
            .with_information_schema(true)
            .with_target_partitions(
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1),
            );
        let state = SessionStateBuilder::new()
            .with_config(session)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(YieldingJoins))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let cache = Arc::new(SegmentCache::default());
        for signal in Signal::ALL {
            ctx.register_table(
                signal.table_name(),
                Arc::new(StoreTable::new(signal, source.clone(), cache.clone())),
            )?;
        }
        ctx.register_udf(TextMatchUdf::udf());
        ctx.register_udtf(
            "critical_path",
            Arc::new(crate::analysis::sql_functions::CriticalPathFunction::default()),
        );
        Ok(Self {
            ctx,
            config,
            cluster: None,
        })
    }

    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Runs a user's SQL statement like [`QueryEngine::sql`], on the Ballista
    /// cluster if the engine has one. What weft asks itself (search, trace
    /// by id, analyses) stays here: a cluster's job costs more than it saves.
    pub async fn statement(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let Some((cluster, scheduler)) = &self.cluster else {
            return self.sql(sql).await;
        };
        let result = self.collect_on(cluster, sql, self.config.max_rows).await;
        // Ballista reports a scheduler it cannot reach like any failed
        // job; tell the two apart by trying the scheduler.
        match result {
            Err(QueryError::Invalid(message) | QueryError::Internal(message))
                if !reachable(scheduler).await =>
            {
                Err(QueryError::Unavailable(format!(
                    "the Ballista scheduler at {scheduler} cannot be reached: {message}"
                )))
            }
            result => result,
        }
    }

    /// Runs one read-only SQL statement and collects its rows, up to the
    /// row limit.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.sql_with_limit(sql, self.config.max_rows).await
    }

    /// Like [`QueryEngine::sql`] with a row limit below the configured one.
    pub async fn sql_with_limit(
        &self,
        sql: &str,
        max_rows: usize,
    ) -> Result<QueryResult, QueryError> {
        let max_rows = max_rows.min(self.config.max_rows);
        self.collect_on(&self.ctx, sql, max_rows).await
    }

    /// Runs SQL that weft built itself with its own bound on the rows it
    /// returns (the analyses sample traces), so the user-facing row limit
    /// does not apply; the time limit does.
    pub(crate) async fn sql_internal(&self, sql: &str) -> Result<QueryResult, QueryError> {
        self.collect_on(&self.ctx, sql, usize::MAX).await
    }

    /// Runs `sql` in `ctx` and collects up to `max_rows` of its rows, within
    /// the time limit.
    async fn collect_on(
        &self,
        ctx: &SessionContext,
        sql: &str,
        max_rows: usize,
    ) -> Result<QueryResult, QueryError> {
        let run = async {
            let stream = self.stream_on(ctx, sql).await?;
            collect_limited(stream, max_rows).await
        };
        tokio::time::timeout(self.config.timeout, run)
            .await
            .map_err(|_| QueryError::Timeout(self.config.timeout))?
    }

    /// Plans one read-only SQL statement and starts it. DDL (`CREATE`,
    /// `DROP`), DML (`INSERT`, `COPY`) and statements that change the
    /// session (`SET`) are refused.
    async fn stream_on(
        &self,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<SendableRecordBatchStream, QueryError> {
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        let frame = ctx.sql_with_options(sql, options).await?;
        // Each query draws on the shared pool through a pool of its own,
        // which caps what it may hold.
        let shared = ctx.runtime_env();
        let mut runtime = RuntimeEnv::clone(&shared);
        runtime.memory_pool = Arc::new(PerQueryPool {
            shared: shared.memory_pool.clone(),
            limit: self.config.memory_limit_per_query_bytes,
            reserved: AtomicUsize::new(0),
        });
        let task = frame.task_ctx().with_runtime(Arc::new(runtime));
        let plan = frame.create_physical_plan().await?;
        Ok(execute_stream(plan, Arc::new(task))?)
    }
}

/// Whether a TCP connection to `addr` (`host:port`) opens within a second.
async fn reachable(addr: &str) -> bool {
    let connect = tokio::net::TcpStream::connect(addr);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), connect).await,
        Ok(Ok(_))
    )
}

/// The memory pool (and disk manager) all engines of a process share, so
/// the memory limit holds for all tenants' queries together.
fn shared_runtime(config: &QueryConfig) -> Result<Arc<RuntimeEnv>, QueryError> {
    Ok(RuntimeEnvBuilder::new()
        .with_memory_limit(config.memory_limit_bytes, 1.0)
        .build_arc()?)
}

/// One query's share of the memory pool all queries share: what it
/// reserves counts against the shared pool, and it may hold at most `limit`.
#[derive(Debug)]
struct PerQueryPool {
    shared: Arc<dyn MemoryPool>,
    limit: usize,
    reserved: AtomicUsize,
}

impl std::fmt::Display for PerQueryPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "per-query pool of {} bytes within {}",
            self.limit, self.shared
        )
    }
}

impl MemoryPool for PerQueryPool {
    fn name(&self) -> &str {
        "weft_per_query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        self.shared.register(consumer)
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        self.shared.unregister(consumer)
    }

    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.shared.grow(reservation, additional);
        self.reserved.fetch_add(additional, Ordering::Relaxed);
    }

    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.shared.shrink(reservation, shrink);
        self.reserved.fetch_sub(shrink, Ordering::Relaxed);
    }

    fn try_grow(
        &self,
        reservation: &MemoryReservation,
        additional: usize,
    ) -> datafusion::error::Result<()> {
        let held = self.reserved.fetch_add(additional, Ordering::Relaxed);
        if held + additional > self.limit {
            self.reserved.fetch_sub(additional, Ordering::Relaxed);
            return Err(DataFusionError::ResourcesExhausted(format!(
                "{} asked for {additional} more bytes while holding {held}, over the per-query limit of {} bytes",
                reservation.consumer().name(),
                self.limit
            )));
        }
        self.shared
            .try_grow(reservation, additional)
            .inspect_err(|_| {
                self.reserved.fetch_sub(additional, Ordering::Relaxed);
            })
    }

    fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

/// Where a tenant's data is read from.
pub type TenantSources =
    Box<dyn Fn(&TenantId) -> Result<Arc<dyn SnapshotSource>, QueryError> + Send + Sync>;

/// One [`QueryEngine`] per tenant, each over that tenant's data only, made
/// on the tenant's first query. Their queries share one memory pool.
pub struct QueryEngines {
    sources: TenantSources,
    config: QueryConfig,
    cluster: Option<ClusterConfig>,
    runtime: Arc<RuntimeEnv>,
    engines: RwLock<HashMap<TenantId, Arc<QueryEngine>>>,
}

impl QueryEngines {
    pub fn new(sources: TenantSources, config: QueryConfig) -> Result<Self, QueryError> {
        Ok(Self {
            runtime: shared_runtime(&config)?,
            sources,
            config,
            cluster: None,
            engines: RwLock::new(HashMap::new()),
        })
    }

    /// Engines whose users' statements run on the Ballista cluster
    /// `cluster` ([`QueryEngine::statement`]).
    pub fn with_cluster(mut self, cluster: ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }

    /// The engine over `tenant`'s data.
    pub fn get(&self, tenant: &TenantId) -> Result<Arc<QueryEngine>, QueryError> {
        if let Some(engine) = self.engines.read().get(tenant) {
            return Ok(engine.clone());
        }
        let source = (self.sources)(tenant)?;
        let mut engine =
            QueryEngine::with_runtime(source.clone(), self.config.clone(), self.runtime.clone())?;
        if let Some(cluster) = &self.cluster {
            let origin = crate::TableOrigin {
                tenant: tenant.clone(),
                storage: cluster.storage.clone(),
            };
            let ctx = crate::distributed::cluster_context(&cluster.scheduler, origin, source)?;
            engine.cluster = Some((ctx, cluster.scheduler.clone()));
        }
        let engine = Arc::new(engine);
        Ok(self
            .engines
            .write()
            .entry(tenant.clone())
            .or_insert(engine)
            .clone())
    }
}

/// Makes joins give the runtime a chance to cancel them.
///
/// A join can emit many batches per input batch (a cross join emits one per
/// row of its build side), and DataFusion only spends the task's cooperative
/// budget at the leaves. Without this, `spans a CROSS JOIN spans b` never
/// returns to the runtime: the query timeout cannot fire and the query holds
/// a core until it ends on its own. Wrapping each join's output in
/// [`CooperativeExec`] spends budget per emitted batch, so the task yields,
/// the timeout fires and dropping the stream stops the work.
#[derive(Debug)]
struct YieldingJoins;

impl PhysicalOptimizerRule for YieldingJoins {
    fn name(&self) -> &str {
        "weft_yielding_joins"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            // Joins are the operators with two inputs; a union only forwards.
            let is_join = node.children().len() == 2 && !node.is::<UnionExec>();
            Ok(if is_join {
                Transformed::yes(Arc::new(CooperativeExec::new(node)) as Arc<dyn ExecutionPlan>)
            } else {
                Transformed::no(node)
            })
        })
        .map(|transformed| transformed.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

async fn collect_limited(
    mut stream: SendableRecordBatchStream,
    max_rows: usize,
) -> Result<QueryResult, QueryError> {
    let schema = stream.schema();
    let mut batches = Vec::new();
    let mut rows = 0;
    let mut truncated = false;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if rows + batch.num_rows() > max_rows {
            batches.push(batch.slice(0, max_rows - rows));
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok(QueryResult {
        schema,
        batches,
        truncated,
    })
}
