//! The catalog: which segments make up a table, and how much of the WAL they cover.
//!
//! It is a small JSON file, `catalog.json`, replaced atomically (written to a
//! temporary file, fsync'd, renamed over the old one, directory fsync'd).
//! Writing it is the commit point of a flush: segment files it does not name
//! are leftovers of an interrupted flush and are deleted at start-up, and WAL
//! files up to `flushed_wal_seq` are already in segments and are not replayed.
//! A compaction commits the same way: one replace swaps its inputs for the
//! merged segment.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result, StoreError};

const FILE_NAME: &str = "catalog.json";
const FORMAT_VERSION: u32 = 1;

/// One Parquet segment and its full-text index.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SegmentEntry {
    /// The segment's id: its file is `segments/{id}.parquet`, its index `index/{id}/`.
    pub id: String,
    pub rows: u64,
    /// Size of the Parquet file.
    pub bytes: u64,
    /// Size of its rows in memory (Arrow), which bounds what merging it
    /// costs; 0 in catalogs written before it was recorded.
    #[serde(default)]
    pub arrow_bytes: u64,
    /// Earliest and latest row time (span start or log time), ns since the epoch.
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    /// The distinct `service_name`s in the segment, sorted.
    pub services: Vec<String>,
}

/// The persistent state of one table.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Catalog {
    pub version: u32,
    /// Every WAL file with a sequence number up to this one is in a segment.
    pub flushed_wal_seq: u64,
    pub segments: Vec<SegmentEntry>,
    /// In an object store: where the writing process serves the rows it has
    /// not flushed yet (Arrow Flight, see [`crate::live`]) while it runs.
    /// Cleared by a clean shutdown, which flushes everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<String>,
}

impl Default for Catalog {
    fn default() -> Self {
        Self {
            version: FORMAT_VERSION,
            flushed_wal_seq: 0,
            segments: Vec::new(),
            live: None,
        }
    }
}

impl Catalog {
    fn path(table_dir: &Path) -> PathBuf {
        table_dir.join(FILE_NAME)
    }

    /// Loads the catalog of the table in `table_dir`, or an empty one for a new table.
    pub fn load(table_dir: &Path) -> Result<Self> {
        let path = Self::path(table_dir);
        match fs::read(&path) {
            Ok(bytes) => Self::parse(&bytes, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e).at(&path),
        }
    }

    /// Whether the table in `table_dir` has a catalog file.
    pub fn exists(table_dir: &Path) -> bool {
        Self::path(table_dir).exists()
    }

    /// Reads a catalog from its JSON; `path` names where it came from in errors.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Self> {
        let catalog: Catalog =
            serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptCatalog {
                path: path.to_path_buf(),
                reason: e.to_string(),
            })?;
        if catalog.version != FORMAT_VERSION {
            return Err(StoreError::CorruptCatalog {
                path: path.to_path_buf(),
                reason: format!(
                    "format version {} is not supported (expected {FORMAT_VERSION})",
                    catalog.version
                ),
            });
        }
        Ok(catalog)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("catalog serializes")
    }

    /// Replaces the table's catalog with `self`, atomically and durably.
    pub fn store(&self, table_dir: &Path) -> Result<()> {
        write_durably(&Self::path(table_dir), &self.to_json())
    }

    /// Deletes the table's catalog file (once the catalog lives elsewhere).
    pub fn remove(table_dir: &Path) -> Result<()> {
        let path = Self::path(table_dir);
        fs::remove_file(&path).at(&path)?;
        crate::wal::sync_dir(table_dir)
    }
}

/// Creates (or truncates) the file at `path` with `bytes` and fsyncs it; for
/// a file whose directory is made visible by a rename of its own.
pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = fs::File::create(path).at(path)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .at(path)
}

/// Replaces the file at `path` with `bytes` atomically and durably: written
/// to a temporary file, fsync'd, renamed over the old one, directory fsync'd.
pub(crate) fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    write_synced(&tmp, bytes)?;
    fs::rename(&tmp, path).at(path)?;
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::wal::sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_catalog_loads_back_and_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Catalog::load(dir.path()).unwrap(), Catalog::default());
        let catalog = Catalog {
            flushed_wal_seq: 7,
            segments: vec![SegmentEntry {
                id: "abc".into(),
                rows: 3,
                bytes: 100,
                arrow_bytes: 800,
                min_time_ns: 1,
                max_time_ns: 2,
                services: vec!["crm-mobile".into()],
            }],
            ..Default::default()
        };
        catalog.store(dir.path()).unwrap();
        assert_eq!(Catalog::load(dir.path()).unwrap(), catalog);
    }

    #[test]
    fn a_corrupt_catalog_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(FILE_NAME), b"{not json").unwrap();
        let err = Catalog::load(dir.path()).unwrap_err().to_string();
        assert!(err.contains("catalog.json"), "{err}");
    }
}
