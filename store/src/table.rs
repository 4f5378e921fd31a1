//! A table: the write path of one signal, from acknowledged batch to segment.
//!
//! ```text
//! append ─► commit queue ─► WAL thread (write, one fdatasync per group) ─► active batches ─┐
//!                                                                                          │ freeze
//! flusher task ◄── size or age trigger ◄─────────────────────────────── frozen batches ◄───┘
//!   └─► sort ─► Parquet segment ─► tantivy index ─► catalog (commit point) ─► delete WAL files
//! ```
//!
//! The WAL thread is the only writer of the WAL and of the active batches, so
//! a freeze (rotate the WAL, move the active batches aside) cannot interleave
//! with an append. Readers see `catalog segments + frozen + active` under one
//! lock, so data is never missing or doubled across a flush.
//!
//! A compactor task per table merges small segments and drops expired ones
//! (see [`compaction`](crate::compaction)). Flushes and compactions both
//! change the catalog; they take turns on `commit_lock`, and each swaps the
//! catalog and the in-memory state under one write lock, so a reader sees a
//! merge's inputs or its output, never both. Files a compaction replaced stay
//! on disk for `deletion_grace`, because queries that took their snapshot
//! before the swap may still be reading them.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{oneshot, Notify, Semaphore};

use crate::catalog::{Catalog, SegmentEntry};
use crate::error::{IoContext, Result, StoreError};
use crate::live::{LiveHeader, LiveTail};
use crate::object_storage::{ObjectStorage, RemoteTable, SegmentPart};
use crate::orphans::OrphanSweep;
use crate::{background, compaction, index, object_storage, schema, segment, wal};

/// Merges running at once in the process, whatever the number of tables and
/// tenants: each holds up to `flush_bytes` of input in memory.
static MERGES: Semaphore = Semaphore::const_new(1);

/// The kinds of telemetry weft stores, one table each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Spans,
    Logs,
}

impl Signal {
    pub const ALL: [Signal; 2] = [Signal::Spans, Signal::Logs];

    /// The table's name, in SQL and on disk.
    pub fn table_name(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "logs",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Signal::Spans => schema::spans_schema(),
            Signal::Logs => schema::logs_schema(),
        }
    }
}

/// How the store buffers and flushes.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// Root of the data directory; each table lives in a subdirectory.
    pub data_dir: PathBuf,
    /// Flush a table at least this often when it holds unflushed data.
    pub flush_interval: Duration,
    /// Flush a table once this many bytes (Arrow memory) are unflushed.
    pub flush_bytes: usize,
    /// Refuse appends (the caller should retry later) while this many bytes
    /// wait to be flushed: the bound that keeps memory finite under overload.
    pub max_buffered_bytes: usize,
    /// Appends that may wait for the WAL thread before new ones are refused.
    pub commit_queue_len: usize,
    /// How often the compactor looks for segments to merge or expire.
    pub compaction_interval: Duration,
    /// Drop segments whose newest row is older than this; `None` keeps everything.
    pub retention: Option<Duration>,
    /// How long the files of a segment that compaction or retention removed
    /// stay on disk, for queries that started before; longer than any query runs.
    pub deletion_grace: Duration,
    /// Keep segments and catalogs in this object store, with the data
    /// directory holding the WAL and a cache; `None` keeps everything local.
    pub storage: Option<Arc<ObjectStorage>>,
    /// How much nicer than the process (0–19) merges, and flushes that keep
    /// up, run, so that they take the cores other work leaves (see
    /// [`crate::background`]); 0, the default, runs them as the process.
    pub background_nice: u8,
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            flush_interval: Duration::from_secs(30),
            flush_bytes: 128 * 1024 * 1024,
            max_buffered_bytes: 1024 * 1024 * 1024,
            commit_queue_len: 4096,
            compaction_interval: Duration::from_secs(60),
            retention: None,
            deletion_grace: Duration::from_secs(120),
            storage: None,
            background_nice: 0,
        }
    }
}

/// Counters of one table's write path, for `/metrics`.
#[derive(Debug, Default)]
pub struct TableStats {
    pub rows_appended: AtomicU64,
    pub wal_bytes: AtomicU64,
    pub wal_syncs: AtomicU64,
    pub wal_sync_nanos: AtomicU64,
    pub segments_written: AtomicU64,
    pub segment_rows: AtomicU64,
    pub segment_bytes: AtomicU64,
    pub flush_nanos: AtomicU64,
    pub flush_errors: AtomicU64,
    /// Merges committed, and the segments they replaced.
    pub compactions: AtomicU64,
    pub segments_merged: AtomicU64,
    pub compaction_nanos: AtomicU64,
    pub compaction_errors: AtomicU64,
    /// Segments dropped by retention.
    pub segments_expired: AtomicU64,
    /// Segments in the object store that no catalog named, deleted.
    pub orphans_deleted: AtomicU64,
}

/// What a reader sees of a table at one instant.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    /// The table's directory: segment `id` is `segments/{id}.parquet` in it.
    pub dir: PathBuf,
    pub segments: Vec<SegmentEntry>,
    /// Acknowledged batches not yet in a segment.
    pub unflushed: Vec<RecordBatch>,
    /// Where the segments are kept when not only in `dir`: read them after
    /// [`TableSnapshot::fetch`].
    pub remote: Option<RemoteTable>,
}

impl TableSnapshot {
    /// Brings `part` of segments `ids` into `dir` if they are in an object
    /// store and not cached; blocks while it downloads.
    pub fn fetch(&self, ids: &[&str], part: SegmentPart) -> Result<()> {
        self.remote.as_ref().map_or(Ok(()), |r| r.fetch(ids, part))
    }

    /// The Parquet file of segment `id`.
    pub fn segment_path(&self, id: &str) -> PathBuf {
        segment_path(&self.dir, id)
    }

    /// The full-text index directory of segment `id`.
    pub fn index_dir(&self, id: &str) -> PathBuf {
        index_dir(&self.dir, id)
    }
}

pub(crate) fn segment_path(table_dir: &Path, id: &str) -> PathBuf {
    table_dir.join("segments").join(format!("{id}.parquet"))
}

