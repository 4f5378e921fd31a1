//! A read-only view of a data directory that another process writes.
//!
//! `weft query` runs apart from `weft collector` over the same directory. It
//! must see new segments as the collector's flushes commit them, and the
//! acknowledged data not yet flushed, without taking the directory's `LOCK`.
//! A [`StoreReader`] builds a [`TableSnapshot`] from the catalog (the flushed
//! segments) and the WAL files the catalog does not yet cover (the tail).
//!
//! A flush commits by replacing the catalog and only then deletes the WAL
//! files it covered. So a snapshot reads the catalog, then the WAL files newer
//! than it, then the catalog again: if a flush committed in between, the WAL
//! files read may already be in a segment, and the snapshot starts over. What
//! it returns never misses or doubles a row.
//!
//! WAL files are only ever appended to, so the records decoded from them are
//! kept, and each snapshot reads only what was appended since the last one.
//!
//! Over an object store ([`StoreReader::with_storage`]) the table is the
//! union of every writing node's catalog, re-read at most once a second, and
//! the data directory is this reader's own cache: the writers' WALs are on
//! their machines, so a reader sees what they have flushed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::catalog::{Catalog, SegmentEntry};
use crate::error::{Result, StoreError};
use crate::object_storage::{ObjectStorage, RemoteTable};
use crate::table::{Signal, TableSnapshot};
use crate::wal;

/// How often a snapshot starts over because flushes keep committing under it
/// before giving up; each flush takes far longer than one read of the tail.
const MAX_ATTEMPTS: usize = 8;

/// How long a reader over an object store uses the catalogs it listed
/// before listing them again.
const CATALOG_REFRESH: Duration = Duration::from_secs(1);

/// Read-only access to both tables of a data directory.
pub struct StoreReader {
    spans: TableReader,
    logs: TableReader,
}

impl StoreReader {
    /// A reader of the data directory `data_dir`. The directory need not
    /// exist yet: until a writer creates it, the tables are empty.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        let data_dir = data_dir.into();
        Self {
            spans: TableReader::new(Signal::Spans, &data_dir, None),
            logs: TableReader::new(Signal::Logs, &data_dir, None),
        }
    }

    /// A reader of the tables `storage` keeps for the data directory
    /// `data_dir` (a tenant's directory below the storage's own), which
    /// caches the segments queries read.
    pub fn with_storage(data_dir: impl Into<PathBuf>, storage: &Arc<ObjectStorage>) -> Self {
        let data_dir = data_dir.into();
        Self {
            spans: TableReader::new(Signal::Spans, &data_dir, Some(storage)),
            logs: TableReader::new(Signal::Logs, &data_dir, Some(storage)),
        }
    }

    /// The table as of now: committed segments plus the acknowledged tail.
    pub fn snapshot(&self, signal: Signal) -> Result<TableSnapshot> {
        match signal {
            Signal::Spans => self.spans.snapshot(),
            Signal::Logs => self.logs.snapshot(),
        }
    }
}

struct TableReader {
    signal: Signal,
    dir: PathBuf,
    /// Decoded records of the WAL files read so far, by sequence number.
    tail: Mutex<BTreeMap<u64, TailFile>>,
    remote: Option<RemoteCatalogs>,
}

/// Every node's catalog of one table in an object store, as last listed.
struct RemoteCatalogs {
    table: RemoteTable,
    listed: Mutex<Option<(Instant, Vec<SegmentEntry>)>>,
}

impl RemoteCatalogs {
    fn segments(&self) -> Result<Vec<SegmentEntry>> {
        let mut listed = self.listed.lock();
        if let Some((at, segments)) = listed.as_ref() {
            if at.elapsed() < CATALOG_REFRESH {
                return Ok(segments.clone());
            }
        }
        let segments: Vec<SegmentEntry> = self
            .table
            .load_all_catalogs()?
            .into_iter()
            .flat_map(|catalog| catalog.segments)
            .collect();
        *listed = Some((Instant::now(), segments.clone()));
        Ok(segments)
    }
}

