//! Segments in an object store (S3, GCS, Azure Blob or a `file://` tree), with
//! the local data directory as a bounded cache of them.
//!
//! With `--storage <url>` the WAL stays on local disk, so acknowledgements
//! stay fast and durable; a flush writes the segment's Parquet file and index
//! locally as always, uploads them, and then commits by writing the catalog
//! to the object store. The layout below the URL's prefix mirrors a data
//! directory's:
//!
//! ```text
//! [tenants/<tenant>/]spans/segments/<id>.parquet
//!                          index/<id>/<tantivy files, trace-id filter>
//!                          catalogs/<node>.json
//! ```
//!
//! Every writing process (a *node*, named in `node-id` in its data directory
//! so that its WAL and its catalog stay together) has a catalog of its own:
//! writers never contend, each compacts and expires only its own segments,
//! and a reader's table is the union of every node's catalog. A catalog is
//! replaced with a conditional put (the version it read must still be there,
//! as Delta Lake and Iceberg commit), so a second process writing as the same
//! node fails instead of overwriting the first one's commits. While a writer
//! runs, its catalogs also name where it serves the rows it has not flushed
//! yet ([`ObjectStorage::set_live_url`], read by [`crate::live`]).
//!
//! Readers need segments as local files (DataFusion's Parquet reader, tantivy,
//! the trace-id filters all read the data directory), so a query first
//! fetches the files it is about to read. Fetched and written segments share
//! a cache bounded by `cache_bytes`, evicting the least recently used ones;
//! a segment used in the last `keep_for` is never evicted, because a running
//! query may still be reading it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    ObjectMeta, ObjectStore, ObjectStoreExt, ObjectStoreScheme, PutMode, PutOptions, PutPayload,
    UpdateVersion,
};
use parking_lot::Mutex;
use tokio::io::AsyncWriteExt;

use crate::catalog::Catalog;
use crate::error::{IoContext, Result, StoreError};
use crate::trace_filter;

/// The file in the data directory that names this node.
const NODE_ID_FILE: &str = "node-id";

/// The file in the data directory locked by the process whose cache it is.
const CACHE_LOCK_FILE: &str = "CACHE.LOCK";

/// `cache_bytes` unless configured: what a querier keeps of a bucket.
pub const DEFAULT_CACHE_BYTES: u64 = 10 * 1024 * 1024 * 1024;

/// The file of a tantivy index that makes it whole.
const INDEX_META: &str = "meta.json";

/// Downloads and uploads running at once for one batch of segments.
const CONCURRENT_TRANSFERS: usize = 8;

/// An object store holding the segments and catalogs of a data directory's
/// tables, and the cache of them on local disk. Shared by every table and
/// tenant of a process.
pub struct ObjectStorage {
    url: String,
    store: Arc<dyn ObjectStore>,
    root: ObjectPath,
    local_root: PathBuf,
    node: String,
    /// Where this process serves its unflushed rows, written into its catalogs.
    live_url: Mutex<Option<String>>,
    /// Object store requests run here, whatever thread asks: the store's
    /// callers are synchronous (flushes, merges, planning a scan).
    io: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
    cache_bytes: u64,
    keep_for: Duration,
    cache: Mutex<CacheState>,
    /// An exclusive lock on `CACHE.LOCK` in the data directory: two
    /// processes sharing one cache would evict the files the other reads.
    _cache_lock: std::fs::File,
}

#[derive(Default)]
struct CacheState {
    /// Segments with files in the data directory: (table dir, id) → entry.
    segments: HashMap<(PathBuf, String), CachedSegment>,
    bytes: u64,
}

struct CachedSegment {
    bytes: u64,
    last_used: Instant,
}

impl fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("url", &self.url)
            .field("node", &self.node)
            .finish()
    }
}

