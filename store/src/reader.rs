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
//! the data directory is this reader's own cache. The writers' WALs are on
//! their machines: given a [`LiveReader`] ([`StoreReader::with_live`]), a
//! snapshot asks each running writer for its segments and unflushed rows
//! instead ([`crate::live`]); a writer that does not answer counts with its
//! catalog's segments alone, and is asked again after [`LIVE_RETRY`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::record_batch::RecordBatch;
use parking_lot::Mutex;

use crate::catalog::{Catalog, SegmentEntry};
use crate::error::{Result, StoreError};
use crate::live::{LiveReader, TailCopy};
use crate::object_storage::{ObjectStorage, RemoteTable};
use crate::table::{Signal, TableSnapshot};
use crate::tenant::TenantId;
use crate::wal;

/// How often a snapshot starts over because flushes keep committing under it
/// before giving up; each flush takes far longer than one read of the tail.
const MAX_ATTEMPTS: usize = 8;

/// How long a reader over an object store uses the catalogs it listed
/// before listing them again.
const CATALOG_REFRESH: Duration = Duration::from_secs(1);

/// How long snapshots leave a live writer that did not answer alone.
const LIVE_RETRY: Duration = Duration::from_secs(5);

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

    /// Over an object store: asks each running writer of `tenant`'s tables
    /// for its unflushed rows through `live`.
    pub fn with_live(mut self, tenant: &TenantId, live: Arc<dyn LiveReader>) -> Self {
        for table in [&mut self.spans, &mut self.logs] {
            table.live = Some(LiveWriters {
                tenant: tenant.to_string(),
                reader: live.clone(),
                writers: Mutex::new(HashMap::new()),
            });
        }
        self
    }

    /// The table as of now: committed segments plus the acknowledged tail.
    pub fn snapshot(&self, signal: Signal) -> Result<TableSnapshot> {
        self.table(signal).snapshot()
    }

    /// The table's segment files, for a process that is told which
    /// segments to read rather than reading the catalogs (a Ballista
    /// executor): no segments listed and no rows, but
    /// [`TableSnapshot::fetch`] and [`TableSnapshot::segment_path`] work.
    pub fn files(&self, signal: Signal) -> TableSnapshot {
        let table = self.table(signal);
        TableSnapshot {
            dir: table.dir.clone(),
            segments: Vec::new(),
            unflushed: Vec::new(),
            remote: table.remote.as_ref().map(|r| r.table.clone()),
        }
    }

    fn table(&self, signal: Signal) -> &TableReader {
        match signal {
            Signal::Spans => &self.spans,
            Signal::Logs => &self.logs,
        }
    }
}

struct TableReader {
    signal: Signal,
    dir: PathBuf,
    /// Decoded records of the WAL files read so far, by sequence number.
    tail: Mutex<BTreeMap<u64, TailFile>>,
    remote: Option<RemoteCatalogs>,
    live: Option<LiveWriters>,
}

/// The running writers of one table, asked for their unflushed rows.
struct LiveWriters {
    tenant: String,
    reader: Arc<dyn LiveReader>,
    /// By the URL their catalogs name. One lock each, so a writer slow to
    /// answer holds up only the snapshots that wait for it.
    writers: Mutex<HashMap<String, Arc<Mutex<LiveWriter>>>>,
}

#[derive(Default)]
struct LiveWriter {
    copy: TailCopy,
    /// Set when the writer did not answer: not asked again before then.
    retry_at: Option<Instant>,
}

/// What asking a live writer gave.
enum LiveAnswer {
    /// Its segments and unflushed batches.
    Answered(Vec<SegmentEntry>, Vec<RecordBatch>),
    /// It did not answer just now.
    Failed,
    /// It did not answer lately and is not asked again yet.
    Resting,
}

