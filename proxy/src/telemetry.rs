//! A proxy's own traces and access logs, through the OpenTelemetry SDK
//! and its OTLP/gRPC exporter.
//!
//! Finished spans and log records go into bounded queues that the request
//! path never waits on: a full queue, or an export that fails, drops records
//! and counts them (the proxy's `…_telemetry_dropped_total` metric), so a collector
//! that is down or slow never slows the proxy.

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use http::HeaderMap;
use opentelemetry::logs::{AnyValue, LogRecord, Logger, LoggerProvider, Severity};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanKind, Status, TraceContextExt, Tracer, TracerProvider,
};
use opentelemetry::{Context, InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::logs::{
    LogBatch, LogExporter, LogProcessor, SdkLogRecord, SdkLogger, SdkLoggerProvider,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, SdkTracer, SdkTracerProvider,
    ShouldSample, SpanData, SpanExporter, SpanProcessor,
};
use opentelemetry_sdk::Resource;
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use tokio::sync::{mpsc, watch};

use serde::{Deserialize, Serialize};

/// Tracing and access logs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// OTLP/gRPC endpoint of the collector, e.g. `http://127.0.0.1:4317`; none
    /// turns exporting off (trace context is still propagated).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the proxy's spans and logs (the proxy's own name,
    /// e.g. `weft-gateway`, when unset).
    pub service_name: Option<String>,
    /// Fraction of new traces recorded, 0.0–1.0; incoming sampled traces are always recorded.
    pub sampling: f64,
    /// One OTLP log record per request, carrying its trace id.
    pub access_log: bool,
    /// Spans or log records waiting for export beyond this are dropped (and counted).
    pub max_queue: usize,
    /// Records per export request.
    pub max_batch: usize,
    /// Longest a record waits before its batch is sent.
    #[serde(with = "humantime_serde")]
    pub batch_timeout: Duration,
    /// An export that takes longer is abandoned and its records counted as dropped.
    #[serde(with = "humantime_serde")]
    pub export_timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: None,
            sampling: 1.0,
            access_log: true,
            max_queue: 16_384,
            max_batch: 1_024,
            batch_timeout: Duration::from_millis(200),
            export_timeout: Duration::from_secs(5),
        }
    }
}

impl TelemetryConfig {
    /// Checks the values; an error names the field and the reason.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if !(0.0..=1.0).contains(&self.sampling) {
            return Err((
                "sampling",
                format!("must be between 0 and 1, got {}", self.sampling),
            ));
        }
        if self.max_queue == 0 || self.max_batch == 0 {
            return Err((
                "max_queue",
                "max_queue and max_batch must be at least 1".to_string(),
            ));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            if endpoint
                .parse::<http::Uri>()
                .map(|u| u.host().is_none())
                .unwrap_or(true)
            {
                return Err((
                    "otlp_endpoint",
                    format!("{endpoint:?} is not an absolute URL such as http://127.0.0.1:4317"),
                ));
            }
        }
        Ok(())
    }
}

/// Counts of what was exported and what was dropped, per signal.
#[derive(Debug, Default)]
pub struct TelemetryCounters {
    pub spans_exported: AtomicU64,
    pub spans_dropped: AtomicU64,
    pub logs_exported: AtomicU64,
    pub logs_dropped: AtomicU64,
}

/// Tracing and access logging for every request.
pub struct Telemetry {
    tracer: SdkTracer,
    /// Without an exporter spans are not recorded at all: a request only gets
    /// ids and a sampling decision to pass on in `traceparent`.
    recording: bool,
    sampler: Sampler,
    ids: RandomIdGenerator,
    logger: SdkLogger,
    propagator: TraceContextPropagator,
    access_log: bool,
    counters: Arc<TelemetryCounters>,
    tracer_provider: SdkTracerProvider,
    logger_provider: SdkLoggerProvider,
    stop: watch::Sender<bool>,
    exporters: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// Why telemetry could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the OTLP exporter for {endpoint}: {reason}")]
pub struct TelemetryError {
    endpoint: String,
    reason: String,
}

impl Telemetry {
    /// Sets up the SDK; exporting starts only with an `otlp_endpoint`.
    /// `proxy` names the instrumentation scope, and the service when the
    /// config names none. Must run inside the tokio runtime (the exporters
    /// are tasks on it).
    pub fn start(config: &TelemetryConfig, proxy: &'static str) -> Result<Self, TelemetryError> {
        Self::start_counting(config, proxy, Arc::default())
    }

