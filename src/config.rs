//! `weft.toml`, flags and `WEFT_*` environment variables, merged into one
//! validated configuration. Precedence: flag or environment variable, then the
//! config file, then the default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::{Deserialize, Serialize};
use weft_store::TenantId;

/// The configuration of `weft serve`, `weft collector` and `weft query`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the WAL, Parquet segments, full-text indexes and catalogs live.
    pub data_dir: PathBuf,
    pub otlp: OtlpConfig,
    pub http: HttpConfig,
    pub store: StoreSettings,
    pub query: QuerySettings,
    pub tls: TlsSettings,
    pub auth: AuthSettings,
    pub quotas: QuotaSettings,
    /// How long shutdown waits for in-flight requests and open connections
    /// before closing them and flushing.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
}

/// The OTLP receivers.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct OtlpConfig {
    /// OTLP/gRPC listen address (port 0 picks a free port).
    pub grpc_addr: SocketAddr,
    /// OTLP/HTTP listen address: `/v1/traces`, `/v1/logs`, `/v1/metrics`, `/metrics`.
    pub http_addr: SocketAddr,
    /// Largest export request accepted, in bytes after decompression; larger
    /// ones get 413 / RESOURCE_EXHAUSTED.
    pub max_request_bytes: usize,
    /// Request bytes decoded and stored at once; beyond it requests get
    /// 429 / RESOURCE_EXHAUSTED with a retry delay.
    pub max_inflight_bytes: usize,
    /// The delay overloaded clients are told to wait before retrying.
    #[serde(with = "humantime_serde")]
    pub retry_after: Duration,
}

/// The query API and UI port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Listen address of the query API, UI and `/metrics` (Jaeger's port by default).
    pub addr: SocketAddr,
}

/// How data moves from the WAL to Parquet segments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    /// Write a segment at least this often while there is unflushed data.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Write a segment once this many bytes of a table are unflushed.
    pub flush_bytes: usize,
    /// Refuse new data (503 / RESOURCE_EXHAUSTED, retryable) while this many
    /// bytes of a table wait to be flushed. Bounds memory under overload.
    pub max_buffered_bytes: usize,
    /// How often each table is checked for small segments to merge and
    /// expired segments to drop.
    #[serde(with = "humantime_serde")]
    pub compaction_interval: Duration,
    /// Drop data once its newest row in a segment is older than this, e.g.
    /// `7d`; unset keeps everything.
    #[serde(with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// How long files of merged or expired segments stay for queries that
    /// were already reading them; at least `query.timeout`.
    #[serde(with = "humantime_serde")]
    pub deletion_grace: Duration,
    /// Keep segments, indexes and catalogs in this object store
    /// (`s3://bucket/prefix`, `gs://…`, `az://…`, `file:///path`); the data
    /// directory then holds the WAL and a cache. Unset: everything stays in
    /// the data directory.
    pub storage: Option<String>,
    /// How much nicer (0–19) than the process merges, and flushes that keep
    /// up, run, so that they take the cores latency-sensitive work beside
    /// the collector leaves; 0 (the default) runs them as the process.
    pub background_nice: u8,
    /// With `storage`: bytes of segments the data directory caches at most.
    pub cache_bytes: u64,
    /// With `storage`: the URL at which queriers on other machines reach
    /// this process's OTLP/gRPC port for its unflushed rows (Arrow Flight).
    /// Unset: `http://` (`https://` with TLS) and the gRPC listen address,
    /// or this machine's host name if that is 0.0.0.0 or [::].
    pub advertise_url: Option<String>,
    /// With `storage`, for `weft query`: the token (role `read`) sent to
    /// collectors that require authentication, for their unflushed rows.
    pub collector_token: Option<String>,
    /// With `storage`, for `weft query`: PEM CA certificates to verify
    /// collectors' `https://` addresses with, beside the system's roots.
    pub collector_ca_file: Option<PathBuf>,
    /// With `storage`, for `weft query`: the PEM client certificate (then
    /// its chain) presented to collectors that require one on OTLP
    /// (`tls.client_ca_file`); with `collector_key_file`.
    pub collector_cert_file: Option<PathBuf>,
    /// The private key of `collector_cert_file`, PEM.
    pub collector_key_file: Option<PathBuf>,
}

