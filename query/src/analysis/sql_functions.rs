//! The analyses in SQL: `critical_path('<trace id>')` is a table of the
//! trace's critical path, so it joins with `spans` and `logs` like any table:
//!
//! ```sql
//! SELECT c.service_name, c.name, c.self_ns, l.body
//! FROM critical_path('0af7651916cd43dd8448eb211c80319c') c
//! LEFT JOIN logs l ON l.span_id = c.span_id
//! ORDER BY c.self_ns DESC
//! ```

use std::sync::{Arc, LazyLock};

use arrow::array::{BooleanArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::SessionState;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use super::critical_path::TraceTree;
use super::{span_records, SPAN_RECORD_COLUMNS};
use crate::api::params::{parse_trace_id, sql_string};
use crate::provider::TableOrigin;

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("span_id", DataType::Utf8, false),
        Field::new("service_name", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("offset_ns", DataType::Int64, false),
        Field::new("duration_ns", DataType::Int64, false),
        Field::new("self_ns", DataType::Int64, false),
        Field::new("is_error_origin", DataType::Boolean, false),
    ]))
});

/// `critical_path(trace_id)`: one row per span on the trace's critical path,
/// in the order the walk found them, with its self time on the path; the
/// error origin is flagged (it is a row even when it is off the path).
#[derive(Debug, Default)]
pub struct CriticalPathFunction {
    /// Whose spans in which object store, when plans go to Ballista.
    origin: Option<TableOrigin>,
}

impl CriticalPathFunction {
    pub(crate) fn for_origin(origin: TableOrigin) -> Self {
        Self {
            origin: Some(origin),
        }
    }
}

impl TableFunctionImpl for CriticalPathFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let usage = || {
            DataFusionError::Plan(
                "critical_path takes one trace id as a string, e.g. critical_path('0af7651916cd43dd8448eb211c80319c')"
                    .to_string(),
            )
        };
        let [Expr::Literal(value, _)] = args.exprs() else {
            return Err(usage());
        };
        let text = value.try_as_str().flatten().ok_or_else(usage)?;
        let trace_id = parse_trace_id(text).map_err(DataFusionError::Plan)?;
        Ok(Arc::new(CriticalPathTable {
            trace_id,
            origin: self.origin.clone(),
            spans: None,
        }))
    }
}

#[derive(Debug)]
pub(crate) struct CriticalPathTable {
    trace_id: String,
    origin: Option<TableOrigin>,
    /// The `spans` table to read, where the session has none (a Ballista
    /// scheduler's); else the session's own.
    spans: Option<Arc<dyn TableProvider>>,
}

impl CriticalPathTable {
    pub(crate) fn over(
        trace_id: String,
        origin: TableOrigin,
        spans: Arc<dyn TableProvider>,
    ) -> Self {
        Self {
            trace_id,
            origin: Some(origin),
            spans: Some(spans),
        }
    }

    pub(crate) fn trace_id(&self) -> &str {
        &self.trace_id
    }

    pub(crate) fn origin(&self) -> Option<&TableOrigin> {
        self.origin.as_ref()
    }
}

#[async_trait]
impl TableProvider for CriticalPathTable {
    fn schema(&self) -> SchemaRef {
        SCHEMA.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("critical_path needs weft's session".into())
            })?;
        // The spans come through the same `spans` table, flushed or not.
        let ctx = match &self.spans {
            // A context of its own: registering the table in the shared
            // session would race other plans over other tenants.
            Some(spans) => {
                let config = state
                    .config()
                    .clone()
                    .with_create_default_catalog_and_schema(true);
                let ctx = SessionContext::new_with_config_rt(config, state.runtime_env().clone());
                ctx.register_table("spans", spans.clone())?;
                ctx
            }
            None => SessionContext::new_with_state(state.clone()),
        };
        let batches = ctx
            .sql(&format!(
                "SELECT {SPAN_RECORD_COLUMNS} FROM spans WHERE trace_id = {}",
                sql_string(&self.trace_id)
            ))
            .await?
            .collect()
            .await?;
        let mut spans = Vec::new();
        for batch in &batches {
            let rows = span_records(batch).map_err(|e| DataFusionError::External(Box::new(e)))?;
            spans.extend(rows.into_iter().flatten());
        }
        let tree = TraceTree::new(spans);
        let batch = path_batch(&tree)?;
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            self.schema(),
            projection.cloned(),
        )?)
    }
}

fn path_batch(tree: &TraceTree) -> Result<RecordBatch> {
    let origin = tree.error_origin();
    let mut rows: Vec<(usize, i64)> = tree
        .critical_path()
        .into_iter()
        .map(|step| (step.span, step.self_ns))
        .collect();
    if let Some(origin) = origin.filter(|o| !rows.iter().any(|(span, _)| span == o)) {
        rows.push((origin, 0));
    }
    let start = tree.root().map_or(0, |r| tree.spans[r].start_ns);
    let span = |i: usize| &tree.spans[i];
    let columns: Vec<Arc<dyn arrow::array::Array>> = vec![
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(i, _)| span(*i).span_id.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(i, _)| span(*i).service.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            rows.iter().map(|(i, _)| span(*i).operation.as_str()),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(i, _)| span(*i).start_ns - start),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter()
                .map(|(i, _)| span(*i).end_ns - span(*i).start_ns),
        )),
        Arc::new(Int64Array::from_iter_values(
            rows.iter().map(|(_, self_ns)| *self_ns),
        )),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(i, _)| Some(Some(*i) == origin)),
        )),
    ];
    Ok(RecordBatch::try_new(SCHEMA.clone(), columns)?)
}