impl LiveWriters {
    /// What the writer serving at `url` holds.
    fn read(&self, signal: Signal, url: &str) -> LiveAnswer {
        let writer = self
            .writers
            .lock()
            .entry(url.to_string())
            .or_default()
            .clone();
        let mut writer = writer.lock();
        if writer.retry_at.is_some_and(|at| Instant::now() < at) {
            return LiveAnswer::Resting;
        }
        let ticket = writer.copy.ticket(signal, &self.tenant);
        let answered = self.reader.read(url, &ticket).and_then(|tail| {
            let segments = tail.header.segments.clone();
            writer.copy.apply(tail).map(|()| segments)
        });
        match answered {
            Ok(segments) => {
                if writer.retry_at.take().is_some() {
                    tracing::info!(
                        table = signal.table_name(),
                        writer = url,
                        "a live writer answers again"
                    );
                }
                LiveAnswer::Answered(segments, writer.copy.batches().to_vec())
            }
            Err(e) => {
                if writer.retry_at.is_none() {
                    tracing::warn!(table = signal.table_name(), writer = url, error = %e, retry = ?LIVE_RETRY, "cannot read a live writer's unflushed rows; using its flushed segments alone");
                }
                writer.retry_at = Some(Instant::now() + LIVE_RETRY);
                LiveAnswer::Failed
            }
        }
    }

    /// Forgets the copies of writers no catalog names any more.
    fn keep_only(&self, urls: &[&str]) {
        self.writers
            .lock()
            .retain(|url, _| urls.contains(&url.as_str()));
    }
}

/// Every node's catalog of one table in an object store, as last listed.
struct RemoteCatalogs {
    table: RemoteTable,
    listed: Mutex<Option<(Instant, Vec<Catalog>)>>,
}

impl RemoteCatalogs {
    /// The catalogs, listed at most [`CATALOG_REFRESH`] ago (now, with `fresh`).
    fn catalogs(&self, fresh: bool) -> Result<Vec<Catalog>> {
        let mut listed = self.listed.lock();
        if let Some((at, catalogs)) = listed.as_ref() {
            if !fresh && at.elapsed() < CATALOG_REFRESH {
                return Ok(catalogs.clone());
            }
        }
        let catalogs = self.table.load_all_catalogs()?;
        *listed = Some((Instant::now(), catalogs.clone()));
        Ok(catalogs)
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
            live: None,
        }
    }

    fn snapshot(&self) -> Result<TableSnapshot> {
        if let Some(remote) = &self.remote {
            return self.remote_snapshot(remote);
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

    /// The union of every writer's segments, and the unflushed rows of those
    /// running and answering.
    fn remote_snapshot(&self, remote: &RemoteCatalogs) -> Result<TableSnapshot> {
        let mut catalogs = remote.catalogs(false)?;
        let (mut segments, mut unflushed, failed) = self.gather(&catalogs);
        if failed {
            // A writer that stops answering has usually just shut down
            // cleanly, after its last flush committed: its catalog in the
            // bucket names segments newer than the listing used here. (It is
            // not asked again for a while, so this lists once per failure.)
            catalogs = remote.catalogs(true)?;
            (segments, unflushed, _) = self.gather(&catalogs);
        }
        if let Some(live) = &self.live {
            let urls: Vec<&str> = catalogs.iter().filter_map(|c| c.live.as_deref()).collect();
            live.keep_only(&urls);
        }
        Ok(TableSnapshot {
            dir: self.dir.clone(),
            segments,
            unflushed,
            remote: Some(remote.table.clone()),
        })
    }

    /// The segments and unflushed rows of `catalogs`' writers, asking the
    /// live ones; says whether one of those failed to answer.
    fn gather(&self, catalogs: &[Catalog]) -> (Vec<SegmentEntry>, Vec<RecordBatch>, bool) {
        let mut segments = Vec::new();
        let mut unflushed = Vec::new();
        let mut failed = false;
        for catalog in catalogs {
            let answer = match (&self.live, &catalog.live) {
                (Some(live), Some(url)) => Some(live.read(self.signal, url)),
                _ => None,
            };
            match answer {
                Some(LiveAnswer::Answered(their_segments, batches)) => {
                    segments.extend(their_segments);
                    unflushed.extend(batches);
                }
                Some(LiveAnswer::Failed) => {
                    failed = true;
                    segments.extend(catalog.segments.iter().cloned());
                }
                Some(LiveAnswer::Resting) | None => {
                    segments.extend(catalog.segments.iter().cloned())
                }
            }
        }
        (segments, unflushed, failed)
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
                for batch in wal::decode_batches(self.signal, payload, &path)? {
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