/// TLS on every listener, from PEM files reloaded when they change.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// The server certificate, then its chain; with `key_file`, turns TLS on.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// CA certificates: the OTLP receivers then accept only clients with a
    /// certificate one of them issued (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

/// Who may call weft. Off by default: on localhost everyone is the default
/// tenant. On: every request needs a token or user from the credentials file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSettings {
    pub enabled: bool,
    /// The tokens and users, as `weft token` and `weft user` write them
    /// [default: credentials.toml in the data directory].
    pub credentials_file: Option<PathBuf>,
    /// Failed attempts one address may make per minute before it gets 429.
    pub max_failures_per_minute: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            credentials_file: None,
            max_failures_per_minute: 10,
        }
    }
}

/// Per-tenant limits: `default` for every tenant, `tenants.<name>` for one.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaSettings {
    pub default: weft_collector::TenantLimits,
    pub tenants: BTreeMap<TenantId, weft_collector::TenantLimits>,
}

/// Limits on SQL and search queries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QuerySettings {
    /// A query still running after this long is cancelled (400 with the reason).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Rows one query returns at most; the answer says when it was cut.
    pub max_rows: usize,
    /// Memory all queries together may use for sorts, joins and aggregations.
    pub memory_limit_bytes: usize,
    /// Memory one query may use of that (at most all of it), so one cannot
    /// starve the others.
    pub memory_limit_per_query_bytes: usize,
    /// A Ballista scheduler (`host:port`, a `weft ballista scheduler`) that
    /// runs the statements of `POST /api/v1/sql`; needs `store.storage`.
    pub ballista_scheduler: Option<String>,
}

impl Default for QuerySettings {
    fn default() -> Self {
        let query = weft_query::QueryConfig::default();
        Self {
            timeout: query.timeout,
            max_rows: query.max_rows,
            memory_limit_bytes: query.memory_limit_bytes,
            memory_limit_per_query_bytes: query.memory_limit_per_query_bytes,
            ballista_scheduler: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./weft-data"),
            otlp: OtlpConfig::default(),
            http: HttpConfig::default(),
            store: StoreSettings::default(),
            query: QuerySettings::default(),
            tls: TlsSettings::default(),
            auth: AuthSettings::default(),
            quotas: QuotaSettings::default(),
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

impl Default for OtlpConfig {
    fn default() -> Self {
        let limits = weft_collector::IngestLimits::default();
        Self {
            grpc_addr: SocketAddr::from(([127, 0, 0, 1], 4317)),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 4318)),
            max_request_bytes: limits.max_request_bytes,
            max_inflight_bytes: limits.max_inflight_bytes,
            retry_after: limits.retry_after,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 16686)),
        }
    }
}

impl Default for StoreSettings {
    fn default() -> Self {
        let store = weft_store::StoreConfig::new(".");
        Self {
            flush_interval: store.flush_interval,
            flush_bytes: store.flush_bytes,
            max_buffered_bytes: store.max_buffered_bytes,
            compaction_interval: store.compaction_interval,
            retention: store.retention,
            deletion_grace: store.deletion_grace,
            background_nice: store.background_nice,
            storage: None,
            cache_bytes: weft_store::object_storage::DEFAULT_CACHE_BYTES,
            advertise_url: None,
            collector_token: None,
            collector_ca_file: None,
            collector_cert_file: None,
            collector_key_file: None,
        }
    }
}