#[derive(Default)]
struct TailFile {
    /// Where the intact records read so far end.
    read_up_to: u64,
    batches: Vec<RecordBatch>,
}

impl TableReader {
    fn new(signal: Signal, data_dir: &Path, storage: Option<&Arc<ObjectStorage>>) -> Self {
        let dir = data_dir.join(signal.table_name());
        Self {
            signal,
            remote: storage.map(|storage| {
                let table = storage.table(&dir);
                table.adopt_cache_dir();
                RemoteCatalogs {
                    table,
                    listed: Mutex::new(None),
                }
            }),
            dir,
            tail: Mutex::new(BTreeMap::new()),
        }
    }

    fn snapshot(&self) -> Result<TableSnapshot> {
        if let Some(remote) = &self.remote {
            return Ok(TableSnapshot {
                dir: self.dir.clone(),
                segments: remote.segments()?,
                unflushed: Vec::new(),
                remote: Some(remote.table.clone()),
            });
        }
        let mut tail = self.tail.lock();
        for _ in 0..MAX_ATTEMPTS {
            let catalog = Catalog::load(&self.dir)?;
            let read = self.read_tail(&mut tail, catalog.flushed_wal_seq);
            let again = Catalog::load(&self.dir)?;
            if again.flushed_wal_seq != catalog.flushed_wal_seq {
                continue;
            }
            // A WAL file that vanished without a flush committing is lost
            // data, not a race: report it.
            read?;
            return Ok(TableSnapshot {
                dir: self.dir.clone(),
                segments: catalog.segments,
                unflushed: tail.values().flat_map(|f| f.batches.clone()).collect(),
                remote: None,
            });
        }
        Err(StoreError::Overloaded(format!(
            "the {} catalog changed {MAX_ATTEMPTS} times while its WAL was being read",
            self.signal.table_name()
        )))
    }

    /// Brings `tail` up to date with the WAL files after `flushed_seq`.
    fn read_tail(&self, tail: &mut BTreeMap<u64, TailFile>, flushed_seq: u64) -> Result<()> {
        let wal_dir = self.dir.join("wal");
        let files = match wal::list_files(&wal_dir) {
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                Vec::new()
            }
            files => files?,
        };
        tail.retain(|seq, _| *seq > flushed_seq && files.iter().any(|(s, _)| s == seq));
        for (seq, path) in files.into_iter().filter(|(seq, _)| *seq > flushed_seq) {
            let file = tail.entry(seq).or_default();
            let contents = wal::read_file_from(&path, file.read_up_to)?;
            for payload in &contents.payloads {
                for batch in wal::decode_batches(payload)? {
                    if batch.schema() == self.signal.schema() {
                        file.batches.push(batch);
                    }
                }
            }
            file.read_up_to = contents.torn_at.unwrap_or(contents.len);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::test_spans;
    use crate::table::{Store, StoreConfig};

    fn rows(snapshot: &TableSnapshot) -> (u64, usize) {
        let segment_rows = snapshot.segments.iter().map(|s| s.rows).sum();
        let tail_rows = snapshot.unflushed.iter().map(RecordBatch::num_rows).sum();
        (segment_rows, tail_rows)
    }

    #[tokio::test]
    async fn a_reader_sees_the_tail_then_the_segment_never_both() {
        let dir = tempfile::tempdir().unwrap();
        let reader = StoreReader::new(dir.path());
        let snapshot = || rows(&reader.snapshot(Signal::Spans).unwrap());
        assert_eq!(snapshot(), (0, 0));

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let spans = store.table(Signal::Spans);
        spans.append(test_spans(1, 3)).await.unwrap();
        assert_eq!(snapshot(), (0, 3));
        spans.append(test_spans(10, 2)).await.unwrap();
        assert_eq!(snapshot(), (0, 5));

        spans.flush().await.unwrap();
        assert_eq!(snapshot(), (5, 0));
        spans.append(test_spans(20, 1)).await.unwrap();
        assert_eq!(snapshot(), (5, 1));
        store.shutdown().await.unwrap();
        assert_eq!(snapshot(), (6, 0));
    }
}
