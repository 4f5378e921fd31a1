//! weft's on-disk format and the write path that fills it.
//!
//! A [`Store`] holds two [`Table`]s, `spans` and `logs`. Each table takes OTLP
//! requests already converted to Arrow (see [`convert`]), makes them durable in
//! a write-ahead log ([`wal`]) with group commit, keeps them in memory until
//! they are flushed, and then writes them out as a sorted, zstd-compressed
//! Parquet segment ([`segment`]) with a tantivy full-text index beside it
//! ([`index`]). The [`catalog`] lists the segments that exist and is the commit
//! point of every flush: a segment is part of the table once the catalog names
//! it, and only then is the WAL behind it deleted. A compactor merges small
//! segments and drops the ones retention has expired ([`compaction`]),
//! committing through the catalog the same way.
//!
//! This crate is not a query engine: it hands readers a consistent
//! [`TableSnapshot`] (flushed segments plus not-yet-flushed batches) and leaves
//! SQL to `query/`. A [`StoreReader`] gives the same snapshots of a data
//! directory that another process writes, or of an object store that
//! several do, asking each running writer for its unflushed rows ([`live`]).
//! Receivers, protocol details and
//! HTTP live in `collector/`.

mod background;
pub mod catalog;
pub mod compaction;
pub mod convert;
mod error;
pub mod index;
pub mod live;
pub mod object_storage;
mod orphans;
mod parallel;
mod reader;
mod reorder;
pub mod schema;
pub mod segment;
mod table;
pub mod tenant;
pub mod trace_filter;
pub mod wal;

pub use error::{Result, StoreError};
pub use object_storage::ObjectStorage;
pub use reader::StoreReader;
pub use table::{Signal, Store, StoreConfig, Table, TableSnapshot, TableStats};
pub use tenant::{TenantId, TenantStores};