/// Flags every server role understands; each also reads a `WEFT_*` variable.
#[derive(Debug, Clone, Default, Args)]
pub struct ServerArgs {
    /// TOML config file; flags and environment variables override it.
    #[arg(long, env = "WEFT_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory [default: ./weft-data]
    #[arg(long, env = "WEFT_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// OTLP/gRPC listen address [default: 127.0.0.1:4317]
    #[arg(long, env = "WEFT_OTLP_GRPC_ADDR", value_name = "ADDR")]
    pub otlp_grpc_addr: Option<SocketAddr>,
    /// OTLP/HTTP listen address [default: 127.0.0.1:4318]
    #[arg(long, env = "WEFT_OTLP_HTTP_ADDR", value_name = "ADDR")]
    pub otlp_http_addr: Option<SocketAddr>,
    /// Query API, UI and /metrics listen address [default: 127.0.0.1:16686]
    #[arg(long, env = "WEFT_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Largest OTLP request in bytes, after decompression [default: 16777216]
    #[arg(long, env = "WEFT_MAX_REQUEST_BYTES", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,
    /// OTLP request bytes processed at once before refusing with 429 [default: 268435456]
    #[arg(long, env = "WEFT_MAX_INFLIGHT_BYTES", value_name = "BYTES")]
    pub max_inflight_bytes: Option<usize>,
    /// Retry delay given to overloaded clients, e.g. 1s [default: 1s]
    #[arg(long, env = "WEFT_RETRY_AFTER", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub retry_after: Option<Duration>,
    /// Flush unflushed data to a segment at least this often, e.g. 30s [default: 30s]
    #[arg(long, env = "WEFT_FLUSH_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub flush_interval: Option<Duration>,
    /// Flush a table once this many bytes are unflushed [default: 134217728]
    #[arg(long, env = "WEFT_FLUSH_BYTES", value_name = "BYTES")]
    pub flush_bytes: Option<usize>,
    /// Refuse data with 503 while this many bytes of a table are unflushed [default: 1073741824]
    #[arg(long, env = "WEFT_MAX_BUFFERED_BYTES", value_name = "BYTES")]
    pub max_buffered_bytes: Option<usize>,
    /// Merge small segments and drop expired ones this often, e.g. 1m [default: 1m]
    #[arg(long, env = "WEFT_COMPACTION_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub compaction_interval: Option<Duration>,
    /// Drop segments whose newest row is older than this, e.g. 7d [default: keep everything]
    #[arg(long, env = "WEFT_RETENTION", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub retention: Option<Duration>,
    /// Keep files of merged or expired segments this long for running queries [default: 2m]
    #[arg(long, env = "WEFT_DELETION_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub deletion_grace: Option<Duration>,
    /// Keep segments in an object store: s3://bucket/prefix, gs://…, az://…, file:///path [default: all in the data directory]
    #[arg(long, env = "WEFT_STORAGE", value_name = "URL")]
    pub storage: Option<String>,
    /// With --storage: bytes of segments cached in the data directory at most [default: 10737418240]
    #[arg(long, env = "WEFT_CACHE_BYTES", value_name = "BYTES")]
    pub cache_bytes: Option<u64>,
    /// With --storage: the URL other machines' queriers reach this OTLP/gRPC port at for unflushed rows [default: http://<gRPC address or host name>:<port>]
    #[arg(long, env = "WEFT_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// With --storage (weft query): token with the read role sent to collectors that require authentication
    #[arg(
        long,
        env = "WEFT_COLLECTOR_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub collector_token: Option<String>,
    /// With --storage (weft query): PEM CA certificate(s) to verify collectors with TLS on their OTLP port [default: the system's roots]
    #[arg(long, env = "WEFT_COLLECTOR_CA_FILE", value_name = "FILE")]
    pub collector_ca_file: Option<PathBuf>,
    /// With --storage (weft query): PEM client certificate presented to collectors that require one (with --collector-key-file)
    #[arg(long, env = "WEFT_COLLECTOR_CERT_FILE", value_name = "FILE")]
    pub collector_cert_file: Option<PathBuf>,
    /// With --storage (weft query): the PEM private key of --collector-cert-file
    #[arg(long, env = "WEFT_COLLECTOR_KEY_FILE", value_name = "FILE")]
    pub collector_key_file: Option<PathBuf>,
    /// With --storage: run SQL statements on the Ballista cluster of this scheduler, host:port (see `weft ballista`) [default: run them here]
    #[arg(long, env = "WEFT_BALLISTA_SCHEDULER", value_name = "HOST:PORT")]
    pub ballista_scheduler: Option<String>,
    /// Cancel a query running longer than this, e.g. 30s [default: 30s]
    #[arg(long, env = "WEFT_QUERY_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub query_timeout: Option<Duration>,
    /// Rows one query returns at most [default: 10000]
    #[arg(long, env = "WEFT_QUERY_MAX_ROWS", value_name = "ROWS")]
    pub query_max_rows: Option<usize>,
    /// Memory all queries together may use for sorts, joins and aggregations [default: 2147483648]
    #[arg(long, env = "WEFT_QUERY_MEMORY_LIMIT_BYTES", value_name = "BYTES")]
    pub query_memory_limit_bytes: Option<usize>,
    /// PEM certificate (chain) for TLS on every listener; needs --tls-key-file
    #[arg(long, env = "WEFT_TLS_CERT_FILE", value_name = "FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key of the TLS certificate
    #[arg(long, env = "WEFT_TLS_KEY_FILE", value_name = "FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA certificates: OTLP clients must present a certificate they issued
    #[arg(long, env = "WEFT_TLS_CLIENT_CA_FILE", value_name = "FILE")]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Require a token or user and password on every request (see `weft token`)
    #[arg(long, env = "WEFT_AUTH")]
    pub auth: bool,
    /// The tokens and users [default: credentials.toml in the data directory]
    #[arg(long, env = "WEFT_CREDENTIALS_FILE", value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Memory one query may use for sorts, joins and aggregations [default: 536870912]
    #[arg(
        long,
        env = "WEFT_QUERY_MEMORY_LIMIT_PER_QUERY_BYTES",
        value_name = "BYTES"
    )]
    pub query_memory_limit_per_query_bytes: Option<usize>,
    /// On SIGTERM, wait this long for in-flight requests before closing connections [default: 10s]
    #[arg(long, env = "WEFT_SHUTDOWN_GRACE", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Option<Duration>,
}

