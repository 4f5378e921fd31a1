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

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};
use tonic::Status;

use super::wire::{field_len, len_header};
use super::{otlp_key_value, TelemetryConfig, TelemetryCounters};

/// Exports of one signal running at once.
const EXPORTS_IN_FLIGHT: usize = 4;

/// How often a batch being gathered looks whether the queue holds enough
/// records to fill it.
const GATHER_TICK: Duration = Duration::from_millis(5);

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
/// `OTEL_RESOURCE_ATTRIBUTES`) and the proxy as instrumentation scope, both
/// encoded once.
#[derive(Clone)]
pub(super) struct Destination {
    channel: Channel,
    resource: Bytes,
    scope: Bytes,
}

impl Destination {
    pub(super) fn new(channel: Channel, service_name: &str, proxy: &'static str) -> Self {
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(service_name.to_string())
            .build();
        let resource = Resource {
            attributes: resource
                .iter()
                .map(|(key, value)| {
                    otlp_key_value(opentelemetry::KeyValue::new(key.clone(), value.clone()))
                })
                .collect(),
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: proxy.to_string(),
            ..InstrumentationScope::default()
        };
        Self {
            channel,
            resource: resource.encode_to_vec().into(),
            scope: scope.encode_to_vec().into(),
        }
    }
}

/// One signal's export call. Records arrive encoded (a `Span` or a
/// `LogRecord` message each, encoded on the request path when it ends), and
/// both signals' export requests have the same shape, so an export only
/// splices bytes (see [`Batch`]).
pub(super) trait Export: Clone + Send + Sync + 'static {
    /// `ExportTraceServiceResponse` or `ExportLogsServiceResponse`.
    type Response: Message + Default + Send + Sync + 'static;
    const SIGNAL: &'static str;
    /// The gRPC method, `/<service>/Export`.
    const METHOD: &'static str;

    fn destination(&self) -> &Destination;

    /// The signal's exported and dropped counters.
    fn counters(counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64);

    /// How many records the collector refused (OTLP partial success).
    fn rejected(response: &Self::Response) -> i64;
}

#[derive(Clone)]
pub(super) struct Spans(pub(super) Destination);

impl Export for Spans {
    type Response = ExportTraceServiceResponse;
    const SIGNAL: &'static str = "spans";
    const METHOD: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

    fn destination(&self) -> &Destination {
        &self.0
    }

    fn counters(counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64) {
        (&counters.spans_exported, &counters.spans_dropped)
    }

    fn rejected(response: &ExportTraceServiceResponse) -> i64 {
        response
            .partial_success
            .as_ref()
            .map_or(0, |p| p.rejected_spans)
    }
}

#[derive(Clone)]
pub(super) struct Logs(pub(super) Destination);

impl Export for Logs {
    type Response = ExportLogsServiceResponse;
    const SIGNAL: &'static str = "logs";
    const METHOD: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

    fn destination(&self) -> &Destination {
        &self.0
    }

    fn counters(counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64) {
        (&counters.logs_exported, &counters.logs_dropped)
    }

    fn rejected(response: &ExportLogsServiceResponse) -> i64 {
        response
            .partial_success
            .as_ref()
            .map_or(0, |p| p.rejected_log_records)
    }
}

/// Sends one batch; what comes back is how many records the collector refused.
async fn export<E: Export>(exporter: E, records: Vec<Vec<u8>>) -> Result<u64, Status> {
    let Destination {
        channel,
        resource,
        scope,
    } = exporter.destination().clone();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(format!("collector not ready: {e}")))?;
    let batch = Batch {
        resource,
        scope,
        records,
    };
    let response = grpc
        .unary(
            tonic::Request::new(batch),
            PathAndQuery::from_static(E::METHOD),
            BatchCodec::<E::Response>(PhantomData),
        )
        .await?;
    Ok(u64::try_from(E::rejected(response.get_ref())).unwrap_or(0))
}

/// An export request, written as protobuf without building its messages:
/// `Export{Trace,Logs}ServiceRequest` is field 1 `Resource{Spans,Logs}`,
/// which is field 1 the resource and field 2 `Scope{Spans,Logs}`, which is
/// field 1 the scope and field 2 each record, for traces and logs alike.
/// prost would walk every record's attributes once per enclosing message to
/// size it; here each record was sized and encoded once, when it ended.
struct Batch {
    resource: Bytes,
    scope: Bytes,
    records: Vec<Vec<u8>>,
}

impl Batch {
    fn encode(&self, out: &mut impl BufMut) {
        let records: usize = self.records.iter().map(|r| field_len(r.len())).sum();
        let scoped = field_len(self.scope.len()) + records;
        let resourced = field_len(self.resource.len()) + field_len(scoped);
        len_header(out, 1, resourced);
        len_header(out, 1, self.resource.len());
        out.put_slice(&self.resource);
        len_header(out, 2, scoped);
        len_header(out, 1, self.scope.len());
        out.put_slice(&self.scope);
        for record in &self.records {
            len_header(out, 2, record.len());
            out.put_slice(record);
        }
    }
}

