//! OTLP/JSON written the way the opentelemetry-proto examples are (uppercase
//! hex ids, enum names and numbers, int64 as strings and as numbers, arrays,
//! key-value lists, bytes) arrives with every field intact.

mod support;

use std::io::Write;

use arrow::array::{Array, AsArray};
use support::*;

const TRACE: &str = include_str!("fixtures/trace.json");
const LOGS: &str = include_str!("fixtures/logs.json");

fn post(url: &str, body: Vec<u8>, gzip: bool) -> reqwest::blocking::Response {
    let client = reqwest::blocking::Client::new();
    let mut request = client.post(url).header("Content-Type", "application/json");
    let body = if gzip {
        request = request.header("Content-Encoding", "gzip");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&body).unwrap();
        encoder.finish().unwrap()
    } else {
        body
    };
    request.body(body).send().unwrap()
}

#[test]
fn otlp_json_spans_and_logs_are_stored_with_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let response = post(&weft.http_url("/v1/traces"), TRACE.into(), false);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(response.text().unwrap(), "{}");
    let response = post(&weft.http_url("/v1/logs"), LOGS.into(), true);
    assert_eq!(response.status(), 200, "{}", response.text().unwrap());
    assert!(weft.stop().success());

    let spans = read_table(dir.path(), "spans");
    assert_eq!(spans.num_rows(), 2);
    let server = row_where(&spans, "span_id", "eee19b7ec3c1b174");
    assert_eq!(
        text(&spans, "trace_id", server).unwrap(),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(
        text(&spans, "parent_span_id", server).unwrap(),
        "eee19b7ec3c1b173"
    );
    assert_eq!(text(&spans, "trace_state", server).unwrap(), "vendor=abc");
    assert_eq!(
        text(&spans, "service_name", server).unwrap(),
        "crm-conductor"
    );
    assert_eq!(
        text(&spans, "name", server).unwrap(),
        "POST /api/accounts/sync"
    );
    assert_eq!(text(&spans, "kind", server).unwrap(), "SERVER");
    assert_eq!(timestamp(&spans, "start_time", server), 1544712660000000000);
    assert_eq!(timestamp(&spans, "end_time", server), 1544712661000000000);
    assert_eq!(int64(&spans, "duration_ns", server), Some(1_000_000_000));
    assert_eq!(text(&spans, "status_code", server).unwrap(), "ERROR");
    assert_eq!(
        text(&spans, "status_message", server).unwrap(),
        "upstream timeout"
    );
    assert_eq!(
        text(&spans, "scope_name", server).unwrap(),
        "crm.conductor.orchestrator"
    );
    assert_eq!(text(&spans, "scope_version", server).unwrap(), "1.0.0");
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        map(&spans, "attributes", server),
        vec![
            ("customer.tiers".into(), some(r#"["gold",3]"#)),
            ("http.request.method".into(), some("POST")),
            ("http.response.status_code".into(), some("502")),
            ("http.route".into(), some("/api/accounts/sync")),
            ("payload.digest".into(), some("3q2+7w==")),
            (
                "request.meta".into(),
                some(r#"{"region":"eu-west-1","shard":7}"#)
            ),
            ("retry".into(), some("true")),
            ("sample.ratio".into(), some("0.25")),
        ]
    );
    assert_eq!(
        map(&spans, "resource_attributes", server),
        vec![
            ("host.cpu.count".into(), some("8")),
            ("service.name".into(), some("crm-conductor")),
            ("service.version".into(), some("2.4.1")),
        ]
    );
    assert_eq!(text(&spans, "http_request_method", server).unwrap(), "POST");
    assert_eq!(
        int64(&spans, "http_response_status_code", server),
        Some(502)
    );
    assert_eq!(
        text(&spans, "http_route", server).unwrap(),
        "/api/accounts/sync"
    );

    let events = list(&spans, "events", server);
    assert_eq!(events.len(), 2);
    let event_names: Vec<&str> = events
        .column_by_name("name")
        .unwrap()
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(event_names, vec!["exception", "retrying"]);
    let event_times = events
        .column_by_name("time")
        .unwrap()
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>();
    assert_eq!(event_times.value(0), 1544712660300000000);
    let event_attributes = events
        .column_by_name("attributes")
        .unwrap()
        .as_map()
        .value(0);
    let keys: Vec<&str> = event_attributes
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(keys, vec!["exception.type", "exception.message"]);

    let links = list(&spans, "links", server);
    assert_eq!(links.len(), 1);
    let link_trace = links
        .column_by_name("trace_id")
        .unwrap()
        .as_string::<i32>()
        .value(0);
    assert_eq!(link_trace, "0af7651916cd43dd8448eb211c80319c");
    let link_span = links
        .column_by_name("span_id")
        .unwrap()
        .as_string::<i32>()
        .value(0);
    assert_eq!(link_span, "b7ad6b7169203331");
    let link_state = links
        .column_by_name("trace_state")
        .unwrap()
        .as_string::<i32>()
        .value(0);
    assert_eq!(link_state, "rojo=00f067aa0ba902b7");

    let client = row_where(&spans, "span_id", "eee19b7ec3c1b175");
    assert_eq!(text(&spans, "kind", client).unwrap(), "CLIENT");
    assert_eq!(text(&spans, "status_code", client).unwrap(), "OK");
    assert_eq!(text(&spans, "trace_state", client), None);
    assert_eq!(text(&spans, "db_system", client).unwrap(), "sqlite");
    assert_eq!(
        text(&spans, "peer_service", client).unwrap(),
        "crm-database"
    );
    assert_eq!(int64(&spans, "duration_ns", client), Some(100_000_000));
    assert_eq!(list(&spans, "events", client).len(), 0);

    let logs = read_table(dir.path(), "logs");
    assert_eq!(logs.num_rows(), 2);
    let error = row_where(&logs, "severity_text", "ERROR");
    assert_eq!(
        text(&logs, "trace_id", error).unwrap(),
        "5b8efff798038103d269b633813fc60c"
    );
    assert_eq!(text(&logs, "span_id", error).unwrap(), "eee19b7ec3c1b174");
    assert_eq!(
        text(&logs, "body", error).unwrap(),
        "upstream timeout calling crm-salesforce after 300ms"
    );
    assert_eq!(text(&logs, "service_name", error).unwrap(), "crm-conductor");
    assert_eq!(
        text(&logs, "scope_name", error).unwrap(),
        "crm.conductor.log"
    );
    assert_eq!(timestamp(&logs, "time", error), 1544712660300000000);
    assert_eq!(
        timestamp(&logs, "observed_time", error),
        1544712660300000100
    );
    let severity = logs
        .column_by_name("severity_number")
        .unwrap()
        .as_primitive::<arrow::datatypes::Int32Type>();
    assert_eq!(severity.value(error), 17);
    assert_eq!(
        map_get(&logs, "attributes", error, "retry.count").unwrap(),
        "2"
    );
    assert_eq!(
        map_get(&logs, "attributes", error, "upstream.hosts").unwrap(),
        r#"["sf-1","sf-2"]"#
    );

    let info = row_where(&logs, "severity_text", "INFO");
    assert_eq!(severity.value(info), 9);
    assert_eq!(
        text(&logs, "body", info).unwrap(),
        r#"{"event":"cache.miss","keys":12}"#
    );
    assert_eq!(text(&logs, "trace_id", info), None);
    assert_eq!(text(&logs, "span_id", info), None);
    // No observed time was sent: weft records when it received the record.
    assert!(timestamp(&logs, "observed_time", info) > 1_700_000_000_000_000_000);
}

#[test]
fn otlp_protobuf_over_http_with_gzip_is_answered_in_protobuf() {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
    };
    use prost::Message;

    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    // Decode the JSON fixture into the protobuf types, then send it as protobuf.
    let request: ExportTraceServiceRequest = serde_json::from_str(
        &TRACE
            .replace("\"SPAN_KIND_SERVER\"", "2")
            .replace("\"STATUS_CODE_ERROR\"", "2"),
    )
    .unwrap();
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(&request.encode_to_vec()).unwrap();
    let response = reqwest::blocking::Client::new()
        .post(weft.http_url("/v1/traces"))
        .header("Content-Type", "application/x-protobuf")
        .header("Content-Encoding", "gzip")
        .body(encoder.finish().unwrap())
        .send()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let decoded = ExportTraceServiceResponse::decode(response.bytes().unwrap()).unwrap();
    assert_eq!(decoded.partial_success, None);
    assert!(weft.stop().success());
    let spans = read_table(dir.path(), "spans");
    assert_eq!(spans.num_rows(), 2);
    let server = row_where(&spans, "span_id", "eee19b7ec3c1b174");
    assert_eq!(text(&spans, "status_code", server).unwrap(), "ERROR");
    assert_eq!(
        map_get(&spans, "attributes", server, "request.meta").unwrap(),
        r#"{"region":"eu-west-1","shard":7}"#
    );
}
