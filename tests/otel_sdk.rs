//! The official OpenTelemetry Rust SDK and OTLP exporter, over gRPC, HTTP
//! protobuf and HTTP JSON, deliver spans and logs that weft stores intact.

mod support;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{LogExporter, Protocol, SpanExporter, WithExportConfig};
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use support::*;

#[derive(Clone, Copy, Debug)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// What one simulated service sent, to check against what was stored.
struct Sent {
    service: &'static str,
    trace_id: String,
    root_span_id: String,
    child_span_id: String,
}

fn resource(service: &'static str) -> Resource {
    Resource::builder()
        .with_service_name(service)
        .with_attribute(KeyValue::new("deployment.environment.name", "test"))
        .build()
}

fn exporters(weft: &Weft, transport: Transport) -> (SpanExporter, LogExporter) {
    match transport {
        Transport::Grpc => (
            SpanExporter::builder()
                .with_tonic()
                .with_endpoint(weft.grpc_url())
                .build()
                .unwrap(),
            LogExporter::builder()
                .with_tonic()
                .with_endpoint(weft.grpc_url())
                .build()
                .unwrap(),
        ),
        Transport::HttpProtobuf | Transport::HttpJson => {
            let protocol = match transport {
                Transport::HttpJson => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            };
            (
                SpanExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(weft.http_url("/v1/traces"))
                    .build()
                    .unwrap(),
                LogExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(weft.http_url("/v1/logs"))
                    .build()
                    .unwrap(),
            )
        }
    }
}

/// Sends one trace (a SERVER span with a CLIENT child) and an error log
/// inside the child, then shuts the providers down, which flushes them.
fn send(weft: &Weft, transport: Transport, service: &'static str) -> Sent {
    let (span_exporter, log_exporter) = exporters(weft, transport);
    let tracer_provider = SdkTracerProvider::builder()
        .with_batch_exporter(span_exporter)
        .with_resource(resource(service))
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_batch_exporter(log_exporter)
        .with_resource(resource(service))
        .build();
    let tracer = tracer_provider.tracer("crm.test");
    let logger = logger_provider.logger("crm.test.logs");

    let mut root = tracer
        .span_builder("GET /api/accounts")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/api/accounts"),
            KeyValue::new("http.response.status_code", 500),
            KeyValue::new("customer.tier", "gold"),
            KeyValue::new("retry.ratio", 0.5),
        ])
        .start(&tracer);
    root.add_event(
        "cache.miss",
        vec![KeyValue::new("cache.key", "accounts:42")],
    );
    root.set_status(Status::error("database timeout"));
    let root_context = root.span_context().clone();
    let cx = Context::current_with_span(root);
    let mut child = tracer
        .span_builder("SELECT accounts")
        .with_kind(SpanKind::Client)
        .with_attributes(vec![KeyValue::new("db.system", "sqlite")])
        .start_with_context(&tracer, &cx);
    let child_context = child.span_context().clone();

    let mut record = logger.create_log_record();
    record.set_severity_number(Severity::Error);
    record.set_severity_text("ERROR");
    record.set_body(AnyValue::from(format!(
        "{service}: timeout AND retry exhausted"
    )));
    record.add_attribute("db.statement.rows", 0);
    record.set_trace_context(child_context.trace_id(), child_context.span_id(), None);
    logger.emit(record);

    child.end();
    cx.span().end();
    tracer_provider.shutdown().expect("spans exported");
    logger_provider.shutdown().expect("logs exported");
    Sent {
        service,
        trace_id: root_context.trace_id().to_string(),
        root_span_id: root_context.span_id().to_string(),
        child_span_id: child_context.span_id().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_exports_over_grpc_and_http_arrive_intact() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let sent = [
        send(&weft, Transport::Grpc, "crm-mobile"),
        send(&weft, Transport::HttpProtobuf, "crm-conductor"),
        send(&weft, Transport::HttpJson, "crm-database"),
    ];
    assert!(weft.stop().success());

    let spans = read_table(dir.path(), "spans");
    let logs = read_table(dir.path(), "logs");
    assert_eq!(spans.num_rows(), 6);
    assert_eq!(logs.num_rows(), 3);
    for sent in &sent {
        let root = row_where(&spans, "span_id", &sent.root_span_id);
        assert_eq!(
            text(&spans, "trace_id", root).unwrap(),
            sent.trace_id,
            "{}",
            sent.service
        );
        assert_eq!(text(&spans, "parent_span_id", root), None);
        assert_eq!(text(&spans, "service_name", root).unwrap(), sent.service);
        assert_eq!(text(&spans, "name", root).unwrap(), "GET /api/accounts");
        assert_eq!(text(&spans, "kind", root).unwrap(), "SERVER");
        assert_eq!(text(&spans, "status_code", root).unwrap(), "ERROR");
        assert_eq!(
            text(&spans, "status_message", root).unwrap(),
            "database timeout"
        );
        assert_eq!(text(&spans, "scope_name", root).unwrap(), "crm.test");
        assert_eq!(text(&spans, "http_route", root).unwrap(), "/api/accounts");
        assert_eq!(int64(&spans, "http_response_status_code", root), Some(500));
        assert_eq!(
            map_get(&spans, "attributes", root, "customer.tier").unwrap(),
            "gold"
        );
        assert_eq!(
            map_get(&spans, "attributes", root, "retry.ratio").unwrap(),
            "0.5"
        );
        assert_eq!(
            map_get(
                &spans,
                "resource_attributes",
                root,
                "deployment.environment.name"
            )
            .unwrap(),
            "test"
        );
        assert!(timestamp(&spans, "end_time", root) >= timestamp(&spans, "start_time", root));
        let events = list(&spans, "events", root);
        let names = events.column_by_name("name").unwrap();
        assert_eq!(
            arrow::array::AsArray::as_string::<i32>(names).value(0),
            "cache.miss"
        );

        let child = row_where(&spans, "span_id", &sent.child_span_id);
        assert_eq!(
            text(&spans, "parent_span_id", child).unwrap(),
            sent.root_span_id
        );
        assert_eq!(text(&spans, "trace_id", child).unwrap(), sent.trace_id);
        assert_eq!(text(&spans, "kind", child).unwrap(), "CLIENT");
        assert_eq!(text(&spans, "db_system", child).unwrap(), "sqlite");

        let log = row_where(&logs, "trace_id", &sent.trace_id);
        assert_eq!(text(&logs, "span_id", log).unwrap(), sent.child_span_id);
        assert_eq!(text(&logs, "service_name", log).unwrap(), sent.service);
        assert_eq!(text(&logs, "severity_text", log).unwrap(), "ERROR");
        assert_eq!(
            text(&logs, "body", log).unwrap(),
            format!("{}: timeout AND retry exhausted", sent.service)
        );
        assert_eq!(
            map_get(&logs, "attributes", log, "db.statement.rows").unwrap(),
            "0"
        );
        assert_eq!(text(&logs, "scope_name", log).unwrap(), "crm.test.logs");
    }
}
