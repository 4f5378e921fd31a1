//! weft's query side: SQL, search and the HTTP API over the store.
//!
//! [`QueryEngine`] is a DataFusion session with two tables, `spans` and
//! `logs` ([`provider`]), each a view of the store's flushed Parquet segments
//! plus the acknowledged data not yet flushed, and the `text_match` function
//! ([`text_match`]) that answers full-text predicates from the segments'
//! tantivy indexes. Everything else is SQL over those tables: the HTTP API
//! ([`api`]: `/api/v1/*` and the Jaeger query API) builds its answers as SQL
//! and shapes the rows; `weft sql` sends SQL to it or runs it on a data
//! directory directly.
//!
//! Each tenant has an engine of its own over its own data ([`QueryEngines`]);
//! the API picks it by the tenant the request was authenticated to.
//!
//! This crate never writes: ingest and flushing belong to `collector/` and
//! `store/`. It reads the store through a [`SnapshotSource`], either the
//! [`weft_store::Store`] of the same process or a [`weft_store::StoreReader`]
//! over a directory another process writes, or an object store several do
//! (asking their running collectors for unflushed rows with [`live`]).

pub mod analysis;
pub mod api;
pub mod distributed;
mod engine;
pub mod format;
pub mod live;
pub mod provider;
pub mod text_match;

pub use engine::{
    ClusterConfig, QueryConfig, QueryEngine, QueryEngines, QueryError, QueryResult, TenantSources,
};
pub use provider::{SnapshotSource, TableOrigin};
