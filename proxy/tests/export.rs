//! What a proxy's telemetry sends over a real OTLP/gRPC connection: a
//! collector stand-in (opentelemetry-proto's generated services on an
//! ephemeral port) records every export request.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue as OtlpKeyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use weft_proxy::{Telemetry, TelemetryConfig};

/// Every request the stand-in received; spans are refused `refuse_spans` at a time.
#[derive(Clone, Default)]
struct Received {
    traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    logs: Arc<Mutex<Vec<ExportLogsServiceRequest>>>,
    refuse_spans: i64,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: (self.refuse_spans > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.refuse_spans,
                error_message: "refused".to_string(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl LogsService for Received {
    async fn export(
        &self,
        request: tonic::Request<ExportLogsServiceRequest>,
    ) -> Result<tonic::Response<ExportLogsServiceResponse>, tonic::Status> {
        self.logs.lock().push(request.into_inner());
        Ok(tonic::Response::new(ExportLogsServiceResponse::default()))
    }
}

async fn collector(received: Received) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(received.clone()))
            .add_service(LogsServiceServer::new(received))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    format!("http://{addr}")
}

fn config(endpoint: String) -> TelemetryConfig {
    TelemetryConfig {
        otlp_endpoint: Some(endpoint),
        service_name: Some("edge".to_string()),
        batch_timeout: Duration::from_millis(10),
        ..TelemetryConfig::default()
    }
}

fn text<'a>(attributes: &'a [OtlpKeyValue], key: &str) -> Option<&'a Value> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

#[tokio::test]
async fn a_request_becomes_linked_spans_and_an_access_log_record() {
    let received = Received::default();
    let telemetry =
        Telemetry::start(&config(collector(received.clone()).await), "test-proxy").unwrap();
    let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let mut headers = HeaderMap::new();
    headers.insert("traceparent", caller.parse().unwrap());
    headers.insert("tracestate", "vendor=value".parse().unwrap());

    let mut server = telemetry.server_span(&headers, "GET", |attributes| {
        attributes.str("url.path", "/accounts");
    });
    assert!(server.is_recording());
    server.set_name("GET /accounts");
    server.add_attributes(|attributes| {
        attributes.str("http.route", "/accounts");
    });
    let client = telemetry.client_span(server.context(), "GET", |attributes| {
        attributes.int("server.port", 8080);
    });
    let mut outgoing = HeaderMap::new();
    telemetry.inject(client.context(), &mut outgoing);
    // The upstream attempt is cancelled: its span still goes out, without a status.
    drop(client);
    telemetry.access_log(server.context(), 503, |log| {
        log.body().push_str("GET /accounts 503");
        log.attributes().double("duration_ms", 1.5);
    });
    server.end(Some(503), None);
    telemetry.shutdown(Duration::from_secs(5)).await;

    let traces = received.traces.lock();
    let spans: Vec<_> = traces
        .iter()
        .flat_map(|r| &r.resource_spans)
        .inspect(|rs| {
            let resource = rs.resource.as_ref().unwrap();
            assert_eq!(
                text(&resource.attributes, "service.name"),
                Some(&Value::StringValue("edge".to_string()))
            );
            assert_eq!(rs.scope_spans[0].scope.as_ref().unwrap().name, "test-proxy");
        })
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .collect();
    assert_eq!(spans.len(), 2, "{spans:?}");
    let client = spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();

    assert_eq!(hex(&server.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&server.parent_span_id), "00f067aa0ba902b7");
    assert_eq!(server.trace_state, "vendor=value");
    assert_eq!(server.flags, 0x301, "sampled, parent known to be remote");
    assert_eq!(server.name, "GET /accounts");
    assert_eq!(
        text(&server.attributes, "http.route"),
        Some(&Value::StringValue("/accounts".to_string()))
    );
    assert_eq!(
        text(&server.attributes, "http.response.status_code"),
        Some(&Value::IntValue(503))
    );
    assert_eq!(
        server.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32)
    );
    assert!(server.end_time_unix_nano >= server.start_time_unix_nano);
    assert!(server.start_time_unix_nano > 0);

    assert_eq!(client.trace_id, server.trace_id);
    assert_eq!(client.parent_span_id, server.span_id);
    assert_eq!(client.flags, 0x101, "sampled, parent known to be local");
    assert_eq!(client.status, None);
    assert_eq!(
        text(&client.attributes, "server.port"),
        Some(&Value::IntValue(8080))
    );
    assert_eq!(
        outgoing["traceparent"].to_str().unwrap(),
        format!(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
            hex(&client.span_id)
        )
    );
    assert_eq!(outgoing["tracestate"], "vendor=value");

    let logs = received.logs.lock();
    let records: Vec<_> = logs
        .iter()
        .flat_map(|r| &r.resource_logs)
        .flat_map(|rl| &rl.scope_logs)
        .flat_map(|sl| &sl.log_records)
        .collect();
    assert_eq!(records.len(), 1);
    let record = records[0];
    assert_eq!(record.trace_id, server.trace_id);
    assert_eq!(record.span_id, server.span_id);
    assert_eq!(record.severity_text, "ERROR");
    assert_eq!(record.event_name, "http.access");
    assert_eq!(
        record.body.as_ref().and_then(|b| b.value.as_ref()),
        Some(&Value::StringValue("GET /accounts 503".to_string()))
    );
    assert_eq!(
        text(&record.attributes, "duration_ms"),
        Some(&Value::DoubleValue(1.5))
    );

    let counters = telemetry.counters();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&counters.spans_exported), 2);
    assert_eq!(count(&counters.logs_exported), 1);
    assert_eq!(count(&counters.spans_dropped), 0);
}