/// The largest `otlp.max_request_bytes`: with the up to four times as much
/// text a request may repeat on its records (see the collector's
/// `admit_expansion`), a converted request stays under the 2 GiB an Arrow text
/// column holds.
const MAX_REQUEST_BYTES_LIMIT: usize = 256 * 1024 * 1024;

impl Config {
    /// Reads the config file named by `args` (if any), applies the flags and
    /// validates the result.
    pub fn resolve(args: &ServerArgs) -> anyhow::Result<Self> {
        let mut config = match &args.config {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply(args);
        config.validate()?;
        Ok(config)
    }

    fn from_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    fn apply(&mut self, args: &ServerArgs) {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(value) = value {
                *target = value.clone();
            }
        }
        set(&mut self.data_dir, &args.data_dir);
        set(&mut self.otlp.grpc_addr, &args.otlp_grpc_addr);
        set(&mut self.otlp.http_addr, &args.otlp_http_addr);
        set(&mut self.http.addr, &args.http_addr);
        set(&mut self.otlp.max_request_bytes, &args.max_request_bytes);
        set(&mut self.otlp.max_inflight_bytes, &args.max_inflight_bytes);
        set(&mut self.otlp.retry_after, &args.retry_after);
        set(&mut self.store.flush_interval, &args.flush_interval);
        set(&mut self.store.flush_bytes, &args.flush_bytes);
        set(&mut self.store.max_buffered_bytes, &args.max_buffered_bytes);
        set(
            &mut self.store.compaction_interval,
            &args.compaction_interval,
        );
        if args.retention.is_some() {
            self.store.retention = args.retention;
        }
        set(&mut self.store.deletion_grace, &args.deletion_grace);
        if args.storage.is_some() {
            self.store.storage.clone_from(&args.storage);
        }
        set(&mut self.store.cache_bytes, &args.cache_bytes);
        if args.advertise_url.is_some() {
            self.store.advertise_url.clone_from(&args.advertise_url);
        }
        if args.collector_token.is_some() {
            self.store.collector_token.clone_from(&args.collector_token);
        }
        if args.collector_ca_file.is_some() {
            self.store
                .collector_ca_file
                .clone_from(&args.collector_ca_file);
        }
        if args.collector_cert_file.is_some() {
            self.store
                .collector_cert_file
                .clone_from(&args.collector_cert_file);
        }
        if args.collector_key_file.is_some() {
            self.store
                .collector_key_file
                .clone_from(&args.collector_key_file);
        }
        if args.ballista_scheduler.is_some() {
            self.query
                .ballista_scheduler
                .clone_from(&args.ballista_scheduler);
        }
        set(&mut self.query.timeout, &args.query_timeout);
        set(&mut self.query.max_rows, &args.query_max_rows);
        set(
            &mut self.query.memory_limit_bytes,
            &args.query_memory_limit_bytes,
        );
        set(
            &mut self.query.memory_limit_per_query_bytes,
            &args.query_memory_limit_per_query_bytes,
        );
        set(&mut self.shutdown_grace, &args.shutdown_grace);
        for (target, value) in [
            (&mut self.tls.cert_file, &args.tls_cert_file),
            (&mut self.tls.key_file, &args.tls_key_file),
            (&mut self.tls.client_ca_file, &args.tls_client_ca_file),
        ] {
            if value.is_some() {
                target.clone_from(value);
            }
        }
        if args.auth {
            self.auth.enabled = true;
        }
        if args.credentials_file.is_some() {
            self.auth.credentials_file = args.credentials_file.clone();
        }
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.store.collector_cert_file.is_some() != self.store.collector_key_file.is_some() {
            bail!("store.collector_cert_file and store.collector_key_file (--collector-cert-file, --collector-key-file) go together: set both or neither");
        }
        if self.otlp.max_request_bytes == 0 {
            bail!("otlp.max_request_bytes must be greater than 0");
        }
        if self.otlp.max_request_bytes > MAX_REQUEST_BYTES_LIMIT {
            bail!(
                "otlp.max_request_bytes ({}) must be at most {MAX_REQUEST_BYTES_LIMIT} (256 MiB): a request and the resource text it repeats per record must fit Arrow's 2 GiB text columns",
                self.otlp.max_request_bytes
            );
        }
        if self.otlp.max_inflight_bytes < self.otlp.max_request_bytes {
            bail!(
                "otlp.max_inflight_bytes ({}) must be at least otlp.max_request_bytes ({}), or no request of the largest size could ever be admitted",
                self.otlp.max_inflight_bytes,
                self.otlp.max_request_bytes
            );
        }
        if self.store.flush_interval.is_zero() {
            bail!("store.flush_interval must be greater than 0");
        }
        if self.store.flush_bytes == 0 || self.store.flush_bytes > self.store.max_buffered_bytes {
            bail!(
                "store.flush_bytes ({}) must be greater than 0 and at most store.max_buffered_bytes ({})",
                self.store.flush_bytes,
                self.store.max_buffered_bytes
            );
        }
        if self.store.compaction_interval.is_zero() {
            bail!("store.compaction_interval must be greater than 0");
        }
        if self.store.background_nice > 19 {
            bail!(
                "store.background_nice ({}) must be between 0 and 19",
                self.store.background_nice
            );
        }
        if let Some(url) = &self.store.advertise_url {
            let parsed: Option<axum::http::Uri> = url.parse().ok();
            let usable = parsed.as_ref().is_some_and(|uri| {
                matches!(uri.scheme_str(), Some("http" | "https")) && uri.authority().is_some()
            });
            if !usable {
                bail!("store.advertise_url {url:?} must be an http:// or https:// URL with a host, e.g. http://collector-1:4317");
            }
        }
        if let Some(scheduler) = &self.query.ballista_scheduler {
            let parsed: Option<axum::http::uri::Authority> = scheduler.parse().ok();
            if parsed.is_none_or(|a| a.port_u16().is_none()) {
                bail!("query.ballista_scheduler {scheduler:?} must be host:port, e.g. 127.0.0.1:50050");
            }
            if self.store.storage.is_none() {
                bail!("query.ballista_scheduler needs store.storage: the cluster reads the segments from the object store");
            }
        }
        if self.store.retention.is_some_and(|r| r.is_zero()) {
            bail!("store.retention must be greater than 0; leave it unset to keep everything");
        }
        if self.store.deletion_grace < self.query.timeout {
            bail!(
                "store.deletion_grace ({}) must be at least query.timeout ({}): a query may read a merged segment's files until it ends",
                humantime::format_duration(self.store.deletion_grace),
                humantime::format_duration(self.query.timeout)
            );
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            bail!("tls.cert_file and tls.key_file go together: set both for TLS, or neither");
        }
        if self.tls.client_ca_file.is_some() && self.tls.cert_file.is_none() {
            bail!("tls.client_ca_file needs tls.cert_file and tls.key_file: client certificates are part of TLS");
        }
        if self.auth.max_failures_per_minute == 0 {
            bail!("auth.max_failures_per_minute must be greater than 0");
        }
        if self.query.memory_limit_per_query_bytes == 0 {
            bail!("query.memory_limit_per_query_bytes must be greater than 0");
        }
        if self.query.timeout.is_zero() || self.query.max_rows == 0 {
            bail!("query.timeout and query.max_rows must be greater than 0");
        }
        Ok(())
    }

