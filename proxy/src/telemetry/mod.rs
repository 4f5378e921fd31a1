//! A proxy's own traces and access logs, as OTLP.
//!
//! A request's spans and its access-log record are written as the OTLP
//! protobuf they are sent as, field by field while the request runs (see
//! [`wire`]), and handed to bounded queues that the request path never waits
//! on; an exporter per signal splices them into OTLP/gRPC exports, a few in
//! flight at once (see [`export`]). A full queue, or an
//! export that fails, drops records and counts them (the proxy's
//! `…_telemetry_dropped_total` metric), so a collector that is down or slow
//! never slows the proxy.
//!
//! Not the OpenTelemetry SDK's span pipeline: at 100 % sampling it cost the
//! gateway more CPU per request than proxying did (a span object, its
//! `SpanData`, a regrouping by resource and scope at export, a second
//! conversion into protobuf messages, and a deep copy of every log record;
//! BENCHMARKS.md, *Proxies build OTLP directly*). The SDK still gives the
//! ids; W3C trace context is read and written here, checked against the
//! SDK's propagator in the tests.

mod export;
mod wire;

use std::borrow::Cow;
use std::cell::RefCell;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceFlags, TraceId, TraceState};
use opentelemetry::{Array, KeyValue, Value};
use opentelemetry_proto::tonic::common::v1 as otlp_common;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::{span, status, SpanFlags, Status};
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator};
use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use prost::Message;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, watch};

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
    /// Where ended spans go. None without an exporter: spans are then not
    /// recorded at all, and a request only gets the ids and the sampling
    /// decision it passes on in `traceparent`.
    spans: Option<mpsc::Sender<Vec<u8>>>,
    /// Where access-log records go; none when they are not exported.
    logs: Option<mpsc::Sender<Vec<u8>>>,
    /// Fraction of new traces recorded.
    sampling: f64,
    ids: RandomIdGenerator,
    counters: Arc<TelemetryCounters>,
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
    /// Sets up telemetry; exporting starts only with an `otlp_endpoint`.
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
        let (stop, stopped) = watch::channel(false);
        let mut spans = None;
        let mut logs = None;
        let mut exporters = Vec::new();
        if let Some(endpoint) = &config.otlp_endpoint {
            let channel = export::channel(endpoint, config.export_timeout).map_err(|reason| {
                TelemetryError {
                    endpoint: endpoint.clone(),
                    reason,
                }
            })?;
            let service_name = config.service_name.as_deref().unwrap_or(proxy);
            let destination = export::Destination::new(channel, service_name, proxy);
            let (queue, queued) = mpsc::channel(config.max_queue);
            exporters.push(tokio::spawn(export::run(
                queued,
                export::Spans(destination.clone()),
                config.clone(),
                stopped.clone(),
                counters.clone(),
            )));
            spans = Some(queue);
            if config.access_log {
                let (queue, queued) = mpsc::channel(config.max_queue);
                exporters.push(tokio::spawn(export::run(
                    queued,
                    export::Logs(destination),
                    config.clone(),
                    stopped,
                    counters.clone(),
                )));
                logs = Some(queue);
            }
        }
        Ok(Self {
            spans,
            logs,
            sampling: config.sampling,
            ids: RandomIdGenerator::default(),
            counters,
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
        attributes: impl FnOnce(&mut Attributes<'_>),
    ) -> Span {
        let parent = self.extract(headers);
        self.start_span(&parent, SpanKind::Server, name.into(), attributes)
    }

    /// The caller's trace context from its `traceparent`/`tracestate`
    /// (an invalid context when there is none, or when `traceparent` is not
    /// W3C Trace Context). Parsed here rather than by the SDK's propagator,
    /// which builds a `Context` and a `Vec` of the header's parts on every
    /// proxied request.
    pub fn extract(&self, headers: &HeaderMap) -> SpanContext {
        let Some((trace_id, span_id, flags)) = headers
            .get(&TRACEPARENT)
            .and_then(|value| parse_traceparent(value.as_bytes()))
        else {
            return SpanContext::empty_context();
        };
        let state = headers
            .get(&TRACESTATE)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| TraceState::from_str(value).ok())
            .unwrap_or_default();
        SpanContext::new(trace_id, span_id, flags, true, state)
    }

    /// Starts a CLIENT span for one upstream attempt, child of `parent`.
    /// `attributes` is called only for a span that is recorded.
    pub fn client_span(
        &self,
        parent: &SpanContext,
        name: impl Into<Cow<'static, str>>,
        attributes: impl FnOnce(&mut Attributes<'_>),
    ) -> Span {
        self.start_span(parent, SpanKind::Client, name.into(), attributes)
    }

    /// A span's ids and sampling decision as the SDK's parent-based ratio
    /// sampler gives them: a caller's decision is kept, a new trace is
    /// sampled by its trace id against the ratio. Only a sampled span with
    /// an exporter to go to is recorded.
    fn start_span(
        &self,
        parent: &SpanContext,
        kind: SpanKind,
        name: Cow<'static, str>,
        attributes: impl FnOnce(&mut Attributes<'_>),
    ) -> Span {
        let (trace_id, sampled) = if parent.is_valid() {
            (parent.trace_id(), parent.is_sampled())
        } else {
            let trace_id = self.ids.new_trace_id();
            (trace_id, ratio_samples(self.sampling, trace_id))
        };
        let flags = parent.trace_flags().with_sampled(sampled);
        let context = SpanContext::new(
            trace_id,
            self.ids.new_span_id(),
            flags,
            false,
            parent.trace_state().clone(),
        );
        let recording = match &self.spans {
            Some(queue) if sampled => {
                // The `Span` message's fields, in its field numbers.
                let mut encoded = Vec::with_capacity(SPAN_CAPACITY);
                wire::bytes(&mut encoded, 1, &trace_id.to_bytes());
                wire::bytes(&mut encoded, 2, &context.span_id().to_bytes());
                wire::bytes(&mut encoded, 3, parent.trace_state().header().as_bytes());
                if parent.is_valid() {
                    wire::bytes(&mut encoded, 4, &parent.span_id().to_bytes());
                }
                let client = kind == SpanKind::Client;
                let kind = if client {
                    span::SpanKind::Client
                } else {
                    span::SpanKind::Server
                };
                wire::varint(&mut encoded, 6, kind as u64);
                wire::fixed64(&mut encoded, 7, unix_nanos(SystemTime::now()));
                wire::fixed32(
                    &mut encoded,
                    16,
                    span_flags(flags.to_u8(), parent.is_remote()),
                );
                attributes(&mut Attributes::of_span(&mut encoded));
                Some(Recording {
                    encoded,
                    name,
                    client,
                    error: None,
                    queue: queue.clone(),
                    counters: self.counters.clone(),
                })
            }
            _ => None,
        };
        Span { context, recording }
    }

    /// Writes `cx`'s `traceparent`/`tracestate` into outgoing headers
    /// (W3C Trace Context), replacing what the caller sent.
    /// An invalid context (no trace) leaves the headers as they are; an
    /// empty trace state removes the caller's `tracestate`.
    pub fn inject(&self, cx: &SpanContext, headers: &mut HeaderMap) {
        if !cx.is_valid() {
            return;
        }
        headers.insert(&TRACEPARENT, traceparent(cx));
        let state = cx.trace_state().header();
        match HeaderValue::try_from(state) {
            Ok(state) if !state.is_empty() => {
                headers.insert(&TRACESTATE, state);
            }
            _ => {
                headers.remove(&TRACESTATE);
            }
        }
    }

    /// A request's duration as an access-log record's `duration_ms`:
    /// milliseconds to the microsecond. Finer than that, every record holds a
    /// value of its own (`0.6092730000000001`), which reads badly and costs
    /// the collector a full-text index document per record.
    pub fn access_log_millis(elapsed: Duration) -> f64 {
        elapsed.as_micros() as f64 / 1000.0
    }

    /// One access-log record for a finished request, tied to its span:
    /// `record` writes its body and attributes, and is called only when
    /// access logs are exported.
    pub fn access_log(
        &self,
        cx: &SpanContext,
        status: u16,
        record: impl FnOnce(&mut AccessLog<'_>),
    ) {
        thread_local! {
            /// The body being written, reused: its length precedes it in the record.
            static BODY: RefCell<String> = const { RefCell::new(String::new()) };
        }
        let Some(queue) = &self.logs else {
            return;
        };
        let now = unix_nanos(SystemTime::now());
        let (severity, text) = if status >= 500 {
            (SeverityNumber::Error, "ERROR")
        } else if status >= 400 {
            (SeverityNumber::Warn, "WARN")
        } else {
            (SeverityNumber::Info, "INFO")
        };
        // The `LogRecord` message's fields, in its field numbers (see [`wire`]).
        let mut log = Vec::with_capacity(LOG_CAPACITY);
        wire::fixed64(&mut log, 1, now);
        wire::varint(&mut log, 2, severity as u64);
        wire::bytes(&mut log, 3, text.as_bytes());
        BODY.with_borrow_mut(|body| {
            body.clear();
            record(&mut AccessLog {
                body: &mut *body,
                attributes: Attributes {
                    out: &mut log,
                    tag: 6,
                },
            });
            wire::string_value(&mut log, 5, body);
        });
        if cx.is_valid() {
            wire::fixed32(&mut log, 8, u32::from(cx.trace_flags().to_u8()));
            wire::bytes(&mut log, 9, &cx.trace_id().to_bytes());
            wire::bytes(&mut log, 10, &cx.span_id().to_bytes());
        }
        wire::fixed64(&mut log, 11, now);
        wire::bytes(&mut log, 12, b"http.access");
        if queue.try_send(log).is_err() {
            self.counters.logs_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Whether access-log records are exported (so worth preparing).
    pub fn logs_access(&self) -> bool {
        self.logs.is_some()
    }

    /// What was exported and dropped so far.
    pub fn counters(&self) -> &Arc<TelemetryCounters> {
        &self.counters
    }

    /// Sends what is queued (within `deadline`) and stops the exporters.
    pub async fn shutdown(&self, deadline: Duration) {
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

/// A request's span: its context, which goes on in `traceparent`, and for a
/// recorded span the OTLP message it becomes. A recorded span that is
/// dropped without [`end`](Span::end) (its request was cancelled) is still
/// exported, without a status.
pub struct Span {
    context: SpanContext,
    recording: Option<Recording>,
}

/// The attributes of a recorded span or an access-log record, written
/// straight into its OTLP message (see [`wire`]): no `KeyValue`, and no owned
/// copy of a borrowed value, per attribute on the request path.
pub struct Attributes<'a> {
    out: &'a mut Vec<u8>,
    /// The field number of attributes in the message.
    tag: u32,
}

impl<'a> Attributes<'a> {
    fn of_span(encoded: &'a mut Vec<u8>) -> Self {
        Attributes {
            out: encoded,
            tag: 9,
        }
    }

    pub fn str(&mut self, key: &str, value: &str) -> &mut Self {
        wire::key_value(self.out, self.tag, key, wire::AnyValueBody::String(value));
        self
    }

    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        wire::key_value(self.out, self.tag, key, wire::AnyValueBody::Int(value));
        self
    }

    pub fn double(&mut self, key: &str, value: f64) -> &mut Self {
        wire::key_value(self.out, self.tag, key, wire::AnyValueBody::Double(value));
        self
    }

    /// An attribute of any type (arrays and the rest).
    pub fn add(&mut self, attribute: &KeyValue) -> &mut Self {
        wire::attribute(self.out, self.tag, attribute);
        self
    }
}

/// An access-log record being written: its body and its attributes.
pub struct AccessLog<'a> {
    body: &'a mut String,
    attributes: Attributes<'a>,
}

impl<'a> AccessLog<'a> {
    /// The record's body, empty until written (`write!(log.body(), …)`).
    pub fn body(&mut self) -> &mut String {
        self.body
    }

    pub fn attributes(&mut self) -> &mut Attributes<'a> {
        &mut self.attributes
    }
}

/// Room for a span's fields without growing: the proxies' spans and
/// access-log records take a few hundred bytes.
const SPAN_CAPACITY: usize = 512;
const LOG_CAPACITY: usize = 512;

/// A recorded span: its `Span` message written so far (see [`wire`]); the
/// name, end time and status are written when it ends.
struct Recording {
    encoded: Vec<u8>,
    name: Cow<'static, str>,
    client: bool,
    /// Set when the span failed: the status message (empty for none).
    error: Option<String>,
    queue: mpsc::Sender<Vec<u8>>,
    counters: Arc<TelemetryCounters>,
}

impl Span {
    /// The ids and sampling decision children and callees continue.
    pub fn context(&self) -> &SpanContext {
        &self.context
    }

    /// Whether the span is exported (so worth naming and describing).
    pub fn is_recording(&self) -> bool {
        self.recording.is_some()
    }

    pub fn set_name(&mut self, name: impl Into<String>) {
        if let Some(recording) = &mut self.recording {
            recording.name = Cow::Owned(name.into());
        }
    }

    /// Adds attributes to a recorded span; `attributes` is called only for one.
    pub fn add_attributes(&mut self, attributes: impl FnOnce(&mut Attributes<'_>)) {
        if let Some(recording) = &mut self.recording {
            attributes(&mut Attributes::of_span(&mut recording.encoded));
        }
    }

    /// Ends the span with the status semantic conventions give its kind: a
    /// server span fails on 5xx, a client span on 4xx too; `error` (the
    /// `error.type`) fails either.
    pub fn end(mut self, status: Option<u16>, error: Option<String>) {
        let Some(mut recording) = self.recording.take() else {
            return;
        };
        let mut attributes = Attributes::of_span(&mut recording.encoded);
        if let Some(status) = status {
            attributes.int("http.response.status_code", i64::from(status));
            if status >= 500 || (recording.client && status >= 400) {
                recording.error = Some(String::new());
            }
        }
        if let Some(error) = error {
            attributes.str("error.type", &error);
            recording.error = Some(error);
        }
        recording.send();
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        if let Some(recording) = self.recording.take() {
            recording.send();
        }
    }
}

impl Recording {
    fn send(self) {
        let mut encoded = self.encoded;
        wire::bytes(&mut encoded, 5, self.name.as_bytes());
        wire::fixed64(&mut encoded, 8, unix_nanos(SystemTime::now()));
        if let Some(message) = self.error {
            let status = Status {
                message,
                code: status::StatusCode::Error as i32,
            };
            wire::len_delimited(&mut encoded, 15, &status.encode_to_vec());
        }
        if self.queue.try_send(encoded).is_err() {
            self.counters.spans_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The SDK's `TraceIdRatioBased` decision: the trace id's low 63 bits
/// against the ratio, so every hop of a trace decides alike.
fn ratio_samples(ratio: f64, trace_id: TraceId) -> bool {
    if ratio >= 1.0 {
        return true;
    }
    let bytes = trace_id.to_bytes();
    let mut low = [0; 8];
    low.copy_from_slice(&bytes[8..]);
    let bound = (ratio.max(0.0) * (1u64 << 63) as f64) as u64;
    (u64::from_be_bytes(low) >> 1) < bound
}

/// OTLP span flags: the W3C trace flags, and whether the parent is remote
/// (known, so both bits are set accordingly).
fn span_flags(trace_flags: u8, parent_is_remote: bool) -> u32 {
    let mut flags = u32::from(trace_flags) | SpanFlags::ContextHasIsRemoteMask as u32;
    if parent_is_remote {
        flags |= SpanFlags::ContextIsRemoteMask as u32;
    }
    flags
}

fn unix_nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn otlp_key_value(attribute: KeyValue) -> otlp_common::KeyValue {
    let KeyValue { key, value, .. } = attribute;
    otlp_common::KeyValue {
        key: key.as_str().to_owned(),
        value: Some(otlp_any_value(value)),
        ..otlp_common::KeyValue::default()
    }
}

fn otlp_any_value(value: Value) -> otlp_common::AnyValue {
    use otlp_common::any_value::Value as V;
    fn array<T>(values: Vec<T>, one: impl Fn(T) -> V) -> V {
        V::ArrayValue(otlp_common::ArrayValue {
            values: values
                .into_iter()
                .map(|v| otlp_common::AnyValue {
                    value: Some(one(v)),
                })
                .collect(),
        })
    }
    let value = match value {
        Value::Bool(b) => V::BoolValue(b),
        Value::I64(i) => V::IntValue(i),
        Value::F64(f) => V::DoubleValue(f),
        Value::String(s) => V::StringValue(s.into()),
        Value::Array(Array::Bool(values)) => array(values, V::BoolValue),
        Value::Array(Array::I64(values)) => array(values, V::IntValue),
        Value::Array(Array::F64(values)) => array(values, V::DoubleValue),
        Value::Array(Array::String(values)) => array(values, |s| V::StringValue(s.into())),
        other => V::StringValue(other.to_string()),
    };
    otlp_common::AnyValue { value: Some(value) }
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

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `traceparent` for `cx` (version 00), as the SDK's propagator writes it,
/// without its `format!` and `Context`: this runs on every proxied request.
///
/// Marked sensitive, which HTTP/2 encodes as a literal never indexed: a value
/// new on every request would otherwise enter both ends' HPACK tables and,
/// every few dozen requests, push out the headers that do repeat (`host`,
/// `user-agent`, `x-forwarded-*`), which then go as literals again.
fn traceparent(cx: &SpanContext) -> HeaderValue {
    let mut value = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let (trace_id, rest) = value[3..].split_at_mut(32);
    hex::encode_to_slice(cx.trace_id().to_bytes(), trace_id).expect("32 hex digits");
    hex::encode_to_slice(cx.span_id().to_bytes(), &mut rest[1..17]).expect("16 hex digits");
    if cx.is_sampled() {
        value[54] = b'1';
    }
    let mut value = HeaderValue::from_bytes(&value).expect("hex digits and dashes");
    value.set_sensitive(true);
    value
}

/// A `traceparent` value's trace id, parent id and sampled flag, as W3C
/// Trace Context reads it: `version-traceid-parentid-flags` in lowercase hex,
/// exactly that for version `00`; a later version may append `-` and more,
/// which is ignored; `ff` and all-zero ids are invalid.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    let value = value.trim_ascii();
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = lower_hex::<1>(&value[..2])?[0];
    let exact = value.len() == 55;
    if version == 0xff || (version == 0 && !exact) || (!exact && value[55] != b'-') {
        return None;
    }
    let trace_id = TraceId::from_bytes(lower_hex(&value[3..35])?);
    let span_id = SpanId::from_bytes(lower_hex(&value[36..52])?);
    let flags = TraceFlags::new(lower_hex::<1>(&value[53..55])?[0]) & TraceFlags::SAMPLED;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID)
        .then_some((trace_id, span_id, flags))
}

/// `N` bytes from `2 × N` lowercase hex digits (W3C Trace Context allows no
/// uppercase).
fn lower_hex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    fn nibble(digit: u8) -> Option<u8> {
        match digit {
            b'0'..=b'9' => Some(digit - b'0'),
            b'a'..=b'f' => Some(digit - b'a' + 10),
            _ => None,
        }
    }
    let mut bytes = [0; N];
    for (byte, pair) in bytes.iter_mut().zip(digits.chunks_exact(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(bytes)
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

    #[test]
    fn access_log_durations_are_milliseconds_to_the_microsecond() {
        let elapsed = Duration::from_nanos(609_273_456);
        assert_eq!(Telemetry::access_log_millis(elapsed), 609.273);
        assert_eq!(
            Telemetry::access_log_millis(Duration::from_nanos(609_273)).to_string(),
            "0.609"
        );
    }

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
        let server = telemetry.server_span(&headers, "GET", |_| panic!("nothing records"));
        let client = telemetry.client_span(server.context(), "GET", |_| panic!("nothing records"));
        let mut outgoing = HeaderMap::new();
        telemetry.inject(client.context(), &mut outgoing);
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

    #[test]
    fn recorded_spans_and_log_records_decode_as_otlp_messages() {
        use opentelemetry_proto::tonic::logs::v1::LogRecord;
        use opentelemetry_proto::tonic::trace::v1::Span as OtlpSpan;
        let (spans, mut ended) = mpsc::channel(8);
        let (logs, mut logged) = mpsc::channel(8);
        let telemetry = Telemetry {
            spans: Some(spans),
            logs: Some(logs),
            ..Telemetry::start(&TelemetryConfig::default(), "test-proxy").unwrap()
        };
        let server = telemetry.server_span(&HeaderMap::new(), "GET", |_| {});
        let tags = KeyValue::new(
            "tags",
            Value::Array(Array::String(vec!["a".into(), "b".into()])),
        );
        let client = telemetry.client_span(server.context(), "GET", |attributes| {
            attributes.str("peer.service", "crm-database").add(&tags);
        });
        client.end(None, Some("connect: refused".to_string()));
        let client = OtlpSpan::decode(ended.try_recv().unwrap().as_slice()).unwrap();
        let mut attributes = vec![
            KeyValue::new("peer.service", "crm-database"),
            tags.clone(),
            KeyValue::new("error.type", "connect: refused"),
        ];
        assert_eq!(
            client,
            OtlpSpan {
                trace_id: server.context().trace_id().to_bytes().to_vec(),
                span_id: client.span_id.clone(),
                parent_span_id: server.context().span_id().to_bytes().to_vec(),
                flags: 0x101,
                name: "GET".to_string(),
                kind: span::SpanKind::Client as i32,
                start_time_unix_nano: client.start_time_unix_nano,
                end_time_unix_nano: client.end_time_unix_nano,
                attributes: attributes.drain(..).map(otlp_key_value).collect(),
                status: Some(Status {
                    message: "connect: refused".to_string(),
                    code: status::StatusCode::Error as i32,
                }),
                ..OtlpSpan::default()
            }
        );
        assert!(client.end_time_unix_nano >= client.start_time_unix_nano);
        assert!(client.start_time_unix_nano > 0);

        telemetry.access_log(server.context(), 404, |log| {
            log.body().push_str("GET /nope 404");
            log.attributes()
                .int("x", 1)
                .double("ms", 0.5)
                .str("url.path", "/nope");
        });
        let log = LogRecord::decode(logged.try_recv().unwrap().as_slice()).unwrap();
        assert_eq!(
            log,
            LogRecord {
                time_unix_nano: log.time_unix_nano,
                observed_time_unix_nano: log.time_unix_nano,
                severity_number: SeverityNumber::Warn as i32,
                severity_text: "WARN".to_string(),
                body: Some(otlp_any_value(Value::from("GET /nope 404"))),
                attributes: vec![
                    otlp_key_value(KeyValue::new("x", 1_i64)),
                    otlp_key_value(KeyValue::new("ms", 0.5)),
                    otlp_key_value(KeyValue::new("url.path", "/nope")),
                ],
                flags: 1,
                trace_id: server.context().trace_id().to_bytes().to_vec(),
                span_id: server.context().span_id().to_bytes().to_vec(),
                event_name: "http.access".to_string(),
                ..LogRecord::default()
            }
        );
        drop(server);
        let server = OtlpSpan::decode(ended.try_recv().unwrap().as_slice()).unwrap();
        assert_eq!(server.status, None, "dropped without an end: no status");
        assert!(server.parent_span_id.is_empty());
    }

    #[test]
    fn trace_context_is_written_as_the_sdks_propagator_writes_it() {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::TraceContextExt;
        use opentelemetry_sdk::propagation::TraceContextPropagator;
        use std::collections::HashMap;
        let propagator = TraceContextPropagator::new();
        let telemetry = Telemetry::start(&TelemetryConfig::default(), "test-proxy").unwrap();
        let ids = RandomIdGenerator::default();
        let state = TraceState::from_key_value([("vendor", "opaque1"), ("other", "x")]).unwrap();
        for (flags, state) in [
            (TraceFlags::SAMPLED, TraceState::default()),
            (TraceFlags::default(), state.clone()),
            (TraceFlags::SAMPLED, state),
        ] {
            let cx = SpanContext::new(ids.new_trace_id(), ids.new_span_id(), flags, true, state);
            let mut sdk = HashMap::new();
            propagator.inject_context(
                &opentelemetry::Context::new().with_remote_span_context(cx.clone()),
                &mut sdk,
            );
            let mut ours = HeaderMap::new();
            ours.insert("tracestate", HeaderValue::from_static("caller=1"));
            telemetry.inject(&cx, &mut ours);
            assert_eq!(ours["traceparent"].to_str().unwrap(), sdk["traceparent"]);
            // Kept out of HTTP/2 header compression tables (see `traceparent`).
            assert!(ours["traceparent"].is_sensitive());
            let state = ours.get("tracestate").map(|v| v.to_str().unwrap());
            assert_eq!(state.unwrap_or_default(), sdk["tracestate"]);
        }
        // No trace, nothing written.
        let mut headers = HeaderMap::new();
        let none = SpanContext::new(
            TraceId::INVALID,
            SpanId::INVALID,
            TraceFlags::default(),
            false,
            TraceState::default(),
        );
        telemetry.inject(&none, &mut headers);
        assert!(headers.is_empty());
    }

    /// The trace context the SDK's propagator reads from the same headers.
    fn sdk_extract(headers: &HeaderMap) -> SpanContext {
        use opentelemetry::propagation::{Extractor, TextMapPropagator};
        use opentelemetry::trace::TraceContextExt;
        struct Headers<'a>(&'a HeaderMap);
        impl Extractor for Headers<'_> {
            fn get(&self, key: &str) -> Option<&str> {
                self.0.get(key).and_then(|v| v.to_str().ok())
            }
            fn keys(&self) -> Vec<&str> {
                self.0.keys().map(|k| k.as_str()).collect()
            }
        }
        let propagator = opentelemetry_sdk::propagation::TraceContextPropagator::new();
        let cx = propagator.extract_with_context(&opentelemetry::Context::new(), &Headers(headers));
        cx.span().span_context().clone()
    }

    fn trace_headers(traceparent: &str, tracestate: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Ok(value) = HeaderValue::from_str(traceparent) {
            headers.insert(&TRACEPARENT, value);
        }
        if let Some(state) = tracestate.and_then(|s| HeaderValue::from_str(s).ok()) {
            headers.insert(&TRACESTATE, state);
        }
        headers
    }

    #[test]
    fn trace_context_is_read_as_w3c_trace_context_says() {
        let telemetry = Telemetry::start(&TelemetryConfig::default(), "test-proxy").unwrap();
        let read = |traceparent: &str| telemetry.extract(&trace_headers(traceparent, None));
        let cx = read("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        assert_eq!(
            cx.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(cx.span_id().to_string(), "00f067aa0ba902b7");
        assert!(cx.is_sampled() && cx.is_remote());
        // Unknown flags are dropped; a later version may carry more fields.
        assert_eq!(
            read("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").trace_flags(),
            TraceFlags::SAMPLED
        );
        assert!(read("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what").is_valid());
        for invalid in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(!read(invalid).is_valid(), "{invalid:?} was read");
        }
    }

    use proptest::prelude::Just;

    proptest::proptest! {
        /// Whatever `extract` reads, the SDK's propagator reads the same;
        /// well-formed headers are read by both. (The SDK also takes some
        /// malformed ones, such as ids shorter than W3C's.)
        #[test]
        fn trace_context_is_read_as_the_sdks_propagator_reads_it(
            version in proptest::prop_oneof![Just(0_u8), Just(0xff), proptest::num::u8::ANY],
            trace_id in proptest::prop_oneof![Just(0_u128), proptest::num::u128::ANY],
            span_id in proptest::prop_oneof![Just(0_u64), proptest::num::u64::ANY],
            flags in proptest::num::u8::ANY,
            suffix in proptest::prop_oneof![Just(String::new()), "[-.a-z0-9]{0,6}"],
            // Where to damage the header, and with what.
            damage in proptest::option::of((0_usize..64, proptest::char::range(' ', '~'))),
            tracestate in proptest::option::of("[a-z0-9=,@ -]{0,24}"),
        ) {
            let mut traceparent =
                format!("{version:02x}-{trace_id:032x}-{span_id:016x}-{flags:02x}{suffix}");
            if let Some((at, with)) = damage {
                if at < traceparent.len() {
                    traceparent.replace_range(at..at + 1, &with.to_string());
                }
            }
            let headers = trace_headers(&traceparent, tracestate.as_deref());
            let telemetry = Telemetry::start(&TelemetryConfig::default(), "test-proxy").unwrap();
            let ours = telemetry.extract(&headers);
            let sdk = sdk_extract(&headers);
            if ours.is_valid() {
                proptest::prop_assert_eq!(&ours, &sdk);
            }
            let well_formed = damage.is_none()
                && trace_id != 0
                && span_id != 0
                && version != 0xff
                && (suffix.is_empty() || (version != 0 && suffix.starts_with('-')));
            if well_formed {
                proptest::prop_assert!(ours.is_valid(), "{} not read", traceparent);
                proptest::prop_assert_eq!(&ours, &sdk);
            }
        }
    }

    #[test]
    fn the_ratio_decides_as_the_sdks_sampler_does() {
        use opentelemetry_sdk::trace::{Sampler, SamplingDecision, ShouldSample};
        let ids = RandomIdGenerator::default();
        for ratio in [0.0, 0.01, 0.3, 0.5, 0.999, 1.0] {
            let sdk = Sampler::TraceIdRatioBased(ratio);
            let mut sampled = 0;
            for _ in 0..2_000 {
                let trace_id = ids.new_trace_id();
                let expected = sdk
                    .should_sample(None, trace_id, "GET", &SpanKind::Server, &[], &[])
                    .decision
                    == SamplingDecision::RecordAndSample;
                assert_eq!(
                    ratio_samples(ratio, trace_id),
                    expected,
                    "{ratio} {trace_id}"
                );
                sampled += usize::from(expected);
            }
            assert!(
                (sampled as f64 / 2_000.0 - ratio).abs() < 0.05,
                "{ratio}: {sampled}"
            );
        }
    }
}