#[tokio::test]
async fn spans_the_collector_refuses_are_counted_as_dropped() {
    let received = Received {
        refuse_spans: 1,
        ..Received::default()
    };
    let telemetry =
        Telemetry::start(&config(collector(received.clone()).await), "test-proxy").unwrap();
    for _ in 0..3 {
        let span = telemetry.server_span(&HeaderMap::new(), "GET", |_| {});
        span.end(Some(200), None);
    }
    telemetry.shutdown(Duration::from_secs(5)).await;
    let batches = received.traces.lock().len() as u64;
    let counters = telemetry.counters();
    let count = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(count(&counters.spans_dropped), batches);
    assert_eq!(count(&counters.spans_exported), 3 - batches);
}

#[tokio::test]
async fn a_sampling_ratio_of_zero_records_no_new_trace_but_follows_a_sampled_caller() {
    let received = Received::default();
    let mut settings = config(collector(received.clone()).await);
    settings.sampling = 0.0;
    let telemetry = Telemetry::start(&settings, "test-proxy").unwrap();
    let new_trace = telemetry.server_span(&HeaderMap::new(), "GET", |_| panic!("not recorded"));
    assert!(!new_trace.is_recording());
    let mut headers = HeaderMap::new();
    headers.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let continued = telemetry.server_span(&headers, "GET", |_| {});
    assert!(continued.is_recording());
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_full_batch_is_exported_without_waiting_for_the_batch_timeout() {
    let received = Received::default();
    let telemetry = Telemetry::start(
        &TelemetryConfig {
            max_batch: 50,
            batch_timeout: Duration::from_secs(3600),
            access_log: false,
            ..config(collector(received.clone()).await)
        },
        "test-proxy",
    )
    .unwrap();
    for _ in 0..120 {
        let span = telemetry.server_span(&HeaderMap::new(), "GET", |_| {});
        span.end(Some(200), None);
    }
    let exported = |received: &Received| -> Vec<usize> {
        let traces = received.traces.lock();
        traces
            .iter()
            .map(|t| t.resource_spans[0].scope_spans[0].spans.len())
            .collect()
    };
    let started = std::time::Instant::now();
    while exported(&received).len() < 2 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        exported(&received),
        [50, 50],
        "two full batches, before the hour is up"
    );
    telemetry.shutdown(Duration::from_secs(5)).await;
    assert_eq!(exported(&received), [50, 50, 20], "the rest at shutdown");
}