/// Writes a [`Batch`], reads the signal's response.
struct BatchCodec<R>(PhantomData<R>);

impl<R: Message + Default + Send + 'static> Codec for BatchCodec<R> {
    type Encode = Batch;
    type Decode = R;
    type Encoder = BatchEncoder;
    type Decoder = ResponseDecoder<R>;

    fn encoder(&mut self) -> BatchEncoder {
        BatchEncoder
    }

    fn decoder(&mut self) -> ResponseDecoder<R> {
        ResponseDecoder(PhantomData)
    }
}

struct BatchEncoder;

impl Encoder for BatchEncoder {
    type Item = Batch;
    type Error = Status;

    fn encode(&mut self, batch: Batch, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        batch.encode(dst);
        Ok(())
    }
}

struct ResponseDecoder<R>(PhantomData<R>);

impl<R: Message + Default> Decoder for ResponseDecoder<R> {
    type Item = R;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<R>, Status> {
        R::decode(src)
            .map(Some)
            .map_err(|e| Status::internal(format!("the collector's answer does not decode: {e}")))
    }
}

/// Batches `queue` into exports: by size, or after `batch_timeout`; on
/// `stop`, sends what is left, waits for the exports in flight and ends.
pub(super) async fn run<E: Export>(
    mut queue: mpsc::Receiver<Vec<u8>>,
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
            // The rest of the batch is gathered by looking at the queue now
            // and then, not by waking up for every record: the request path
            // runs on other threads (`Workers`), and a wake-up per record
            // would cost it a cross-thread hand-off each time.
            let deadline = Instant::now() + config.batch_timeout;
            while !stopping && batch.len() + queue.len() < config.max_batch {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                tokio::select! {
                    () = tokio::time::sleep(GATHER_TICK.min(left)) => {}
                    _ = stop.wait_for(|stop| *stop) => stopping = true,
                }
            }
        }
        while batch.len() < config.max_batch {
            match queue.try_recv() {
                Ok(record) => batch.push(record),
                Err(_) => break,
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
    batch: Vec<Vec<u8>>,
    timeout: Duration,
    counters: Arc<TelemetryCounters>,
    failing: Arc<AtomicBool>,
    _permit: OwnedSemaphorePermit,
) {
    let (exported, dropped) = E::counters(&counters);
    let len = batch.len() as u64;
    let signal = E::SIGNAL;
    match tokio::time::timeout(timeout, export(exporter, batch)).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn attribute(key: &str, value: String) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(value)),
            }),
            ..KeyValue::default()
        }
    }

    fn spliced(
        resource: &Resource,
        scope: &InstrumentationScope,
        records: Vec<Vec<u8>>,
    ) -> Vec<u8> {
        let batch = Batch {
            resource: resource.encode_to_vec().into(),
            scope: scope.encode_to_vec().into(),
            records,
        };
        let mut out = Vec::new();
        batch.encode(&mut out);
        out
    }

    #[test]
    fn a_spliced_batch_is_the_export_request_prost_would_write() {
        let resource = Resource {
            attributes: vec![attribute("service.name", "crm-gateway".into())],
            ..Resource::default()
        };
        let scope = InstrumentationScope {
            name: "weft-gateway".into(),
            ..InstrumentationScope::default()
        };
        // Sizes around the one- and two-byte varint boundary, and none at all.
        for count in [0, 1, 3, 200] {
            let spans: Vec<Span> = (0..count)
                .map(|i| Span {
                    trace_id: vec![i as u8; 16],
                    span_id: vec![7; 8],
                    name: format!("GET /accounts/{i}"),
                    attributes: vec![attribute("url.path", "x".repeat(i * 3))],
                    start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                    ..Span::default()
                })
                .collect();
            let expected = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    resource: Some(resource.clone()),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(scope.clone()),
                        spans: spans.clone(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let records = spans.iter().map(Message::encode_to_vec).collect();
            assert_eq!(
                spliced(&resource, &scope, records),
                expected.encode_to_vec(),
                "{count} spans"
            );

            let logs: Vec<LogRecord> = (0..count)
                .map(|i| LogRecord {
                    time_unix_nano: i as u64,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("y".repeat(i))),
                    }),
                    ..LogRecord::default()
                })
                .collect();
            let expected = ExportLogsServiceRequest {
                resource_logs: vec![ResourceLogs {
                    resource: Some(resource.clone()),
                    scope_logs: vec![ScopeLogs {
                        scope: Some(scope.clone()),
                        log_records: logs.clone(),
                        schema_url: String::new(),
                    }],
                    schema_url: String::new(),
                }],
            };
            let records = logs.iter().map(Message::encode_to_vec).collect();
            assert_eq!(
                spliced(&resource, &scope, records),
                expected.encode_to_vec(),
                "{count} log records"
            );
        }
    }
}