    /// [`start`](Self::start), adding to `counters` (which outlive this
    /// instance when a proxy restarts its telemetry with new settings).
    pub fn start_counting(
        config: &TelemetryConfig,
        proxy: &'static str,
        counters: Arc<TelemetryCounters>,
    ) -> Result<Self, TelemetryError> {
        let service_name = config.service_name.as_deref().unwrap_or(proxy).to_string();
        let resource = Resource::builder().with_service_name(service_name).build();
        let (stop, stopped) = watch::channel(false);
        let sampler = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(config.sampling)));
        let mut tracer_provider = SdkTracerProvider::builder()
            .with_sampler(sampler.clone())
            .with_resource(resource.clone());
        let mut logger_provider = SdkLoggerProvider::builder().with_resource(resource.clone());
        let mut exporters = Vec::new();
        if let Some(endpoint) = &config.otlp_endpoint {
            let error = |reason: String| TelemetryError {
                endpoint: endpoint.clone(),
                reason,
            };
            let mut span_exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(config.export_timeout)
                .build()
                .map_err(|e| error(e.to_string()))?;
            span_exporter.set_resource(&resource);
            let span_exporter = Arc::new(span_exporter);
            let mut log_exporter = opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone())
                .with_timeout(config.export_timeout)
                .build()
                .map_err(|e| error(e.to_string()))?;
            log_exporter.set_resource(&resource);

            let (spans, span_queue) = mpsc::channel(config.max_queue);
            exporters.push(tokio::spawn(export_loop(
                span_queue,
                config.clone(),
                stopped.clone(),
                counters.clone(),
                Signal::Spans,
                move |batch: Vec<SpanData>| {
                    let exporter = span_exporter.clone();
                    async move { exporter.export(batch).await }
                },
            )));
            tracer_provider = tracer_provider.with_span_processor(QueueSpanProcessor {
                queue: spans,
                counters: counters.clone(),
            });

