//! weft's own telemetry, served as Prometheus text at `/metrics`.
//!
//! Naming rule: `weft_<component>_<what>_<unit>`, counters ending in `_total`
//! (added by the encoder), units spelled out (`_bytes`, `_seconds`), and
//! labels only from small fixed sets (`signal`, `transport`, `outcome`,
//! `table`) — never from request data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use weft_store::{Signal, Table, TenantStores};

use crate::ingest::{IngestError, Outcome, Transport};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    signal: &'static str,
    transport: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RecordLabels {
    signal: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransportLabels {
    signal: &'static str,
    transport: &'static str,
}

/// Counters of the receivers.
#[derive(Clone, Default)]
pub struct IngestMetrics {
    requests: Family<RequestLabels, Counter>,
    records: Family<RecordLabels, Counter>,
    bytes: Family<TransportLabels, Counter>,
}

impl IngestMetrics {
    /// Creates the counters and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "weft_ingest_requests",
            "OTLP export requests by signal, transport and outcome",
            metrics.requests.clone(),
        );
        registry.register(
            "weft_ingest_records",
            "Spans and log records received, by outcome (accepted = durable, rejected = invalid)",
            metrics.records.clone(),
        );
        registry.register(
            "weft_ingest_received_bytes",
            "OTLP request bytes received (after decompression)",
            metrics.bytes.clone(),
        );
        metrics
    }

    pub(crate) fn record(
        &self,
        signal: Signal,
        transport: Transport,
        request_bytes: usize,
        result: &Result<Outcome, IngestError>,
    ) {
        let outcome = match result {
            Ok(o) if o.rejected > 0 => "partial",
            Ok(_) => "ok",
            Err(e) => error_outcome(e),
        };
        self.count_request(signal, transport, request_bytes, outcome);
        if let Ok(outcome) = result {
            for (count, outcome) in [
                (outcome.accepted, "accepted"),
                (outcome.rejected, "rejected"),
            ] {
                self.records
                    .get_or_create(&RecordLabels {
                        signal: signal.table_name(),
                        outcome,
                    })
                    .inc_by(count);
            }
        }
    }

    /// Counts a request refused before it reached the ingest path (bad headers, too large).
    pub(crate) fn record_refused(&self, signal: Signal, transport: Transport, error: &IngestError) {
        self.count_request(signal, transport, 0, error_outcome(error));
    }

    fn count_request(
        &self,
        signal: Signal,
        transport: Transport,
        request_bytes: usize,
        outcome: &'static str,
    ) {
        let signal = signal.table_name();
        let transport = match transport {
            Transport::Grpc => "grpc",
            Transport::Http => "http",
        };
        self.requests
            .get_or_create(&RequestLabels {
                signal,
                transport,
                outcome,
            })
            .inc();
        self.bytes
            .get_or_create(&TransportLabels { signal, transport })
            .inc_by(request_bytes as u64);
    }
}

fn error_outcome(error: &IngestError) -> &'static str {
    match error {
        IngestError::Malformed(_) | IngestError::UnsupportedMediaType(_) => "malformed",
        IngestError::TooLarge { .. } | IngestError::Expands { .. } => "too_large",
        IngestError::Busy(_) | IngestError::Overloaded(_) => "overloaded",
        IngestError::QuotaExceeded { .. } => "over_quota",
        IngestError::ShuttingDown | IngestError::Internal(_) => "error",
    }
}

/// Reads the stores' counters at each scrape, summed over tenants.
pub struct StoreCollector {
    stores: Arc<TenantStores>,
}

impl std::fmt::Debug for StoreCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreCollector")
    }
}

impl StoreCollector {
    pub fn register(registry: &mut Registry, stores: Arc<TenantStores>) {
        registry.register_collector(Box::new(Self { stores }));
    }