pub(crate) fn index_dir(table_dir: &Path, id: &str) -> PathBuf {
    table_dir.join("index").join(id)
}

/// Takes an exclusive lock on the file `name` in `dir`, held until the
/// returned file is dropped (or the process dies); another process that
/// asks for it gets [`StoreError::Locked`].
pub(crate) fn lock_exclusively(dir: &Path, name: &str) -> Result<fs::File> {
    let path = dir.join(name);
    let file = fs::File::create(&path).at(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked(dir.to_path_buf())),
        Err(fs::TryLockError::Error(e)) => Err(e).at(&path),
    }
}

/// Both tables of a data directory.
pub struct Store {
    spans: Table,
    logs: Table,
    /// An exclusive lock on `LOCK` in the data directory, held while the
    /// store is open: two processes appending to one WAL would corrupt it.
    _lock: fs::File,
}

impl Store {
    /// Opens (or creates) the store in `config.data_dir`, replaying each
    /// table's WAL. Must be called inside a Tokio runtime: each table starts
    /// its flusher task.
    pub fn open(config: StoreConfig) -> Result<Self> {
        fs::create_dir_all(&config.data_dir).at(&config.data_dir)?;
        let lock = lock_exclusively(&config.data_dir, "LOCK")?;
        Ok(Self {
            spans: Table::open(Signal::Spans, &config)?,
            logs: Table::open(Signal::Logs, &config)?,
            _lock: lock,
        })
    }

    pub fn table(&self, signal: Signal) -> &Table {
        match signal {
            Signal::Spans => &self.spans,
            Signal::Logs => &self.logs,
        }
    }

    /// Bytes the store's data takes: Parquet segments plus what waits in
    /// memory (and the WAL) to become one.
    pub fn stored_bytes(&self) -> u64 {
        [&self.spans, &self.logs]
            .iter()
            .map(|table| table.segment_bytes() + table.buffered_bytes() as u64)
            .sum()
    }

    /// Writes the catalogs again if where this process serves its unflushed
    /// rows ([`ObjectStorage::set_live_url`]) changed: readers elsewhere ask
    /// the address they name. Without an object store there is nothing to
    /// do. Blocks while the catalogs are written.
    pub fn advertise_live(&self) -> Result<()> {
        self.spans.advertise_live()?;
        self.logs.advertise_live()
    }

    /// Flushes everything to segments and stops both tables. Appends that
    /// arrive afterwards fail with [`StoreError::Closed`].
    pub async fn shutdown(&self) -> Result<()> {
        let (spans, logs) = tokio::join!(self.spans.shutdown(), self.logs.shutdown());
        spans.and(logs)
    }
}

/// One table's write path. Cheap to clone.
#[derive(Clone)]
pub struct Table {
    shared: Arc<Shared>,
    commits: SyncSender<Command>,
}

struct Shared {
    signal: Signal,
    dir: PathBuf,
    /// The object store side of the table, with `--storage`.
    remote: Option<RemoteTable>,
    /// Names this opening of the table: the numbers of unflushed batches
    /// that readers in other processes hold are valid within one run.
    run: String,
    config: StoreConfig,
    state: RwLock<State>,
    flush_wanted: Notify,
    /// Held for a whole flush, so two flushes never write the same frozen batches.
    flushing: tokio::sync::Mutex<()>,
    closing: Notify,
    flusher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    stop_compactor: Notify,
    compactor: Mutex<Option<tokio::task::JoinHandle<()>>>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Held while the catalog is read, changed, stored and installed.
    commit_lock: Mutex<()>,
    /// Segments no longer in the catalog whose files wait out `deletion_grace`.
    retired: Mutex<Vec<(Vec<String>, Instant)>>,
    /// Segments a merge could not read (another version's schema, a damaged
    /// file): left as they are until the next start.
    unmergeable: Mutex<HashSet<String>>,
    /// With an object store: files no catalog names, left by writers that died.
    orphans: Mutex<OrphanSweep>,
    stats: TableStats,
}

#[derive(Default)]
struct State {
    catalog: Catalog,
    active: Vec<RecordBatch>,
    active_bytes: usize,
    /// When the oldest active batch arrived.
    active_since: Option<Instant>,
    frozen: Vec<Frozen>,
    /// How many batches appended since the table opened are in segments:
    /// the number of the oldest unflushed batch (see [`crate::live`]).
    flushed_batches: u64,
}

impl State {
    fn buffered_bytes(&self) -> usize {
        self.active_bytes + self.frozen.iter().map(|f| f.bytes).sum::<usize>()
    }
}

/// Batches moved aside by a freeze, waiting to become a segment.
#[derive(Clone)]
struct Frozen {
    batches: Vec<RecordBatch>,
    bytes: usize,
    /// Every WAL file up to this one holds only these batches (and older, flushed ones).
    up_to_wal_seq: u64,
}

enum Command {
    Append {
        batch: RecordBatch,
        /// The export request `batch` was converted from, which the WAL
        /// keeps instead of the batch when there is one.
        request: Option<Bytes>,
        done: oneshot::Sender<Result<()>>,
    },
    Freeze {
        done: oneshot::Sender<()>,
    },
    Stop,
}