impl Drop for ObjectStorage {
    fn drop(&mut self) {
        // Dropping a runtime waits for its threads, which is not allowed in
        // an async context, where the last store may well be dropped.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl ObjectStorage {
    /// Connects to the object store at `url` (`s3://bucket/prefix`, `gs://…`,
    /// `az://…`, `file:///path`; credentials and endpoints from the usual
    /// `AWS_*`, `GOOGLE_*` and `AZURE_*` variables) and checks that it can be
    /// listed. `local_root` is the data directory: it holds the WAL, the node
    /// id and the cache.
    pub fn open(
        url: &str,
        local_root: &Path,
        cache_bytes: u64,
        keep_for: Duration,
    ) -> Result<Arc<Self>> {
        let (store, root) = connect(url)?;
        std::fs::create_dir_all(local_root).at(local_root)?;
        let cache_lock = crate::table::lock_exclusively(local_root, CACHE_LOCK_FILE)?;
        let node = node_id(local_root)?;
        // Built last: a runtime dropped by an early return would panic when
        // this is called from async code, as the binary does.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("weft-object-store")
            .enable_all()
            .build()
            .at("object store I/O threads")?;
        let storage = Self {
            url: url.to_string(),
            store,
            root,
            node,
            live_url: Mutex::new(None),
            local_root: local_root.to_path_buf(),
            io: runtime.handle().clone(),
            runtime: Some(runtime),
            cache_bytes,
            keep_for,
            cache: Mutex::default(),
            _cache_lock: cache_lock,
        };
        // Fail at start, naming the URL, rather than at the first flush.
        let (store, root) = (storage.store.clone(), storage.root.clone());
        storage
            .wait(async move { store.list_with_delimiter(Some(&root)).await.map(drop) })
            .map_err(|e| storage.error(e))?;
        Ok(Arc::new(storage))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The name of this process's catalogs.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Where this process serves its unflushed rows (an Arrow Flight URL),
    /// or `None` once it no longer does. Catalogs committed from now on
    /// carry it (see [`crate::Store::advertise_live`]).
    pub fn set_live_url(&self, url: Option<String>) {
        *self.live_url.lock() = url;
    }

    pub fn live_url(&self) -> Option<String> {
        self.live_url.lock().clone()
    }

    /// The object store side of the table in the local directory `table_dir`
    /// (a table directory below this storage's data directory).
    pub fn table(self: &Arc<Self>, table_dir: &Path) -> RemoteTable {
        let relative = table_dir
            .strip_prefix(&self.local_root)
            .unwrap_or(table_dir);
        let prefix = relative
            .components()
            .filter_map(|c| c.as_os_str().to_str())
            .fold(self.root.clone(), |path, part| path.join(part));
        RemoteTable {
            storage: self.clone(),
            prefix,
            dir: table_dir.to_path_buf(),
            version: Arc::new(Mutex::new(None)),
        }
    }

    /// Runs `request` on the object store's threads and waits for it.
    fn wait<T: Send + 'static>(
        &self,
        request: impl Future<Output = object_store::Result<T>> + Send + 'static,
    ) -> object_store::Result<T> {
        let (done, result) = std::sync::mpsc::sync_channel(1);
        self.io.spawn(async move {
            let _ = done.send(request.await);
        });
        result.recv().unwrap_or_else(|_| {
            Err(object_store::Error::Generic {
                store: "weft",
                source: "the object store's I/O threads have stopped".into(),
            })
        })
    }

    fn error(&self, source: object_store::Error) -> StoreError {
        StoreError::ObjectStore {
            url: self.url.clone(),
            source,
        }
    }

    /// Notes that a segment's files are in the data directory and in use now,
    /// then evicts what the cache no longer has room for.
    fn cached(&self, dir: &Path, id: &str, bytes: u64) {
        let evicted = {
            let mut cache = self.cache.lock();
            let key = (dir.to_path_buf(), id.to_string());
            let previous = cache.segments.insert(
                key,
                CachedSegment {
                    bytes,
                    last_used: Instant::now(),
                },
            );
            cache.bytes = cache.bytes + bytes - previous.map_or(0, |p| p.bytes);
            self.evict(&mut cache)
        };
        remove_evicted(evicted);
    }

    /// Evicts what the cache has no room for (segments become evictable as
    /// their last use ages, not only when new ones arrive).
    fn trim(&self) {
        let evicted = self.evict(&mut self.cache.lock());
        remove_evicted(evicted);
    }

    /// Marks a cached segment as used now; false if it is not cached.
    fn touch(&self, dir: &Path, id: &str) -> bool {
        let mut cache = self.cache.lock();
        match cache.segments.get_mut(&(dir.to_path_buf(), id.to_string())) {
            Some(entry) => {
                entry.last_used = Instant::now();
                true
            }
            None => false,
        }
    }

    fn forget(&self, dir: &Path, id: &str) {
        let mut cache = self.cache.lock();
        if let Some(entry) = cache.segments.remove(&(dir.to_path_buf(), id.to_string())) {
            cache.bytes -= entry.bytes;
        }
    }

    /// The least recently used segments to delete until the cache fits,
    /// sparing those a query may still be reading.
    fn evict(&self, cache: &mut CacheState) -> Vec<(PathBuf, String)> {
        if cache.bytes <= self.cache_bytes {
            return Vec::new();
        }
        let mut candidates: Vec<_> = cache
            .segments
            .iter()
            .filter(|(_, entry)| entry.last_used.elapsed() >= self.keep_for)
            .map(|(key, entry)| (entry.last_used, key.clone()))
            .collect();
        candidates.sort_unstable_by_key(|(last_used, _)| *last_used);
        let mut evicted = Vec::new();
        for (_, key) in candidates {
            if cache.bytes <= self.cache_bytes {
                break;
            }
            if let Some(entry) = cache.segments.remove(&key) {
                cache.bytes -= entry.bytes;
                evicted.push(key);
            }
        }
        evicted
    }
}

fn remove_evicted(evicted: Vec<(PathBuf, String)>) {
    for (dir, id) in evicted {
        tracing::debug!(table = %dir.display(), segment = %id, "evicted from the cache");
        remove_local_files(&dir, &id);
    }
}

/// Builds the object store for `url` and the prefix inside it.
fn connect(url: &str) -> Result<(Arc<dyn ObjectStore>, ObjectPath)> {
    let invalid = |reason: String| StoreError::InvalidStorage {
        url: url.to_string(),
        reason,
    };
    let parsed = url::Url::parse(url).map_err(|e| invalid(e.to_string()))?;
    let (scheme, root) = ObjectStoreScheme::parse(&parsed).map_err(|e| invalid(e.to_string()))?;
    let built: object_store::Result<Arc<dyn ObjectStore>> = match scheme {
        ObjectStoreScheme::Local => {
            let path = parsed
                .to_file_path()
                .map_err(|()| invalid("not an absolute file path".into()))?;
            std::fs::create_dir_all(&path).at(&path)?;
            // Object stores have no directories: leave none behind.
            let store = object_store::local::LocalFileSystem::new().with_automatic_cleanup(true);
            return Ok((Arc::new(store), root));
        }
        // Gone with the process, after the WAL behind it was deleted: only
        // for this crate's tests.
        ObjectStoreScheme::Memory if cfg!(test) => {
            Ok(Arc::new(object_store::memory::InMemory::new()))
        }
        ObjectStoreScheme::AmazonS3 => object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .build()
            .map(|s| Arc::new(s) as _),
        ObjectStoreScheme::GoogleCloudStorage => {
            object_store::gcp::GoogleCloudStorageBuilder::from_env()
                .with_url(url)
                .build()
                .map(|s| Arc::new(s) as _)
        }
        ObjectStoreScheme::MicrosoftAzure => object_store::azure::MicrosoftAzureBuilder::from_env()
            .with_url(url)
            .build()
            .map(|s| Arc::new(s) as _),
        other => {
            return Err(invalid(format!(
                "{other:?} is not supported: use s3://, gs://, az:// or file://"
            )))
        }
    };
    built
        .map(|store| (store, root))
        .map_err(|e| invalid(e.to_string()))
}

/// This node's name, made up on first start and kept in the data directory.
fn node_id(local_root: &Path) -> Result<String> {
    let path = local_root.join(NODE_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).at(&path),
    }
    let id = uuid::Uuid::now_v7().simple().to_string();
    crate::catalog::write_durably(&path, id.as_bytes())?;
    Ok(id)
}

