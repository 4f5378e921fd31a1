use std::path::PathBuf;

/// Everything that can go wrong while storing data.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("Parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("full-text index error: {0}")]
    Index(#[from] tantivy::TantivyError),
    #[error("full-text index file {path} is corrupt: {reason}")]
    CorruptIndex { path: PathBuf, reason: String },
    #[error("catalog {path} is corrupt: {reason}")]
    CorruptCatalog { path: PathBuf, reason: String },
    /// Too much data is waiting to be flushed; the caller should retry later.
    #[error("store is overloaded: {0}")]
    Overloaded(String),
    /// Another process has the data directory open.
    #[error("data directory {0} is in use by another weft process")]
    Locked(PathBuf),
    /// `--storage` names no object store weft can use.
    #[error("storage {url} cannot be used: {reason}")]
    InvalidStorage { url: String, reason: String },
    #[error("object storage {url}: {source}")]
    ObjectStore {
        url: String,
        #[source]
        source: object_store::Error,
    },
    /// Another process replaced this node's catalog: two processes write as
    /// one node (a copied data directory, or two sharing one).
    #[error("catalog {0} was replaced by another process writing as this node; give each writing process its own data directory")]
    CatalogConflict(PathBuf),
    /// The store is shutting down or its writer has stopped.
    /// A running writer's unflushed rows could not be read (see `live`).
    #[error("unflushed rows of a live writer: {0}")]
    Live(String),
    #[error("store is closed")]
    Closed,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Attaches the path to an `io::Error`, so every I/O failure says where it happened.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| StoreError::Io {
            path: path.into(),
            source,
        })
    }
}