impl Table {
    fn open(signal: Signal, config: &StoreConfig) -> Result<Self> {
        let dir = config.data_dir.join(signal.table_name());
        for sub in ["wal", "segments", "index"] {
            let path = dir.join(sub);
            fs::create_dir_all(&path).at(&path)?;
        }
        let remote = config.storage.as_ref().map(|storage| storage.table(&dir));
        let catalog = match &remote {
            Some(remote) => open_remote_catalog(remote, &dir)?,
            None => Catalog::load(&dir)?,
        };
        remove_orphans(&dir, &catalog)?;
        if let Some(remote) = &remote {
            let ids: Vec<&str> = catalog.segments.iter().map(|s| s.id.as_str()).collect();
            remote.adopt_local(&ids);
        }
        let (active, next_seq) = replay_wal(signal, &dir.join("wal"), catalog.flushed_wal_seq)?;
        let active_bytes = active.iter().map(|b| b.get_array_memory_size()).sum();
        let wal = wal::WalWriter::create(&dir.join("wal"), next_seq)?;
        let shared = Arc::new(Shared {
            signal,
            dir,
            remote,
            run: uuid::Uuid::new_v4().simple().to_string(),
            config: config.clone(),
            state: RwLock::new(State {
                catalog,
                active_since: (!active.is_empty()).then(Instant::now),
                active,
                active_bytes,
                frozen: Vec::new(),
                flushed_batches: 0,
            }),
            flush_wanted: Notify::new(),
            flushing: tokio::sync::Mutex::new(()),
            closing: Notify::new(),
            flusher: Mutex::new(None),
            stop_compactor: Notify::new(),
            compactor: Mutex::new(None),
            writer: Mutex::new(None),
            commit_lock: Mutex::new(()),
            retired: Mutex::new(Vec::new()),
            unmergeable: Mutex::new(HashSet::new()),
            orphans: Mutex::new(OrphanSweep::default()),
            stats: TableStats::default(),
        });
        let (commits, queue) = mpsc::sync_channel(config.commit_queue_len);
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name(format!("weft-wal-{}", signal.table_name()))
                .spawn(move || run_wal_writer(&shared, wal, queue))
                .at("thread")?
        };
        *shared.writer.lock() = Some(writer);
        let table = Self { shared, commits };
        let flusher = tokio::spawn(table.clone().run_flusher());
        *table.shared.flusher.lock() = Some(flusher);
        let compactor = tokio::spawn(table.clone().run_compactor());
        *table.shared.compactor.lock() = Some(compactor);
        // A tenant first written to after start-up opens with the address known.
        table.advertise_live()?;
        Ok(table)
    }

    /// Makes `batch` durable: returns once it is in the WAL and fsync'd, and
    /// from then on visible in [`Table::snapshot`].
    ///
    /// Fails fast with [`StoreError::Overloaded`] when too much data waits to
    /// be flushed or the commit queue is full, so callers can push back.
    pub async fn append(&self, batch: RecordBatch) -> Result<()> {
        self.append_logged(batch, None).await
    }

    /// Makes `batch`, converted from the export request `request`, durable as
    /// [`Table::append`] does, with the WAL keeping the request rather than
    /// the rows: it is already encoded and smaller, and replay converts it
    /// again. `batch` must be what [`convert::from_protobuf`](crate::convert::from_protobuf)
    /// made of `request` for this table's signal.
    pub async fn append_request(&self, request: Bytes, batch: RecordBatch) -> Result<()> {
        self.append_logged(batch, Some(request)).await
    }

    async fn append_logged(&self, batch: RecordBatch, request: Option<Bytes>) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.refuse_if_behind()?;
        let (done, acked) = oneshot::channel();
        let append = Command::Append {
            batch,
            request,
            done,
        };
        match self.commits.try_send(append) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                return Err(StoreError::Overloaded(format!(
                    "the {} WAL commit queue is full",
                    self.shared.signal.table_name()
                )))
            }
            Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        acked.await.map_err(|_| StoreError::Closed)?
    }

    /// Fails with [`StoreError::Overloaded`] while more than
    /// `max_buffered_bytes` wait to be flushed. [`Table::append`] checks this
    /// itself; a caller that has work to do before appending (decoding a
    /// request) checks first, so a request that would be refused costs no
    /// more than reading it.
    pub fn refuse_if_behind(&self) -> Result<()> {
        let buffered = self.shared.state.read().buffered_bytes();
        if buffered > self.shared.config.max_buffered_bytes {
            self.shared.flush_wanted.notify_one();
            return Err(StoreError::Overloaded(format!(
                "{} bytes of {} wait to be flushed (limit {})",
                buffered,
                self.shared.signal.table_name(),
                self.shared.config.max_buffered_bytes
            )));
        }
        Ok(())
    }

    /// The table as a reader sees it now: flushed segments plus unflushed batches.
    pub fn snapshot(&self) -> TableSnapshot {
        let state = self.shared.state.read();
        let unflushed = state
            .frozen
            .iter()
            .flat_map(|f| f.batches.iter())
            .chain(state.active.iter())
            .cloned()
            .collect();
        TableSnapshot {
            dir: self.shared.dir.clone(),
            segments: state.catalog.segments.clone(),
            unflushed,
            remote: self.shared.remote.clone(),
        }
    }

    /// The table for a reader in another process that holds the unflushed
    /// batches before number `next` of `run` (see [`crate::live`]): the
    /// segments and the unflushed batches it lacks, taken at one instant.
    pub fn live_tail(&self, run: Option<&str>, next: u64) -> LiveTail {
        let state = self.shared.state.read();
        let first = state.flushed_batches;
        let unflushed = state
            .frozen
            .iter()
            .flat_map(|f| f.batches.iter())
            .chain(state.active.iter());
        let end = first + unflushed.clone().count() as u64;
        let from = match run {
            Some(run) if run == self.shared.run => next.clamp(first, end),
            _ => first,
        };
        LiveTail {
            header: LiveHeader {
                run: self.shared.run.clone(),
                first,
                from,
                segments: state.catalog.segments.clone(),
            },
            batches: unflushed.skip((from - first) as usize).cloned().collect(),
        }
    }

    /// Commits the catalog again if where this process serves its unflushed
    /// rows ([`ObjectStorage::live_url`]) changed since it was last written.
    fn advertise_live(&self) -> Result<()> {
        let Some(remote) = &self.shared.remote else {
            return Ok(());
        };
        if self.shared.state.read().catalog.live == remote.live_url() {
            return Ok(());
        }
        commit_catalog(&self.shared, |_| {}, |_| {})
    }

    pub fn stats(&self) -> &TableStats {
        &self.shared.stats
    }

    /// Bytes of acknowledged data not yet in a segment.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.state.read().buffered_bytes()
    }

    /// Bytes of the Parquet segments in the catalog.
    pub fn segment_bytes(&self) -> u64 {
        self.shared
            .state
            .read()
            .catalog
            .segments
            .iter()
            .map(|s| s.bytes)
            .sum()
    }

    /// Segments in the catalog.
    pub fn segment_count(&self) -> usize {
        self.shared.state.read().catalog.segments.len()
    }

    /// Writes everything acknowledged so far into a segment now.
    pub async fn flush(&self) -> Result<()> {
        self.flush_at(Priority::Now).await
    }

    async fn flush_at(&self, priority: Priority) -> Result<()> {
        let _flushing = self.shared.flushing.lock().await;
        let (done, frozen) = oneshot::channel();
        self.send_command(Command::Freeze { done }).await?;
        frozen.await.map_err(|_| StoreError::Closed)?;
        self.flush_frozen(priority).await
    }

    /// Queues a command for the WAL thread, waiting (without blocking the
    /// runtime) while the queue is full.
    async fn send_command(&self, mut command: Command) -> Result<()> {
        loop {
            match self.commits.try_send(command) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(back)) => {
                    command = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(TrySendError::Disconnected(_)) => return Err(StoreError::Closed),
            }
        }
    }

    async fn shutdown(&self) -> Result<()> {
        self.shared.closing.notify_one();
        self.shared.stop_compactor.notify_one();
        let flusher = self.shared.flusher.lock().take();
        if let Some(flusher) = flusher {
            let _ = flusher.await;
        }
        let compactor = self.shared.compactor.lock().take();
        if let Some(compactor) = compactor {
            let _ = compactor.await;
        }
        let mut result = self.flush().await;
        if result.is_ok() {
            // The flush's commit carried the address already, unless there
            // was nothing left to flush.
            let table = self.clone();
            result = tokio::task::spawn_blocking(move || table.advertise_live())
                .await
                .unwrap_or_else(|e| Err(StoreError::Live(e.to_string())));
        }
        // Every query here has finished by now, so replaced files go; but
        // queriers elsewhere may still read them from the object store until
        // their grace is over, so there they are left to the orphan sweep
        // (any writer's, or this node's next run).
        if self.shared.remote.is_some() {
            delete_retired(&self.shared, self.shared.config.deletion_grace);
            for (ids, _) in self.shared.retired.lock().drain(..) {
                for id in ids {
                    object_storage::remove_local_files(&self.shared.dir, &id);
                }
            }
        } else {
            delete_retired(&self.shared, Duration::ZERO);
        }
        let _ = self.send_command(Command::Stop).await;
        let writer = self.shared.writer.lock().take();
        if let Some(writer) = writer {
            let _ = tokio::task::spawn_blocking(move || writer.join()).await;
        }
        result
    }

    async fn run_flusher(self) {
        let interval = self.shared.config.flush_interval;
        loop {
            let wait = {
                let state = self.shared.state.read();
                state
                    .active_since
                    .map_or(interval, |since| interval.saturating_sub(since.elapsed()))
            };
            tokio::select! {
                _ = self.shared.closing.notified() => return,
                _ = self.shared.flush_wanted.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
            let due = {
                let state = self.shared.state.read();
                state.active_bytes >= self.shared.config.flush_bytes
                    || state.active_since.is_some_and(|t| t.elapsed() >= interval)
                    || !state.frozen.is_empty()
            };
            if due {
                if let Err(e) = self.flush_at(Priority::Background).await {
                    self.shared
                        .stats
                        .flush_errors
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::error!(table = self.shared.signal.table_name(), error = %e, "flush failed; the data stays in the WAL and the flush will be retried");
                    tokio::select! {
                        _ = self.shared.closing.notified() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    /// Turns every frozen group into a segment, oldest first. A background
    /// flush runs nicer unless the next one is already due (another group is
    /// frozen, or half a flush's worth is buffered behind it).
    async fn flush_frozen(&self, priority: Priority) -> Result<()> {
        loop {
            let (frozen, behind) = {
                let state = self.shared.state.read();
                let behind = state.frozen.len() > 1
                    || state.active_bytes >= self.shared.config.flush_bytes / 2;
                (state.frozen.first().cloned(), behind)
            };
            let Some(frozen) = frozen else {
                return Ok(());
            };
            let nice = match priority {
                Priority::Background if !behind => self.shared.config.background_nice,
                _ => 0,
            };
            let shared = self.shared.clone();
            let up_to = frozen.up_to_wal_seq;
            background::run("weft-flush", nice, move || write_frozen(&shared, frozen))
                .await
                .map_err(|source| StoreError::Io {
                    path: self.shared.dir.clone(),
                    source,
                })??;
            delete_wal_up_to(&self.shared.dir.join("wal"), up_to)?;
        }
    }
}

/// Whether a flush may yield the cores to the request path.
#[derive(Clone, Copy)]
enum Priority {
    /// Asked for (a shutdown, an API call): at the process's priority.
    Now,
    /// The flusher's own: nicer while the flushes keep up.
    Background,
}

/// Writes one frozen group as a segment and commits it to the catalog.
fn write_frozen(shared: &Shared, frozen: Frozen) -> Result<()> {
    let started = Instant::now();
    let signal = shared.signal;
    let mut written = None;
    if !frozen.batches.is_empty() {
        let sorted = segment::sort_for_locality(signal, &frozen.batches)?;
        let entry = write_sorted(shared, &sorted, frozen.bytes as u64, started)?;
        let stats = &shared.stats;
        stats.segments_written.fetch_add(1, Ordering::Relaxed);
        stats.segment_rows.fetch_add(entry.rows, Ordering::Relaxed);
        stats
            .segment_bytes
            .fetch_add(entry.bytes, Ordering::Relaxed);
        written = Some(entry);
    }
    commit_catalog(
        shared,
        |catalog| {
            catalog.segments.extend(written);
            catalog.flushed_wal_seq = frozen.up_to_wal_seq;
        },
        |state| {
            let flushed = state.frozen.remove(0);
            state.flushed_batches += flushed.batches.len() as u64;
        },
    )?;
    shared
        .stats
        .flush_nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    Ok(())
}

/// Writes `sorted` as a new segment, its Parquet file and its index at once
/// (they only read `sorted`, and the flush is what pushes back on ingest),
/// and returns its catalog entry. The segment is not part of the table until
/// a catalog names it.
fn write_sorted(
    shared: &Shared,
    sorted: &RecordBatch,
    arrow_bytes: u64,
    started: Instant,
) -> Result<SegmentEntry> {
    let signal = shared.signal;
    let sorted_at = Instant::now();
    let id = uuid::Uuid::now_v7().simple().to_string();
    let (parquet, index) = std::thread::scope(|scope| {
        let index_dir = index_dir(&shared.dir, &id);
        let index = scope.spawn(move || {
            index::build_index(signal, sorted, &index_dir).map(|()| sorted_at.elapsed())
        });
        let parquet = segment::write_segment(signal, sorted, &segment_path(&shared.dir, &id))
            .map(|written| (written, sorted_at.elapsed()));
        let index = index
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (parquet, index)
    });
    let result = parquet.and_then(|(written, parquet_took)| {
        let index_took = index?;
        if let Some(remote) = &shared.remote {
            remote.upload_segment(&id)?;
        }
        tracing::info!(
            table = signal.table_name(),
            segment = %id,
            rows = written.rows,
            bytes = written.bytes,
            sort_ms = (sorted_at - started).as_millis() as u64,
            parquet_ms = parquet_took.as_millis() as u64,
            index_ms = index_took.as_millis() as u64,
            "segment written"
        );
        Ok(written)
    });
    let written = match result {
        Ok(written) => written,
        Err(e) => {
            shared.remove_segment(&id);
            return Err(e);
        }
    };
    Ok(SegmentEntry {
        id,
        rows: written.rows,
        bytes: written.bytes,
        arrow_bytes,
        min_time_ns: written.min_time_ns,
        max_time_ns: written.max_time_ns,
        services: written.services,
    })
}

/// Changes the catalog: `change` edits a copy, which is stored durably and
/// then installed together with `then`'s change to the in-memory state, under
/// one write lock so readers see both or neither.
fn commit_catalog(
    shared: &Shared,
    change: impl FnOnce(&mut Catalog),
    then: impl FnOnce(&mut State),
) -> Result<()> {
    let _turn = shared.commit_lock.lock();
    let mut catalog = shared.state.read().catalog.clone();
    change(&mut catalog);
    match &shared.remote {
        Some(remote) => {
            catalog.live = remote.live_url();
            remote.store_own_catalog(&catalog)?;
        }
        None => catalog.store(&shared.dir)?,
    }
    let mut state = shared.state.write();
    state.catalog = catalog;
    then(&mut state);
    Ok(())
}

impl Table {
    /// Every `compaction_interval`: expires and merges segments, and deletes
    /// the files of replaced segments once their grace is over.
    async fn run_compactor(self) {
        loop {
            tokio::select! {
                _ = self.shared.stop_compactor.notified() => return,
                _ = tokio::time::sleep(self.shared.config.compaction_interval) => {}
            }
            let Ok(permit) = MERGES.acquire().await else {
                return;
            };
            let shared = self.shared.clone();
            let nice = shared.config.background_nice;
            let round = background::run("weft-compact", nice, move || {
                let _permit = permit;
                compaction_round(&shared);
            });
            if let Err(e) = round.await {
                tracing::error!(table = self.shared.signal.table_name(), error = %e, "compaction round panicked");
            }
        }
    }
}

/// One round of the compactor. A merge's failure leaves its inputs as they
/// were; the next round tries again.
fn compaction_round(shared: &Shared) {
    let table = shared.signal.table_name();
    if let Err(e) = expire(shared) {
        tracing::error!(table, error = %e, "retention could not drop expired segments; will retry");
    }
    // One merge per round: a backlog drains over the following rounds while
    // flushes and other tables get their turn.
    let plan = compaction::plan_merge(
        &shared.state.read().catalog.segments,
        shared.config.flush_bytes as u64,
        &shared.unmergeable.lock(),
    );
    if let Some(inputs) = plan {
        if let Err(e) = merge(shared, &inputs) {
            shared
                .stats
                .compaction_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(table, error = %e, "merging segments failed; they stay as they are");
        }
    }
    delete_retired(shared, shared.config.deletion_grace);
    if let Err(e) = sweep_orphans(shared) {
        tracing::warn!(table, error = %e, "could not look for segments no catalog names; will retry");
    }
}

/// Deletes the segments in the object store that no node's catalog has
/// named for a while (see [`crate::orphans`]). Every writer sweeps, at most
/// every deletion grace and every ten compaction rounds: a listing of the
/// table's Parquet files and a read of the catalogs.
fn sweep_orphans(shared: &Shared) -> Result<()> {
    let Some(remote) = &shared.remote else {
        return Ok(());
    };
    let config = &shared.config;
    let every = config.deletion_grace.max(config.compaction_interval * 10);
    if !shared.orphans.lock().due(every, Instant::now()) {
        return Ok(());
    }
    // Listed before the catalogs are read: a segment committed in between is
    // then named, never taken for an orphan.
    let stored = remote.list_stored_segments()?;
    let mut named: HashSet<String> = remote
        .load_all_catalogs()?
        .into_iter()
        .flat_map(|catalog| catalog.segments.into_iter().map(|s| s.id))
        .collect();
    named.extend(
        shared
            .state
            .read()
            .catalog
            .segments
            .iter()
            .map(|s| s.id.clone()),
    );
    // Ours to delete when their grace is over.
    named.extend(
        shared
            .retired
            .lock()
            .iter()
            .flat_map(|(ids, _)| ids.iter().cloned()),
    );
    let orphans = shared.orphans.lock().sweep(
        stored,
        &named,
        config.deletion_grace,
        Instant::now(),
        SystemTime::now(),
    );
    for id in &orphans {
        tracing::info!(table = shared.signal.table_name(), segment = %id, "deleting a segment no catalog has named for the deletion grace");
        shared.remove_segment(id);
        shared.stats.orphans_deleted.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Drops the segments retention has expired.
fn expire(shared: &Shared) -> Result<()> {
    let Some(retention) = shared.config.retention else {
        return Ok(());
    };
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let expired = compaction::expired(&shared.state.read().catalog.segments, retention, now_ns);
    if expired.is_empty() {
        return Ok(());
    }
    let ids: Vec<String> = expired.into_iter().map(|s| s.id).collect();
    commit_catalog(
        shared,
        |catalog| catalog.segments.retain(|s| !ids.contains(&s.id)),
        |_| {},
    )?;
    shared
        .stats
        .segments_expired
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    tracing::info!(table = shared.signal.table_name(), segments = ids.len(), retention = ?retention, "dropped segments older than the retention period");
    shared.retired.lock().push((ids, Instant::now()));
    Ok(())
}

/// Merges `inputs` into one segment and commits it in their place.
fn merge(shared: &Shared, inputs: &[SegmentEntry]) -> Result<()> {
    let started = Instant::now();
    let signal = shared.signal;
    if let Some(remote) = &shared.remote {
        let ids: Vec<&str> = inputs.iter().map(|s| s.id.as_str()).collect();
        remote.fetch(&ids, SegmentPart::Parquet)?;
    }
    let batches = compaction::read_segments(signal, inputs, |id| segment_path(&shared.dir, id))
        .inspect_err(|_| {
            shared
                .unmergeable
                .lock()
                .extend(inputs.iter().map(|s| s.id.clone()));
        })?;
    let arrow_bytes = batches
        .iter()
        .map(|b| b.get_array_memory_size() as u64)
        .sum();
    let sorted = segment::sort_for_locality(signal, &batches)?;
    drop(batches);
    let merged = write_sorted(shared, &sorted, arrow_bytes, started)?;
    let ids: Vec<String> = inputs.iter().map(|s| s.id.clone()).collect();
    let merged_id = merged.id.clone();
    let committed = commit_catalog(
        shared,
        |catalog| {
            // Only this task removes segments, so every input is still there.
            let at = catalog
                .segments
                .iter()
                .position(|s| s.id == ids[0])
                .unwrap_or(catalog.segments.len());
            catalog.segments.retain(|s| !ids.contains(&s.id));
            catalog
                .segments
                .insert(at.min(catalog.segments.len()), merged);
        },
        |_| {},
    );
    if let Err(e) = committed {
        shared.remove_segment(&merged_id);
        return Err(e);
    }
    let stats = &shared.stats;
    stats.compactions.fetch_add(1, Ordering::Relaxed);
    stats
        .segments_merged
        .fetch_add(ids.len() as u64, Ordering::Relaxed);
    stats
        .compaction_nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    tracing::info!(table = signal.table_name(), segments = ids.len(), into = %merged_id, ms = started.elapsed().as_millis() as u64, "merged segments");
    shared.retired.lock().push((ids, Instant::now()));
    Ok(())
}

/// Deletes the files of segments retired at least `grace` ago.
fn delete_retired(shared: &Shared, grace: Duration) {
    let due: Vec<String> = {
        let mut retired = shared.retired.lock();
        let (due, waiting) = retired
            .drain(..)
            .partition::<Vec<_>, _>(|(_, at)| at.elapsed() >= grace);
        *retired = waiting;
        due.into_iter().flat_map(|(ids, _)| ids).collect()
    };
    for id in &due {
        shared.remove_segment(id);
    }
}

impl Shared {
    /// Deletes a segment's Parquet file and index, logging what could not be:
    /// local files the catalog does not name are removed at the next start
    /// anyway.
    fn remove_segment(&self, id: &str) {
        object_storage::remove_local_files(&self.dir, id);
        if let Some(remote) = &self.remote {
            if let Err(e) = remote.delete_segment(id) {
                tracing::warn!(segment = id, error = %e, "could not delete a replaced segment from the object store");
            }
        }
    }
}

/// This node's catalog of a table kept in an object store. A data directory
/// that kept its segments locally until now moves them there first.
fn open_remote_catalog(remote: &RemoteTable, dir: &Path) -> Result<Catalog> {
    if let Some(catalog) = remote.load_own_catalog()? {
        if Catalog::exists(dir) {
            // A move to the object store that stopped after its commit.
            Catalog::remove(dir)?;
        }
        return Ok(catalog);
    }
    if !Catalog::exists(dir) {
        return Ok(Catalog::default());
    }
    let catalog = Catalog::load(dir)?;
    for segment in &catalog.segments {
        remote.upload_segment(&segment.id)?;
    }
    remote.store_own_catalog(&catalog)?;
    Catalog::remove(dir)?;
    tracing::info!(
        table = %dir.display(),
        segments = catalog.segments.len(),
        to = ?remote,
        "moved the table's segments to the object store"
    );
    Ok(catalog)
}

/// The WAL thread: group commit. It takes every command waiting in the queue,
/// writes all their records, fsyncs once, and only then acknowledges them.
fn run_wal_writer(shared: &Shared, mut wal: wal::WalWriter, queue: Receiver<Command>) {
    /// Stop gathering a group at this many bytes, so one fsync never waits on too much.
    const MAX_GROUP_BYTES: usize = 64 * 1024 * 1024;
    let mut group = Group::default();
    while let Ok(first) = queue.recv() {
        let mut next = Some(first);
        while let Some(command) = next.take() {
            match command {
                Command::Append {
                    batch,
                    request,
                    done,
                } => group.add(batch, request.as_deref(), done),
                Command::Freeze { done } => {
                    group.commit(shared, &mut wal);
                    freeze(shared, &mut wal);
                    let _ = done.send(());
                }
                Command::Stop => {
                    group.commit(shared, &mut wal);
                    return;
                }
            }
            if group.framed.len() < MAX_GROUP_BYTES {
                next = queue.try_recv().ok();
            }
        }
        group.commit(shared, &mut wal);
    }
}

#[derive(Default)]
struct Group {
    framed: Vec<u8>,
    batches: Vec<(RecordBatch, oneshot::Sender<Result<()>>)>,
}

impl Group {
    fn add(
        &mut self,
        batch: RecordBatch,
        request: Option<&[u8]>,
        done: oneshot::Sender<Result<()>>,
    ) {
        let framed = match request {
            Some(request) => wal::append_request_record(request, &mut self.framed),
            None => wal::append_record(&batch, &mut self.framed),
        };
        match framed {
            Ok(()) => self.batches.push((batch, done)),
            Err(e) => {
                let _ = done.send(Err(e));
            }
        }
    }

    fn commit(&mut self, shared: &Shared, wal: &mut wal::WalWriter) {
        if self.batches.is_empty() {
            return;
        }
        let started = Instant::now();
        let written = wal.write_durable(&self.framed);
        let stats = &shared.stats;
        stats.wal_syncs.fetch_add(1, Ordering::Relaxed);
        stats
            .wal_sync_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        match written {
            Ok(()) => {
                stats
                    .wal_bytes
                    .fetch_add(self.framed.len() as u64, Ordering::Relaxed);
                let mut state = shared.state.write();
                for (batch, _) in &self.batches {
                    stats
                        .rows_appended
                        .fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    state.active_bytes += batch.get_array_memory_size();
                    state.active.push(batch.clone());
                }
                // The first unflushed batch starts the flush interval: wake the
                // flusher so it sleeps until then rather than a whole interval.
                let first = state.active_since.is_none();
                state.active_since.get_or_insert_with(Instant::now);
                let wake_flusher = first || state.active_bytes >= shared.config.flush_bytes;
                drop(state);
                for (_, done) in self.batches.drain(..) {
                    let _ = done.send(Ok(()));
                }
                if wake_flusher {
                    shared.flush_wanted.notify_one();
                }
            }
            Err(e) => {
                tracing::error!(table = shared.signal.table_name(), error = %e, "WAL write failed; the requests in this group are refused");
                let path = shared.dir.join("wal").join(wal::file_name(wal.seq()));
                for (_, done) in self.batches.drain(..) {
                    let _ = done.send(Err(StoreError::Io {
                        path: path.clone(),
                        source: std::io::Error::new(e.kind(), e.to_string()),
                    }));
                }
                // The failed write may have left part of a record behind: later
                // records go to a fresh file so none sits after a torn one.
                if let Err(e) = wal.rotate() {
                    tracing::error!(error = %e, "could not start a new WAL file");
                }
            }
        }
        self.framed.clear();
    }
}

/// Moves the active batches aside and rotates the WAL, so the files up to the
/// current one hold exactly what is now frozen.
fn freeze(shared: &Shared, wal: &mut wal::WalWriter) {
    let mut state = shared.state.write();
    if state.active.is_empty() {
        return;
    }
    let up_to_wal_seq = wal.seq();
    if let Err(e) = wal.rotate() {
        tracing::error!(error = %e, "could not rotate the WAL; the flush waits for the next try");
        return;
    }
    let batches = std::mem::take(&mut state.active);
    let bytes = std::mem::take(&mut state.active_bytes);
    state.active_since = None;
    state.frozen.push(Frozen {
        batches,
        bytes,
        up_to_wal_seq,
    });
}

/// Reads back every WAL file not yet in a segment. Returns the batches and the
/// sequence number for the next WAL file.
fn replay_wal(signal: Signal, dir: &Path, flushed_seq: u64) -> Result<(Vec<RecordBatch>, u64)> {
    let mut batches = Vec::new();
    let mut next_seq = flushed_seq + 1;
    let files = wal::list_files(dir)?;
    for (seq, path) in &files {
        next_seq = next_seq.max(seq + 1);
        if *seq <= flushed_seq {
            fs::remove_file(path).at(path)?;
            continue;
        }
        let contents = wal::read_file(path)?;
        for payload in &contents.payloads {
            for batch in wal::decode_batches(signal, payload, path)? {
                if batch.schema() != signal.schema() {
                    return Err(StoreError::Io {
                        path: path.clone(),
                        source: std::io::Error::other(
                            "WAL record does not have this version's table schema",
                        ),
                    });
                }
                batches.push(batch);
            }
        }
        if let Some(good) = contents.torn_at {
            tracing::warn!(
                file = %path.display(),
                kept_records = contents.payloads.len(),
                skipped_bytes = contents.len - good,
                "WAL file has a torn or corrupt tail (an unacknowledged write cut short); keeping the records before it"
            );
            fs::OpenOptions::new()
                .write(true)
                .open(path)
                .and_then(|f| {
                    f.set_len(good)?;
                    f.sync_all()
                })
                .at(path)?;
        }
    }
    if !batches.is_empty() {
        tracing::info!(
            table = signal.table_name(),
            files = files.len(),
            rows = batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            "replayed WAL"
        );
    }
    Ok((batches, next_seq))
}

fn delete_wal_up_to(dir: &Path, up_to: u64) -> Result<()> {
    for (seq, path) in wal::list_files(dir)? {
        if seq <= up_to {
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Deletes segment files and index directories the catalog does not name:
/// what an interrupted flush left behind.
fn remove_orphans(dir: &Path, catalog: &Catalog) -> Result<()> {
    let known: std::collections::HashSet<&str> =
        catalog.segments.iter().map(|s| s.id.as_str()).collect();
    for (id, path) in local_segment_files(dir)? {
        if !known.contains(id.as_str()) {
            tracing::info!(path = %path.display(), "removing leftover of an interrupted flush");
            remove_path(&path)?;
        }
    }
    Ok(())
}

/// Every Parquet file and index directory (or leftover of one) in a table
/// directory, with the segment id its name gives.
pub(crate) fn local_segment_files(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let mut files = Vec::new();
    for sub in ["segments", "index"] {
        let sub_dir = dir.join(sub);
        for entry in fs::read_dir(&sub_dir).at(&sub_dir)? {
            let path = entry.at(&sub_dir)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let id = name.strip_suffix(".parquet").unwrap_or(name).to_string();
            files.push((id, path));
        }
    }
    Ok(files)
}

/// Deletes a file, or a directory with everything in it.
pub(crate) fn remove_path(path: &Path) -> Result<()> {
    if path.is_dir() {
        fs::remove_dir_all(path).at(path)
    } else {
        fs::remove_file(path).at(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::test_spans;

    fn rows(snapshot: &TableSnapshot) -> (u64, usize) {
        let flushed = snapshot.segments.iter().map(|s| s.rows).sum();
        let unflushed = snapshot.unflushed.iter().map(|b| b.num_rows()).sum();
        (flushed, unflushed)
    }

    #[tokio::test]
    async fn readers_see_every_acknowledged_row_once_before_and_after_a_flush() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let spans = store.table(Signal::Spans);
        spans.append(test_spans(1, 3)).await.unwrap();
        assert_eq!(rows(&spans.snapshot()), (0, 3));
        spans.flush().await.unwrap();
        assert_eq!(rows(&spans.snapshot()), (3, 0));
        spans.append(test_spans(10, 2)).await.unwrap();
        assert_eq!(rows(&spans.snapshot()), (3, 2));
        store.shutdown().await.unwrap();
        drop(store);

        // Reopened, the catalog has both flushes and the WAL nothing to replay.
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let snapshot = store.table(Signal::Spans).snapshot();
        assert_eq!(rows(&snapshot), (5, 0));
        assert_eq!(snapshot.segments.len(), 2);
        store.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn rows_logged_as_their_request_are_replayed_after_a_crash() {
        use crate::convert::test_spans_request;
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let spans = store.table(Signal::Spans);
        let request = Bytes::from(test_spans_request(1, 3));
        let converted = crate::convert::from_protobuf(Signal::Spans, &request).unwrap();
        spans
            .append_request(request, converted.batch)
            .await
            .unwrap();
        spans.append(test_spans(10, 2)).await.unwrap();
        // No shutdown: nothing is flushed, the WAL is all there is.
        drop(store);

        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let snapshot = store.table(Signal::Spans).snapshot();
        assert_eq!(
            snapshot.unflushed,
            vec![test_spans(1, 3), test_spans(10, 2)]
        );
        store.shutdown().await.unwrap();
    }

    fn parquet_files(dir: &Path) -> usize {
        fs::read_dir(dir.join("spans").join("segments"))
            .unwrap()
            .filter(|e| {
                let path = e.as_ref().unwrap().path();
                path.extension().is_some_and(|e| e == "parquet")
            })
            .count()
    }

    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        for _ in 0..1000 {
            if done() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    #[tokio::test]
    async fn small_segments_are_merged_and_readers_see_every_row_once_throughout() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            compaction_interval: Duration::from_millis(20),
            deletion_grace: Duration::from_secs(3600),
            ..StoreConfig::new(dir.path())
        };
        let store = Store::open(config.clone()).unwrap();
        let spans = store.table(Signal::Spans);
        for i in 0..12 {
            spans.append(test_spans(i * 2 + 1, 2)).await.unwrap();
            spans.flush().await.unwrap();
        }
        until("a merge", || {
            let snapshot = spans.snapshot();
            assert_eq!(rows(&snapshot), (24, 0), "a row went missing or doubled");
            snapshot.segments.len() == 3
        })
        .await;
        let merged = &spans.snapshot().segments[0];
        assert_eq!(merged.rows, 20);
        assert!(merged.arrow_bytes > 0);
        assert_eq!(spans.stats().segments_merged.load(Ordering::Relaxed), 10);
        // Replaced files wait out their grace for queries still reading them.
        assert_eq!(parquet_files(dir.path()), 13);

        store.shutdown().await.unwrap();
        drop(store);
        assert_eq!(
            parquet_files(dir.path()),
            3,
            "shutdown deletes replaced files"
        );
        let store = Store::open(config).unwrap();
        let snapshot = store.table(Signal::Spans).snapshot();
        assert_eq!(rows(&snapshot), (24, 0));
        assert_eq!(snapshot.segments.len(), 3);
        store.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn nicer_background_flushes_and_merges_still_land_every_row_once() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            flush_interval: Duration::from_millis(20),
            compaction_interval: Duration::from_millis(20),
            deletion_grace: Duration::from_secs(3600),
            background_nice: 10,
            ..StoreConfig::new(dir.path())
        };
        let store = Store::open(config).unwrap();
        let spans = store.table(Signal::Spans);
        for i in 0..10 {
            spans.append(test_spans(i * 2 + 1, 2)).await.unwrap();
            // Flushed by the table's own (background) flusher.
            let stored = 2 * (u64::from(i) + 1);
            until("a background flush", || {
                rows(&spans.snapshot()) == (stored, 0)
            })
            .await;
        }
        until("a merge", || {
            let snapshot = spans.snapshot();
            assert_eq!(rows(&snapshot), (20, 0), "a row went missing or doubled");
            snapshot.segments.len() == 1
        })
        .await;
        store.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn retention_drops_segments_whose_rows_are_all_older_and_deletes_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            compaction_interval: Duration::from_millis(20),
            retention: Some(Duration::from_secs(3600)),
            deletion_grace: Duration::ZERO,
            ..StoreConfig::new(dir.path())
        };
        let store = Store::open(config).unwrap();
        let spans = store.table(Signal::Spans);
        // Test spans start at the epoch: long expired.
        spans.append(test_spans(1, 3)).await.unwrap();
        spans.flush().await.unwrap();
        until("retention", || spans.segment_count() == 0).await;
        // The compactor deletes the Parquet file, then the index directory.
        let index_dirs = || dir.path().join("spans/index").read_dir().unwrap().count();
        until("the files' deletion", || {
            parquet_files(dir.path()) == 0 && index_dirs() == 0
        })
        .await;
        assert_eq!(spans.stats().segments_expired.load(Ordering::Relaxed), 1);
        store.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn a_data_directory_is_opened_by_one_store_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(StoreConfig::new(dir.path())).unwrap();
        let second = Store::open(StoreConfig::new(dir.path()));
        assert!(matches!(second, Err(StoreError::Locked(_))));
        store.shutdown().await.unwrap();
        drop(store);
        Store::open(StoreConfig::new(dir.path())).unwrap();
    }

    #[tokio::test]
    async fn appends_are_refused_while_too_much_waits_to_be_flushed() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            max_buffered_bytes: 1,
            ..StoreConfig::new(dir.path())
        };
        let store = Store::open(config).unwrap();
        let spans = store.table(Signal::Spans);
        spans.refuse_if_behind().unwrap();
        spans.append(test_spans(1, 1)).await.unwrap();
        let refused = spans.append(test_spans(2, 1)).await.unwrap_err();
        assert!(matches!(refused, StoreError::Overloaded(_)), "{refused}");
        // What the collector asks before it decodes a request.
        let behind = spans.refuse_if_behind().unwrap_err();
        assert!(matches!(behind, StoreError::Overloaded(_)), "{behind}");
        spans.flush().await.unwrap();
        spans.refuse_if_behind().unwrap();
        spans.append(test_spans(2, 1)).await.unwrap();
        store.shutdown().await.unwrap();
    }
}