/// One table's segments and catalogs in the object store.
#[derive(Clone)]
pub struct RemoteTable {
    storage: Arc<ObjectStorage>,
    prefix: ObjectPath,
    dir: PathBuf,
    /// The version of this node's catalog last read or written: the
    /// condition of the next write.
    version: Arc<Mutex<Option<UpdateVersion>>>,
}

impl fmt::Debug for RemoteTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.storage.url, self.prefix)
    }
}

impl RemoteTable {
    fn catalog_path(&self, node: &str) -> ObjectPath {
        self.prefix
            .clone()
            .join("catalogs")
            .join(format!("{node}.json"))
    }

    fn parquet_path(&self, id: &str) -> ObjectPath {
        self.prefix
            .clone()
            .join("segments")
            .join(format!("{id}.parquet"))
    }

    fn index_prefix(&self, id: &str) -> ObjectPath {
        self.prefix.clone().join("index").join(id)
    }

    fn local_parquet(&self, id: &str) -> PathBuf {
        crate::table::segment_path(&self.dir, id)
    }

    fn local_index(&self, id: &str) -> PathBuf {
        crate::table::index_dir(&self.dir, id)
    }

    /// Where this process serves its unflushed rows, for its catalogs.
    pub fn live_url(&self) -> Option<String> {
        self.storage.live_url()
    }