    pub fn query_config(&self) -> weft_query::QueryConfig {
        weft_query::QueryConfig {
            timeout: self.query.timeout,
            max_rows: self.query.max_rows,
            memory_limit_bytes: self.query.memory_limit_bytes,
            // No query can hold more than all of them together.
            memory_limit_per_query_bytes: self
                .query
                .memory_limit_per_query_bytes
                .min(self.query.memory_limit_bytes),
        }
    }

    /// Connects to the object store of `store.storage`, if one is set.
    pub fn object_storage(&self) -> anyhow::Result<Option<Arc<weft_store::ObjectStorage>>> {
        let Some(url) = &self.store.storage else {
            return Ok(None);
        };
        let storage = weft_store::ObjectStorage::open(
            url,
            &self.data_dir,
            self.store.cache_bytes,
            // A query may read a cached segment until it times out.
            self.store.deletion_grace,
        )?;
        tracing::info!(
            storage = url,
            node = storage.node(),
            cache_bytes = self.store.cache_bytes,
            "segments and catalogs are kept in object storage"
        );
        Ok(Some(storage))
    }

    /// Where queriers elsewhere reach this process's unflushed rows, given
    /// the address the OTLP/gRPC port is bound to.
    pub fn advertise_url(&self, grpc_addr: SocketAddr) -> String {
        if let Some(url) = &self.store.advertise_url {
            return url.clone();
        }
        let scheme = if self.tls.cert_file.is_some() {
            "https"
        } else {
            "http"
        };
        let host = if grpc_addr.ip().is_unspecified() {
            host_name().unwrap_or_else(|| "localhost".to_string())
        } else if grpc_addr.is_ipv6() {
            format!("[{}]", grpc_addr.ip())
        } else {
            grpc_addr.ip().to_string()
        };
        format!("{scheme}://{host}:{}", grpc_addr.port())
    }