            let (logs, log_queue) = mpsc::channel(config.max_queue);
            let scope = InstrumentationScope::builder(proxy).build();
            let log_exporter = Arc::new(log_exporter);
            exporters.push(tokio::spawn(export_loop(
                log_queue,
                config.clone(),
                stopped,
                counters.clone(),
                Signal::Logs,
                move |batch: Vec<SdkLogRecord>| {
                    let (exporter, scope) = (log_exporter.clone(), scope.clone());
                    async move {
                        let pairs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
                            batch.iter().map(|r| (r, &scope)).collect();
                        exporter.export(LogBatch::new(&pairs)).await
                    }
                },
            )));
            logger_provider = logger_provider.with_log_processor(QueueLogProcessor {
                queue: logs,
                counters: counters.clone(),
            });
        }
        let tracer_provider = tracer_provider.build();
        let logger_provider = logger_provider.build();
        Ok(Self {
            tracer: tracer_provider.tracer(proxy),
            recording: config.otlp_endpoint.is_some(),
            sampler,
            ids: RandomIdGenerator::default(),
            logger: logger_provider.logger(proxy),
            propagator: TraceContextPropagator::new(),
            access_log: config.access_log && config.otlp_endpoint.is_some(),
            counters,
            tracer_provider,
            logger_provider,
            stop,
            exporters: Mutex::new(exporters),
        })
    }

    /// Starts the SERVER span of a request, continuing the caller's trace
    /// when its `traceparent` says so. `attributes` is called only for a
    /// span that is recorded.
    pub fn server_span(
        &self,
        headers: &HeaderMap,
        name: impl Into<Cow<'static, str>>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        let parent = self.extract(headers);
        self.start_span(&parent, SpanKind::Server, name.into(), attributes)
    }

    /// The caller's trace context from its `traceparent`/`tracestate`
    /// (an empty context when there is none).
    pub fn extract(&self, headers: &HeaderMap) -> Context {
        self.propagator.extract(&HeaderExtractor(headers))
    }

    /// Starts a CLIENT span for one upstream attempt, child of `parent`.
    /// `attributes` is called only for a span that is recorded.
    pub fn client_span(
        &self,
        parent: &Context,
        name: impl Into<Cow<'static, str>>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        self.start_span(parent, SpanKind::Client, name.into(), attributes)
    }

    fn start_span(
        &self,
        parent: &Context,
        kind: SpanKind,
        name: Cow<'static, str>,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> Context {
        if !self.recording {
            return self.propagated_only(parent, &kind, &name);
        }
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(kind)
            .start_with_context(&self.tracer, parent);
        // Attributes go on after the sampling decision, so that a request
        // whose span is dropped never builds them (the ratio sampler does not
        // look at attributes).
        if span.is_recording() {
            span.set_attributes(attributes());
        }
        parent.with_span(span)
    }

    /// A span that nothing records: the ids and the sampling decision the
    /// SDK would have given it, so that `traceparent` goes on exactly as with
    /// exporting on, without the cost of a span nobody receives.
    fn propagated_only(&self, parent: &Context, kind: &SpanKind, name: &str) -> Context {
        let parent_span = parent.span();
        let parent_context = parent_span.span_context();
        let trace_id = if parent_context.is_valid() {
            parent_context.trace_id()
        } else {
            self.ids.new_trace_id()
        };
        let decision = self
            .sampler
            .should_sample(Some(parent), trace_id, name, kind, &[], &[]);
        let sampled = decision.decision == SamplingDecision::RecordAndSample;
        let context = SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            parent_context.trace_flags().with_sampled(sampled),
            false,
            decision.trace_state,
        );
        parent.with_remote_span_context(context)
    }

    /// Writes `cx`'s `traceparent`/`tracestate` into outgoing headers.
    pub fn inject(&self, cx: &Context, headers: &mut HeaderMap) {
        self.propagator
            .inject_context(cx, &mut HeaderInjector(headers));
    }

    /// One access-log record for a finished request, tied to its span:
    /// `record` gives its body and attributes, and is called only when
    /// access logs are exported.
    pub fn access_log(
        &self,
        cx: &Context,
        status: u16,
        record: impl FnOnce() -> (String, Vec<(&'static str, AnyValue)>),
    ) {
        if !self.access_log {
            return;
        }
        let (body, attributes) = record();
        let span_context = cx.span().span_context().clone();
        let mut record = self.logger.create_log_record();
        let now = SystemTime::now();
        record.set_timestamp(now);
        record.set_observed_timestamp(now);
        let (severity, text) = if status >= 500 {
            (Severity::Error, "ERROR")
        } else if status >= 400 {
            (Severity::Warn, "WARN")
        } else {
            (Severity::Info, "INFO")
        };
        record.set_severity_number(severity);
        record.set_severity_text(text);
        record.set_event_name("http.access");
        record.set_body(AnyValue::from(body));
        record.add_attributes(attributes);
        if span_context.is_valid() {
            record.set_trace_context(
                span_context.trace_id(),
                span_context.span_id(),
                Some(span_context.trace_flags()),
            );
        }
        self.logger.emit(record);
    }

    /// Whether access-log records are exported (so worth preparing).
    pub fn logs_access(&self) -> bool {
        self.access_log
    }

    /// What was exported and dropped so far.
    pub fn counters(&self) -> &Arc<TelemetryCounters> {
        &self.counters
    }

    /// Sends what is queued (within `deadline`) and stops the exporters.
    pub async fn shutdown(&self, deadline: Duration) {
        let _ = self.tracer_provider.shutdown();
        let _ = self.logger_provider.shutdown();
        let _ = self.stop.send(true);
        let exporters = std::mem::take(&mut *self.exporters.lock());
        for exporter in exporters {
            let abort = exporter.abort_handle();
            if tokio::time::timeout(deadline, exporter).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// A request method as a span name or attribute value, without an
/// allocation for the standard ones.
pub fn method_name(method: &http::Method) -> Cow<'static, str> {
    use http::Method;
    let name = match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => return Cow::Owned(method.as_str().to_string()),
    };
    Cow::Borrowed(name)
}

/// Ends a span with the status semantic conventions give its kind: a server
/// span fails on 5xx, a client span on 4xx too.
pub fn end_span(cx: &Context, status: Option<u16>, error: Option<String>, client: bool) {
    let span = cx.span();
    if let Some(status) = status {
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 || (client && status >= 400) {
            span.set_status(Status::error(""));
        }
    }
    if let Some(error) = error {
        span.set_attribute(KeyValue::new("error.type", error.clone()));
        span.set_status(Status::error(error));
    }
    span.end();
}

#[derive(Clone, Copy)]
enum Signal {
    Spans,
    Logs,
}

impl Signal {
    fn name(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Logs => "logs",
        }
    }

    fn counters(self, counters: &TelemetryCounters) -> (&AtomicU64, &AtomicU64) {
        match self {
            Signal::Spans => (&counters.spans_exported, &counters.spans_dropped),
            Signal::Logs => (&counters.logs_exported, &counters.logs_dropped),
        }
    }
}

/// Batches a queue into export calls, one at a time: by size, or after
/// `batch_timeout`; on `stop`, sends what is left and ends.
async fn export_loop<T, F, Fut>(
    mut queue: mpsc::Receiver<T>,
    config: TelemetryConfig,
    mut stop: watch::Receiver<bool>,
    counters: Arc<TelemetryCounters>,
    signal: Signal,
    mut export: F,
) where
    F: FnMut(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = OTelSdkResult>,
{
    let (exported, dropped) = signal.counters(&counters);
    let failing = AtomicBool::new(false);
    let mut stopping = false;
    loop {
        let mut batch = Vec::with_capacity(config.max_batch);
        if !stopping {
            tokio::select! {
                n = queue.recv_many(&mut batch, config.max_batch) => if n == 0 { return },
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
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        }
        let len = batch.len() as u64;
        match tokio::time::timeout(config.export_timeout, export(batch)).await {
            Ok(Ok(())) => {
                exported.fetch_add(len, Ordering::Relaxed);
                if failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(signal = signal.name(), "telemetry export works again");
                }
            }
            outcome => {
                dropped.fetch_add(len, Ordering::Relaxed);
                if !failing.swap(true, Ordering::Relaxed) {
                    let reason = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(signal = signal.name(), %reason, "telemetry export failed; dropping until it works again");
                }
            }
        }
    }
}

#[derive(Debug)]
struct QueueSpanProcessor {
    queue: mpsc::Sender<SpanData>,
    counters: Arc<TelemetryCounters>,
}

impl SpanProcessor for QueueSpanProcessor {
    fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &Context) {}

    fn on_end(&self, span: SpanData) {
        if span.span_context.is_sampled() && self.queue.try_send(span).is_err() {
            self.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

#[derive(Debug)]
struct QueueLogProcessor {
    queue: mpsc::Sender<SdkLogRecord>,
    counters: Arc<TelemetryCounters>,
}

impl LogProcessor for QueueLogProcessor {
    fn emit(&self, record: &mut SdkLogRecord, _: &InstrumentationScope) {
        if self.queue.try_send(record.clone()).is_err() {
            self.counters.logs_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        Ok(())
    }

    fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
        Ok(())
    }
}

struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeaderInjector<'a>(&'a mut HeaderMap);

impl Injector for HeaderInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::try_from(value),
        ) {
            self.0.insert(name, value);
        }
    }
}