    /// This node's catalog of the table, if it has one yet.
    pub fn load_own_catalog(&self) -> Result<Option<Catalog>> {
        let path = self.catalog_path(&self.storage.node);
        let store = self.storage.store.clone();
        let described = self.describe(&path);
        let loaded = self.storage.wait(async move {
            let Some(got) = get_if_exists(&store, &path).await? else {
                return Ok(None);
            };
            let version = UpdateVersion {
                e_tag: got.meta.e_tag.clone(),
                version: got.meta.version.clone(),
            };
            Ok(Some((got.bytes().await?, version)))
        });
        match loaded.map_err(|e| self.storage.error(e))? {
            Some((bytes, version)) => {
                *self.version.lock() = Some(version);
                Catalog::parse(&bytes, &described).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Every node's catalog of the table.
    pub fn load_all_catalogs(&self) -> Result<Vec<Catalog>> {
        let store = self.storage.store.clone();
        let prefix = self.prefix.clone().join("catalogs");
        let files = self
            .storage
            .wait(async move {
                let listed: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
                futures::stream::iter(
                    listed
                        .into_iter()
                        .filter(|meta| meta.location.extension() == Some("json")),
                )
                .map(|meta| {
                    let store = store.clone();
                    async move {
                        // One deleted between the listing and the read is skipped.
                        match get_if_exists(&store, &meta.location).await? {
                            Some(got) => Ok(Some((meta.location, got.bytes().await?))),
                            None => Ok(None),
                        }
                    }
                })
                .buffer_unordered(CONCURRENT_TRANSFERS)
                .try_collect::<Vec<_>>()
                .await
            })
            .map_err(|e| self.storage.error(e))?;
        files
            .into_iter()
            .flatten()
            .map(|(path, bytes)| Catalog::parse(&bytes, &self.describe(&path)))
            .collect()
    }

    /// Replaces this node's catalog, on condition that nobody else replaced
    /// it since this process last read or wrote it.
    pub fn store_own_catalog(&self, catalog: &Catalog) -> Result<()> {
        let path = self.catalog_path(&self.storage.node);
        let bytes = catalog.to_json();
        let mut version = self.version.lock();
        let mode = match version.clone() {
            Some(version) => PutMode::Update(version),
            None => PutMode::Create,
        };
        let store = self.storage.store.clone();
        let put = {
            let path = path.clone();
            move |mode: PutMode| {
                let store = store.clone();
                let path = path.clone();
                let payload = PutPayload::from(bytes.clone());
                async move { store.put_opts(&path, payload, PutOptions::from(mode)).await }
            }
        };
        let written = match self.storage.wait(put(mode)) {
            // A store without conditional updates (a local file system):
            // the node id in the data directory is the only guard.
            Err(object_store::Error::NotImplemented { .. }) => {
                self.storage.wait(put(PutMode::Overwrite))
            }
            other => other,
        };
        match written {
            Ok(result) => {
                *version = Some(UpdateVersion::from(result));
                Ok(())
            }
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Err(StoreError::CatalogConflict(self.describe(&path))),
            Err(e) => Err(self.storage.error(e)),
        }
    }

    /// Uploads a segment written in the data directory: its Parquet file and
    /// every file of its index. Until a catalog names it, it is not part of
    /// the table.
    pub fn upload_segment(&self, id: &str) -> Result<()> {
        let mut uploads = vec![(self.local_parquet(id), self.parquet_path(id))];
        let index_dir = self.local_index(id);
        for entry in std::fs::read_dir(&index_dir).at(&index_dir)? {
            let entry = entry.at(&index_dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if entry.file_type().at(entry.path())?.is_file() {
                uploads.push((entry.path(), self.index_prefix(id).join(name)));
            }
        }
        let bytes: u64 = uploads
            .iter()
            .map(|(local, _)| std::fs::metadata(local).map_or(0, |m| m.len()))
            .sum();
        let store = self.storage.store.clone();
        self.storage
            .wait(async move {
                futures::stream::iter(uploads)
                    .map(|(local, remote)| {
                        let store = store.clone();
                        async move {
                            let contents = tokio::fs::read(&local)
                                .await
                                .map_err(|e| local_error(&local, e))?;
                            store.put(&remote, PutPayload::from(contents)).await
                        }
                    })
                    .buffer_unordered(CONCURRENT_TRANSFERS)
                    .try_collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| self.storage.error(e))?;
        self.storage.cached(&self.dir, id, bytes);
        Ok(())
    }

    /// Registers segments already in the data directory (found at start-up)
    /// with the cache.
    pub fn adopt_local(&self, ids: &[&str]) {
        for id in ids {
            let bytes = local_bytes(&self.local_parquet(id)) + local_bytes(&self.local_index(id));
            if bytes > 0 {
                self.storage.cached(&self.dir, id, bytes);
            }
        }
    }

    /// A reader's start: registers every segment a previous run left in the
    /// cache (downloads are renamed into place complete, so what has its
    /// final name is whole) and removes downloads a crash cut short.
    pub fn adopt_cache_dir(&self) {
        let mut ids = std::collections::BTreeSet::new();
        for (id, path) in crate::table::local_segment_files(&self.dir).unwrap_or_default() {
            if id.contains(".download-") {
                let _ = crate::table::remove_path(&path);
            } else {
                ids.insert(id);
            }
        }
        self.adopt_local(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// The local file whose presence means `part` of segment `id` is cached.
    fn local_part(&self, id: &str, part: SegmentPart) -> PathBuf {
        match part {
            SegmentPart::Parquet => self.local_parquet(id),
            // tantivy's index metadata: a fetched index is moved into place
            // with it last.
            SegmentPart::Index => self.local_index(id).join(INDEX_META),
            SegmentPart::TraceFilter => self.local_index(id).join(trace_filter::FILE_NAME),
        }
    }

    /// Makes sure `part` of each segment of `ids` is in the data directory,
    /// downloading what is not.
    pub fn fetch(&self, ids: &[&str], part: SegmentPart) -> Result<()> {
        let mut missing = Vec::new();
        for id in ids {
            // Touch first: once marked as used, eviction leaves it alone.
            let cached = self.storage.touch(&self.dir, id);
            if !(cached && self.local_part(id, part).exists()) {
                missing.push(id.to_string());
            }
        }
        if missing.is_empty() {
            self.storage.trim();
            return Ok(());
        }
        let jobs: Vec<_> = missing
            .iter()
            .map(|id| match part {
                SegmentPart::Parquet => Download::File {
                    from: self.parquet_path(id),
                    to: self.local_parquet(id),
                    optional: false,
                },
                // Segments written before trace filters existed have none.
                SegmentPart::TraceFilter => Download::File {
                    from: self.index_prefix(id).join(trace_filter::FILE_NAME),
                    to: self.local_part(id, part),
                    optional: true,
                },
                SegmentPart::Index => Download::Index {
                    prefix: self.index_prefix(id),
                    to: self.local_index(id),
                },
            })
            .collect();
        let store = self.storage.store.clone();
        self.storage
            .wait(async move {
                futures::stream::iter(jobs)
                    .map(|job| job.run(store.clone()))
                    .buffer_unordered(CONCURRENT_TRANSFERS)
                    .try_collect::<Vec<_>>()
                    .await
            })
            .map_err(|e| self.storage.error(e))?;
        self.adopt_local(&missing.iter().map(String::as_str).collect::<Vec<_>>());
        Ok(())
    }

    /// Every segment whose Parquet file is in the object store, named or not
    /// by a catalog, with when that file was written. (A deletion removes the
    /// Parquet file last, so a segment half deleted is still listed.)
    pub fn list_stored_segments(&self) -> Result<Vec<(String, SystemTime)>> {
        let store = self.storage.store.clone();
        let prefix = self.prefix.clone().join("segments");
        let listed: Vec<ObjectMeta> = self
            .storage
            .wait(async move { store.list(Some(&prefix)).try_collect().await })
            .map_err(|e| self.storage.error(e))?;
        Ok(listed
            .into_iter()
            .filter_map(|meta| {
                let id = meta.location.filename()?.strip_suffix(".parquet")?;
                Some((id.to_string(), SystemTime::from(meta.last_modified)))
            })
            .collect())
    }

    /// Deletes a segment from the object store and the cache.
    pub fn delete_segment(&self, id: &str) -> Result<()> {
        self.storage.forget(&self.dir, id);
        let store = self.storage.store.clone();
        let parquet = self.parquet_path(id);
        let index = self.index_prefix(id);
        self.storage
            .wait(async move {
                let mut paths: Vec<ObjectPath> = store
                    .list(Some(&index))
                    .map_ok(|meta| meta.location)
                    .try_collect()
                    .await?;
                paths.push(parquet);
                for path in paths {
                    match store.delete(&path).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            })
            .map_err(|e| self.storage.error(e))
    }

    fn describe(&self, path: &ObjectPath) -> PathBuf {
        PathBuf::from(format!("{} ({path})", self.storage.url))
    }
}

/// What of a segment a reader needs locally.
#[derive(Clone, Copy, Debug)]
pub enum SegmentPart {
    /// The Parquet file: to scan it.
    Parquet,
    /// The full-text index, with the trace-id filter: for `text_match`.
    Index,
    /// Only the trace-id filter: a trace lookup needs no more to skip a segment.
    TraceFilter,
}

/// One segment file or index to bring into the data directory.
enum Download {
    /// One object; `optional`: a missing one is not an error.
    File {
        from: ObjectPath,
        to: PathBuf,
        optional: bool,
    },
    /// Every object below `prefix`, into the directory `to`.
    Index { prefix: ObjectPath, to: PathBuf },
}

impl Download {
    async fn run(self, store: Arc<dyn ObjectStore>) -> object_store::Result<()> {
        let to = match &self {
            Download::File { to, .. } | Download::Index { to, .. } => to,
        };
        if let Some(parent) = to.parent() {
            tokio::fs::create_dir_all(parent)
                .await
                .map_err(|e| local_error(parent, e))?;
        }
        match self {
            Download::File { from, to, optional } => {
                let staging = staging_path(&to);
                let result = download(&store, &from, &staging)
                    .await
                    .and_then(|()| std::fs::rename(&staging, &to).map_err(|e| local_error(&to, e)));
                if result.is_err() {
                    let _ = std::fs::remove_file(&staging);
                }
                match result {
                    Err(object_store::Error::NotFound { .. }) if optional => Ok(()),
                    result => result,
                }
            }
            Download::Index { prefix, to } => {
                let staging = staging_path(&to);
                let result = async {
                    let files: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
                    if files.is_empty() {
                        return Err(object_store::Error::NotFound {
                            path: prefix.to_string(),
                            source: "the segment's index has no files".into(),
                        });
                    }
                    tokio::fs::create_dir_all(&staging)
                        .await
                        .map_err(|e| local_error(&staging, e))?;
                    for meta in files {
                        let Some(name) = meta.location.filename() else {
                            continue;
                        };
                        download(&store, &meta.location, &staging.join(name)).await?;
                    }
                    if std::fs::rename(&staging, &to).is_ok() {
                        return Ok(());
                    }
                    // The directory is there already, with the trace filter
                    // or with a whole index another query fetched: move the
                    // files in one by one, the metadata that marks the
                    // index as complete last.
                    let mut names: Vec<_> = std::fs::read_dir(&staging)
                        .map_err(|e| local_error(&staging, e))?
                        .flatten()
                        .map(|entry| entry.file_name())
                        .collect();
                    names.sort_by_key(|name| name == INDEX_META);
                    for name in names {
                        std::fs::rename(staging.join(&name), to.join(&name))
                            .map_err(|e| local_error(&to, e))?;
                    }
                    let _ = std::fs::remove_dir(&staging);
                    Ok(())
                }
                .await;
                if result.is_err() {
                    let _ = std::fs::remove_dir_all(&staging);
                }
                result
            }
        }
    }
}

/// Reads an object; `None` if there is none.
async fn get_if_exists(
    store: &Arc<dyn ObjectStore>,
    path: &ObjectPath,
) -> object_store::Result<Option<object_store::GetResult>> {
    match store.get(path).await {
        Ok(got) => Ok(Some(got)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Streams one object into a local file and syncs it.
async fn download(
    store: &Arc<dyn ObjectStore>,
    from: &ObjectPath,
    to: &Path,
) -> object_store::Result<()> {
    let mut stream = store.get(from).await?.into_stream();
    let mut file = tokio::fs::File::create(to)
        .await
        .map_err(|e| local_error(to, e))?;
    while let Some(chunk) = stream.next().await {
        file.write_all(&chunk?)
            .await
            .map_err(|e| local_error(to, e))?;
    }
    file.sync_all().await.map_err(|e| local_error(to, e))
}

fn local_error(path: &Path, e: std::io::Error) -> object_store::Error {
    object_store::Error::Generic {
        store: "weft cache",
        source: format!("{}: {e}", path.display()).into(),
    }
}

/// Where a download is written before it is renamed into place; named so that
/// start-up's clean-up of files no catalog names removes it after a crash.
fn staging_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".download-{}", uuid::Uuid::now_v7().simple()));
    to.with_file_name(name)
}

fn local_bytes(path: &Path) -> u64 {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::read_dir(path)
            .map(|entries| {
                entries
                    .flatten()
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0),
        Ok(meta) => meta.len(),
        Err(_) => 0,
    }
}

/// Deletes a segment's files from the data directory (the object store keeps
/// them), logging what could not be.
pub(crate) fn remove_local_files(table_dir: &Path, id: &str) {
    let parquet = crate::table::segment_path(table_dir, id);
    let index = crate::table::index_dir(table_dir, id);
    for (path, removed) in [
        (&parquet, std::fs::remove_file(&parquet)),
        (&index, std::fs::remove_dir_all(&index)),
    ] {
        if let Err(e) = removed {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "could not delete a segment's local files");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::SegmentEntry;

    fn catalog(flushed_wal_seq: u64) -> Catalog {
        Catalog {
            flushed_wal_seq,
            segments: vec![SegmentEntry {
                id: format!("segment-{flushed_wal_seq}"),
                rows: 1,
                bytes: 1,
                arrow_bytes: 1,
                min_time_ns: 0,
                max_time_ns: 0,
                services: vec!["crm-mobile".into()],
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_catalog_replaced_by_another_writer_of_the_same_node_is_a_conflict_not_a_lost_commit() {
        let dir = tempfile::tempdir().unwrap();
        let storage =
            ObjectStorage::open("memory://", dir.path(), 1 << 30, Duration::ZERO).unwrap();
        let table_dir = dir.path().join("spans");
        let (first, second) = (storage.table(&table_dir), storage.table(&table_dir));
        assert_eq!(first.load_own_catalog().unwrap(), None);

        first.store_own_catalog(&catalog(1)).unwrap();
        // The second never read the first's catalog: creating one is refused.
        let err = second.store_own_catalog(&catalog(9)).unwrap_err();
        assert!(matches!(err, StoreError::CatalogConflict(_)), "{err}");

        first.store_own_catalog(&catalog(2)).unwrap();
        assert_eq!(second.load_own_catalog().unwrap(), Some(catalog(2)));
        second.store_own_catalog(&catalog(3)).unwrap();
        // Now the first's version is stale.
        let err = first.store_own_catalog(&catalog(4)).unwrap_err();
        assert!(err.to_string().contains("another process"), "{err}");
        assert_eq!(first.load_own_catalog().unwrap(), Some(catalog(3)));
        assert_eq!(first.load_all_catalogs().unwrap(), vec![catalog(3)]);
    }

    #[test]
    fn the_node_id_is_made_once_and_kept_in_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let open = || ObjectStorage::open("memory://", dir.path(), 1, Duration::ZERO).unwrap();
        let node = open().node().to_string();
        assert_eq!(node.len(), 32);
        assert_eq!(open().node(), node);
    }

    #[test]
    fn a_data_directory_caches_for_one_process_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let open = || ObjectStorage::open("memory://", dir.path(), 1, Duration::ZERO);
        let first = open().unwrap();
        let err = open().unwrap_err();
        assert!(matches!(err, StoreError::Locked(_)), "{err}");
        drop(first);
        open().unwrap();
    }

    #[test]
    fn an_unknown_scheme_is_refused_naming_the_url() {
        let dir = tempfile::tempdir().unwrap();
        let err = ObjectStorage::open("ftp://host/x", dir.path(), 1, Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("ftp://host/x"), "{err}");
    }
}