    /// The reader of collectors' unflushed rows for `weft query` over `storage`.
    pub fn live_reader(&self) -> anyhow::Result<weft_query::live::FlightLiveReader> {
        let store = &self.store;
        flight_live_reader(
            store.collector_token.clone(),
            (
                store.collector_ca_file.as_deref(),
                "store.collector_ca_file",
            ),
            (
                store.collector_cert_file.as_deref(),
                "store.collector_cert_file",
            ),
            (
                store.collector_key_file.as_deref(),
                "store.collector_key_file",
            ),
        )
    }

    pub fn store_config(&self) -> weft_store::StoreConfig {
        weft_store::StoreConfig {
            flush_interval: self.store.flush_interval,
            flush_bytes: self.store.flush_bytes,
            max_buffered_bytes: self.store.max_buffered_bytes,
            compaction_interval: self.store.compaction_interval,
            retention: self.store.retention,
            deletion_grace: self.store.deletion_grace,
            background_nice: self.store.background_nice,
            ..weft_store::StoreConfig::new(&self.data_dir)
        }
    }

    pub fn auth_config(&self) -> weft_access::AuthConfig {
        weft_access::AuthConfig {
            enabled: self.auth.enabled,
            credentials_file: self
                .auth
                .credentials_file
                .clone()
                .unwrap_or_else(|| self.data_dir.join("credentials.toml")),
            max_failures_per_minute: self.auth.max_failures_per_minute,
            reload_interval: Duration::from_secs(1),
        }
    }