/// Reports [`TelemetryCounters`] at scrape time as
/// `<prefix>_telemetry_exported_total` and `<prefix>_telemetry_dropped_total`,
/// labelled by `signal` (`spans`, `logs`).
#[derive(Debug)]
pub struct TelemetryCollector {
    prefix: &'static str,
    counters: Arc<TelemetryCounters>,
}

impl TelemetryCollector {
    pub fn new(prefix: &'static str, counters: Arc<TelemetryCounters>) -> Self {
        Self { prefix, counters }
    }
}

impl Collector for TelemetryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let t = &self.counters;
        for (what, help, readings) in [
            (
                "exported",
                "Spans and log records the collector accepted",
                [("spans", &t.spans_exported), ("logs", &t.logs_exported)],
            ),
            (
                "dropped",
                "Spans and log records dropped because the export queue was full or the export failed",
                [("spans", &t.spans_dropped), ("logs", &t.logs_dropped)],
            ),
        ] {
            let name = format!("{}_telemetry_{what}", self.prefix);
            let mut family = encoder.encode_descriptor(&name, help, None, MetricType::Counter)?;
            for (signal, reading) in readings {
                ConstCounter::new(reading.load(Ordering::Relaxed))
                    .encode(family.encode_family(&[("signal", signal)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a request forwarded through a proxy without an exporter carries on.
    fn forwarded(sampling: f64, incoming: Option<&str>) -> String {
        let config = TelemetryConfig {
            sampling,
            ..TelemetryConfig::default()
        };
        let telemetry = Telemetry::start(&config, "test-proxy").unwrap();
        let mut headers = HeaderMap::new();
        if let Some(traceparent) = incoming {
            headers.insert("traceparent", traceparent.parse().unwrap());
        }
        let server = telemetry.server_span(&headers, "GET", || panic!("nothing records"));
        let client = telemetry.client_span(&server, "GET", || panic!("nothing records"));
        let mut outgoing = HeaderMap::new();
        telemetry.inject(&client, &mut outgoing);
        outgoing["traceparent"].to_str().unwrap().to_string()
    }

    #[test]
    fn without_an_exporter_the_callers_trace_goes_on_with_a_new_span_id() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let sent = forwarded(1.0, Some(caller));
        let parts: Vec<&str> = sent.split('-').collect();
        assert_eq!(parts[1], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(parts[2], "00f067aa0ba902b7");
        assert_eq!(parts[3], "01");

        // A caller that did not sample keeps its decision, whatever the ratio.
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert!(forwarded(1.0, Some(unsampled)).ends_with("-00"));
    }

    #[test]
    fn without_an_exporter_a_new_trace_is_started_and_sampled_by_the_ratio() {
        let all = forwarded(1.0, None);
        let parts: Vec<&str> = all.split('-').collect();
        assert_eq!(parts[1].len(), 32);
        assert_ne!(parts[1], "0".repeat(32));
        assert_eq!(parts[3], "01");
        assert_ne!(
            forwarded(1.0, None),
            all,
            "every request starts its own trace"
        );
        assert!(forwarded(0.0, None).ends_with("-00"));
    }
}
