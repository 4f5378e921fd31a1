//! Batches of spans and access-log records, sent to the collector over
//! OTLP/gRPC.
//!
//! One loop per signal takes what the request path queued, by batch size
//! or after the batch timeout, and starts an export for it; up to
//! [`EXPORTS_IN_FLIGHT`] run at once, because a collector acknowledges only
//! what it has made durable and one export at a time would cap the
//! proxy's telemetry at a batch per fsync. When all are in flight the loop
//! waits, the queue fills, and the request path drops (and counts) what no
//! longer fits: the collector's pace sets how much is kept.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use super::{otlp_key_value, TelemetryConfig, TelemetryCounters};

/// Exports of one signal running at once.
const EXPORTS_IN_FLIGHT: usize = 4;

/// A connection to the collector at `endpoint` (`http://` or `https://`),
/// opened on first use and reopened when it fails.
pub(super) fn channel(endpoint: &str, connect_timeout: Duration) -> Result<Channel, String> {
    let mut channel = Endpoint::from_shared(endpoint.to_string())
        .map_err(|e| e.to_string())?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true);
    if endpoint.starts_with("https://") {
        channel = channel
            .tls_config(ClientTlsConfig::new().with_native_roots())
            .map_err(|e| e.to_string())?;
    }
    Ok(channel.connect_lazy())
}

/// Where a proxy's records go, and what they are about: the same resource
/// the SDK would give them (`service.name`, `telemetry.sdk.*` and
/// `OTEL_RESOURCE_ATTRIBUTES`) and the proxy as instrumentation scope.
#[derive(Clone)]
pub(super) struct Destination {
    channel: Channel,
    resource: Resource,
    scope: InstrumentationScope,
}

impl Destination {
    pub(super) fn new(channel: Channel, service_name: &str, proxy: &'static str) -> Self {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_string())
            .build();
        Self {
            channel,
            resource: Resource {
                attributes: resource
                    .iter()
                    .map(|(key, value)| {
                        otlp_key_value(opentelemetry::KeyValue::new(key.clone(), value.clone()))
                    })
                    .collect(),
                ..Resource::default()
            },
            scope: InstrumentationScope {
                name: proxy.to_string(),
                ..InstrumentationScope::default()
            },
        }
    }
}

/// One signal's export call.
pub(super) trait Export: Clone + Send + Sync + 'static {
    type Record: Send + 'static;
    const SIGNAL: &'static str;

    /// The signal's exported and dropped counters.
    fn counters(counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64);

    /// Sends one batch; what comes back is how many records the collector
    /// refused (OTLP partial success).
    fn export(
        self,
        batch: Vec<Self::Record>,
    ) -> impl Future<Output = Result<u64, tonic::Status>> + Send;
}

#[derive(Clone)]
pub(super) struct Spans(pub(super) Destination);

impl Export for Spans {
    type Record = Span;
    const SIGNAL: &'static str = "spans";

    fn counters(counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64) {
        (&counters.spans_exported, &counters.spans_dropped)
    }

    fn export(self, spans: Vec<Span>) -> impl Future<Output = Result<u64, tonic::Status>> + Send {
        let Destination {
            channel,
            resource,
            scope,
        } = self.0;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        async move {
            let response = TraceServiceClient::new(channel).export(request).await?;
            let rejected = response
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_spans);
            Ok(u64::try_from(rejected).unwrap_or(0))
        }
    }
}

#[derive(Clone)]
pub(super) struct Logs(pub(super) Destination);

impl Export for Logs {
    type Record = LogRecord;
    const SIGNAL: &'static str = "logs";

    fn counters(counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64) {
        (&counters.logs_exported, &counters.logs_dropped)
    }

    fn export(
        self,
        log_records: Vec<LogRecord>,
    ) -> impl Future<Output = Result<u64, tonic::Status>> + Send {
        let Destination {
            channel,
            resource,
            scope,
        } = self.0;
        let request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource),
                scope_logs: vec![ScopeLogs {
                    scope: Some(scope),
                    log_records,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        async move {
            let response = LogsServiceClient::new(channel).export(request).await?;
            let rejected = response
                .into_inner()
                .partial_success
                .map_or(0, |p| p.rejected_log_records);
            Ok(u64::try_from(rejected).unwrap_or(0))
        }
    }
}

/// Batches `queue` into exports: by size, or after `batch_timeout`; on
/// `stop`, sends what is left, waits for the exports in flight and ends.
pub(super) async fn run<E: Export>(
    mut queue: mpsc::Receiver<E::Record>,
    exporter: E,
    config: TelemetryConfig,
    mut stop: watch::Receiver<bool>,
    counters: Arc<TelemetryCounters>,
) {
    let in_flight = Arc::new(Semaphore::new(EXPORTS_IN_FLIGHT));
    let failing = Arc::new(AtomicBool::new(false));
    let mut stopping = false;
    loop {
        let mut batch = Vec::with_capacity(config.max_batch);
        if !stopping {
            tokio::select! {
                n = queue.recv_many(&mut batch, config.max_batch) => if n == 0 { break },
                _ = stop.wait_for(|stop| *stop) => stopping = true,
            }
            let deadline = tokio::time::sleep(config.batch_timeout);
            tokio::pin!(deadline);
            while batch.len() < config.max_batch && !stopping {
                let room = config.max_batch - batch.len();
                tokio::select! {
                    n = queue.recv_many(&mut batch, room) => if n == 0 { break },
                    () = &mut deadline => break,
                    _ = stop.wait_for(|stop| *stop) => stopping = true,
                }
            }
        }
        if stopping {
            while batch.len() < config.max_batch {
                match queue.try_recv() {
                    Ok(record) => batch.push(record),
                    Err(_) => break,
                }
            }
        }
        if batch.is_empty() {
            break;
        }
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        tokio::spawn(export_batch(
            exporter.clone(),
            batch,
            config.export_timeout,
            counters.clone(),
            failing.clone(),
            permit,
        ));
    }
    // Every export has ended once all permits are back.
    let _ = in_flight.acquire_many(EXPORTS_IN_FLIGHT as u32).await;
}

/// One export, counted; the first failure after a success is logged, and
/// so is the first success after a failure.
async fn export_batch<E: Export>(
    exporter: E,
    batch: Vec<E::Record>,
    timeout: Duration,
    counters: Arc<TelemetryCounters>,
    failing: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
) {
    let (exported, dropped) = E::counters(&counters);
    let len = batch.len() as u64;
    let signal = E::SIGNAL;
    match tokio::time::timeout(timeout, exporter.export(batch)).await {
        Ok(Ok(rejected)) => {
            let rejected = rejected.min(len);
            exported.fetch_add(len - rejected, Ordering::Relaxed);
            dropped.fetch_add(rejected, Ordering::Relaxed);
            if rejected > 0 {
                tracing::debug!(signal, rejected, "the collector refused part of an export");
            }
            if failing.swap(false, Ordering::Relaxed) {
                tracing::info!(signal, "telemetry export works again");
            }
        }
        outcome => {
            dropped.fetch_add(len, Ordering::Relaxed);
            if !failing.swap(true, Ordering::Relaxed) {
                let reason = match outcome {
                    Ok(Err(status)) => status.to_string(),
                    _ => "timed out".to_string(),
                };
                tracing::warn!(signal, %reason, "telemetry export failed; dropping until it works again");
            }
        }
    }
}