    pub fn quotas(&self) -> weft_collector::Quotas {
        weft_collector::Quotas::new(
            self.quotas.default.clone(),
            self.quotas.tenants.clone().into_iter().collect(),
        )
    }

    /// TLS files for the OTLP listeners (with the client CA) and for the
    /// API (without), or `None` when TLS is off.
    pub fn tls_files(&self) -> Option<(weft_access::tls::TlsFiles, weft_access::tls::TlsFiles)> {
        let (cert_file, key_file) = (self.tls.cert_file.clone()?, self.tls.key_file.clone()?);
        let api = weft_access::tls::TlsFiles {
            cert_file,
            key_file,
            client_ca_file: None,
        };
        let otlp = weft_access::tls::TlsFiles {
            client_ca_file: self.tls.client_ca_file.clone(),
            ..api.clone()
        };
        Some((otlp, api))
    }

    /// What is wrong with listening where this config listens, to warn
    /// about at start-up: anyone may call a listener beyond localhost
    /// without auth; credentials cross the network in clear text without TLS.
    pub fn exposure_warnings(&self) -> Vec<String> {
        let exposed: Vec<SocketAddr> = [self.otlp.grpc_addr, self.otlp.http_addr, self.http.addr]
            .into_iter()
            .filter(|addr| !addr.ip().is_loopback())
            .collect();
        let mut warnings = Vec::new();
        for addr in exposed {
            if !self.auth.enabled {
                warnings.push(format!("LISTENING ON {addr} WITHOUT AUTHENTICATION: anyone who reaches it can send and read all data; start with --auth (see `weft token create`)"));
            } else if self.tls.cert_file.is_none() {
                warnings.push(format!("listening on {addr} without TLS: tokens and passwords cross the network in clear text; set --tls-cert-file and --tls-key-file"));
            }
        }
        warnings
    }

    pub fn ingest_limits(&self) -> weft_collector::IngestLimits {
        weft_collector::IngestLimits {
            max_request_bytes: self.otlp.max_request_bytes,
            max_inflight_bytes: self.otlp.max_inflight_bytes,
            retry_after: self.otlp.retry_after,
        }
    }
}

/// This machine's host name as the kernel has it, where that can be read.
pub(crate) fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// A reader of collectors' unflushed rows that sends `token` and trusts the
/// PEM CA file `ca`, presenting the certificate `cert` with the key `key`
/// when both are given; each file comes with the setting or flag that named
/// it, for errors.
pub(crate) fn flight_live_reader(
    token: Option<String>,
    ca: (Option<&Path>, &str),
    cert: (Option<&Path>, &str),
    key: (Option<&Path>, &str),
) -> anyhow::Result<weft_query::live::FlightLiveReader> {
    let reader = weft_query::live::FlightLiveReader::new(token, read_optional_file(ca.0, ca.1)?);
    let cert = read_optional_file(cert.0, cert.1)?;
    let key = read_optional_file(key.0, key.1)?;
    Ok(match (cert, key) {
        (Some(cert), Some(key)) => reader.with_client_certificate(cert, key),
        _ => reader,
    })
}