    fn total(&self, signal: Signal, read: Read) -> Reading {
        let readings = self
            .stores
            .all()
            .into_iter()
            .map(|(_, s)| read(s.table(signal)));
        readings.fold(Reading::Count(0), |sum, reading| match (sum, reading) {
            (Reading::Count(a), Reading::Count(b)) => Reading::Count(a + b),
            (Reading::Seconds(a), Reading::Seconds(b)) => Reading::Seconds(a + b),
            (Reading::Count(a), Reading::Seconds(b)) | (Reading::Seconds(b), Reading::Count(a)) => {
                Reading::Seconds(a as f64 + b)
            }
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

/// One store statistic, as Prometheus shows it.
enum Reading {
    Count(u64),
    Seconds(f64),
}

fn count(counter: &AtomicU64) -> Reading {
    Reading::Count(counter.load(Ordering::Relaxed))
}

fn seconds(nanos: &AtomicU64) -> Reading {
    Reading::Seconds(nanos.load(Ordering::Relaxed) as f64 / 1e9)
}

type Read = fn(&Table) -> Reading;

const STORE_COUNTERS: [(&str, &str, Read); 14] = [
    ("weft_store_rows_appended", "Rows made durable in the WAL", |t| count(&t.stats().rows_appended)),
    ("weft_store_wal_bytes", "Bytes written to the WAL", |t| count(&t.stats().wal_bytes)),
    ("weft_store_wal_fsyncs", "WAL group commits (one fdatasync each)", |t| count(&t.stats().wal_syncs)),
    (
        "weft_store_wal_fsync_seconds",
        "Time spent writing and syncing WAL groups; divide by weft_store_wal_fsyncs_total for the mean latency",
        |t| seconds(&t.stats().wal_sync_nanos),
    ),
    ("weft_store_segments_written", "Parquet segments written by flushes", |t| count(&t.stats().segments_written)),
    ("weft_store_segment_bytes", "Bytes of Parquet written by flushes", |t| count(&t.stats().segment_bytes)),
    (
        "weft_store_flush_seconds",
        "Time spent flushing (sort, Parquet, index, catalog)",
        |t| seconds(&t.stats().flush_nanos),
    ),
    ("weft_store_flush_errors", "Flushes that failed and will be retried", |t| count(&t.stats().flush_errors)),
    ("weft_store_compactions", "Merges of small segments into one", |t| count(&t.stats().compactions)),
    ("weft_store_segments_merged", "Segments replaced by merges", |t| count(&t.stats().segments_merged)),
    (
        "weft_store_compaction_seconds",
        "Time spent merging segments (read, sort, Parquet, index, catalog)",
        |t| seconds(&t.stats().compaction_nanos),
    ),
    ("weft_store_compaction_errors", "Merges that failed; their segments stay as they were", |t| count(&t.stats().compaction_errors)),
    ("weft_store_segments_expired", "Segments dropped by retention", |t| count(&t.stats().segments_expired)),
    ("weft_store_orphans_deleted", "Segments in the object store that no catalog named for the deletion grace, deleted", |t| count(&t.stats().orphans_deleted)),
];

const STORE_GAUGES: [(&str, &str, Read); 2] = [
    (
        "weft_store_buffered_bytes",
        "Acknowledged bytes waiting to be flushed to a segment (the ingest queue depth)",
        |t| Reading::Count(t.buffered_bytes() as u64),
    ),
    ("weft_store_segments", "Segments in the catalog", |t| {
        Reading::Count(t.segment_count() as u64)
    }),
];

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for (readings, metric_type) in [
            (STORE_COUNTERS.as_slice(), MetricType::Counter),
            (STORE_GAUGES.as_slice(), MetricType::Gauge),
        ] {
            for (name, help, read) in readings {
                let mut family = encoder.encode_descriptor(name, help, None, metric_type)?;
                for signal in Signal::ALL {
                    let labels = TableLabels {
                        table: signal.table_name(),
                    };
                    let metric = family.encode_family(&labels)?;
                    match (self.total(signal, *read), metric_type) {
                        (Reading::Count(n), MetricType::Counter) => {
                            ConstCounter::new(n).encode(metric)?
                        }
                        (Reading::Seconds(s), MetricType::Counter) => {
                            ConstCounter::new(s).encode(metric)?
                        }
                        (Reading::Count(n), _) => ConstGauge::new(n as i64).encode(metric)?,
                        (Reading::Seconds(s), _) => ConstGauge::new(s).encode(metric)?,
                    }
                }
            }
        }
        Ok(())
    }
}

/// Renders `registry` in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("writing to a String cannot fail");
    out
}

/// The `/metrics` route, shared by the OTLP/HTTP port and the API port.
#[derive(Clone)]
pub struct MetricsEndpoint {
    registry: Arc<Registry>,
}

impl MetricsEndpoint {
    pub fn new(registry: Registry) -> Self {
        Self {
            registry: Arc::new(registry),
        }
    }

    pub fn router(&self) -> axum::Router {
        let registry = self.registry.clone();
        axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let registry = registry.clone();
                async move {
                    (
                        [(
                            http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        render(&registry),
                    )
                }
            }),
        )
    }
}