/// The contents of the file at `path`, if one is given; an error names it
/// as the setting or flag `name`.
pub(crate) fn read_optional_file(
    path: Option<&Path>,
    name: &str,
) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|path| {
        std::fs::read(path).with_context(|| format!("cannot read {name} {}", path.display()))
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_the_file_and_the_file_overrides_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.toml");
        std::fs::write(
            &path,
            "data_dir = \"/var/lib/weft\"\n[otlp]\ngrpc_addr = \"0.0.0.0:4317\"\n[store]\nflush_interval = \"5s\"\n",
        )
        .unwrap();
        let args = ServerArgs {
            config: Some(path),
            otlp_grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/var/lib/weft"));
        assert_eq!(config.otlp.grpc_addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(config.store.flush_interval, Duration::from_secs(5));
        assert_eq!(config.http.addr, HttpConfig::default().addr);
    }

    #[test]
    fn unknown_fields_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.toml");
        std::fs::write(&path, "[otlp]\ngrpc_adr = \"0.0.0.0:4317\"\n").unwrap();
        let args = ServerArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = format!("{:#}", Config::resolve(&args).unwrap_err());
        assert!(err.contains("grpc_adr"), "{err}");

        let args = ServerArgs {
            flush_bytes: Some(10),
            max_buffered_bytes: Some(5),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("store.flush_bytes"), "{err}");

        let args = ServerArgs {
            deletion_grace: Some(Duration::from_secs(10)),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("store.deletion_grace (10s)"), "{err}");
        assert!(err.contains("query.timeout (30s)"), "{err}");

        let args = ServerArgs {
            collector_cert_file: Some("client.crt".into()),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("--collector-key-file"), "{err}");

        let path = dir.path().join("nice.toml");
        std::fs::write(&path, "[store]\nbackground_nice = 20\n").unwrap();
        let args = ServerArgs {
            config: Some(path),
            ..Default::default()
        };
        let err = Config::resolve(&args).unwrap_err().to_string();
        assert!(err.contains("store.background_nice (20)"), "{err}");
    }

    #[test]
    fn the_advertised_url_follows_the_grpc_address_unless_set() {
        let config = Config::default();
        let at = |addr: &str| config.advertise_url(addr.parse().unwrap());
        assert_eq!(at("127.0.0.1:4317"), "http://127.0.0.1:4317");
        assert_eq!(at("[::1]:4317"), "http://[::1]:4317");
        assert!(!at("0.0.0.0:4317").contains("0.0.0.0"));

        let mut tls = Config::default();
        tls.tls.cert_file = Some("server.crt".into());
        assert_eq!(
            tls.advertise_url("10.0.0.7:4317".parse().unwrap()),
            "https://10.0.0.7:4317"
        );

        let args = ServerArgs {
            advertise_url: Some("http://collector-1:4317".into()),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(
            config.advertise_url("0.0.0.0:4317".parse().unwrap()),
            "http://collector-1:4317"
        );
        for bad in ["collector-1:4317", "ftp://collector-1", "http://"] {
            let args = ServerArgs {
                advertise_url: Some(bad.into()),
                ..Default::default()
            };
            let err = Config::resolve(&args).unwrap_err().to_string();
            assert!(err.contains("store.advertise_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_request_size_limit_is_positive_and_at_most_256_mib() {
        for (bytes, ok) in [(0, false), (256 << 20, true), ((256 << 20) + 1, false)] {
            let args = ServerArgs {
                max_request_bytes: Some(bytes),
                max_inflight_bytes: Some(1 << 30),
                ..Default::default()
            };
            match Config::resolve(&args) {
                Ok(_) => assert!(ok, "{bytes}"),
                Err(e) => {
                    assert!(!ok, "{bytes}: {e}");
                    assert!(e.to_string().contains("otlp.max_request_bytes"), "{e}");
                }
            }
        }
    }

    #[test]
    fn retention_is_read_from_the_file_and_unset_keeps_everything() {
        assert_eq!(Config::default().store.retention, None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("weft.toml");
        std::fs::write(&path, "[store]\nretention = \"7d\"\n").unwrap();
        let args = ServerArgs {
            config: Some(path),
            ..Default::default()
        };
        let config = Config::resolve(&args).unwrap();
        assert_eq!(
            config.store_config().retention,
            Some(Duration::from_secs(7 * 86_400))
        );
    }
}
