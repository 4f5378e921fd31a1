//! Bad input gets the status the OTLP spec and DESIGN.md name, with a message
//! that says what was wrong, and weft keeps serving the next good request.

mod support;

use std::io::Write;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use prost::Message;
use reqwest::blocking::{Client, Response};
use support::*;

/// `google.rpc.Status`, the error body of OTLP/HTTP.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn post(
    weft: &Weft,
    path: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: Vec<u8>,
) -> Response {
    let mut request = Client::new()
        .post(weft.http_url(path))
        .header("Content-Type", content_type);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(body).send().unwrap()
}

fn json_body(response: Response) -> serde_json::Value {
    serde_json::from_slice(&response.bytes().unwrap()).unwrap()
}

fn assert_good_request_still_works(weft: &Weft) {
    let body = spans_request("crm-mobile", [1]).encode_to_vec();
    let response = post(weft, "/v1/traces", "application/x-protobuf", &[], body);
    assert_eq!(response.status(), 200);
}

const LIMITS: &[&str] = &[
    "--max-request-bytes",
    "65536",
    "--max-inflight-bytes",
    "1048576",
];

#[test]
fn malformed_payloads_are_400_with_a_message_in_the_request_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), LIMITS);

    let response = post(
        &weft,
        "/v1/traces",
        "application/x-protobuf",
        &[],
        vec![0xff, 0xff, 0xff, 0x0f],
    );
    assert_eq!(response.status(), 400);
    assert_eq!(response.headers()["content-type"], "application/x-protobuf");
    let status = RpcStatus::decode(response.bytes().unwrap()).unwrap();
    assert_eq!(status.code, 3);
    assert!(
        status.message.contains("invalid OTLP protobuf"),
        "{}",
        status.message
    );

    let response = post(
        &weft,
        "/v1/logs",
        "application/json",
        &[],
        b"{\"resourceLogs\": [".to_vec(),
    );
    assert_eq!(response.status(), 400);
    let body = json_body(response);
    assert!(
        body["message"].as_str().unwrap().contains("invalid JSON"),
        "{body}"
    );

    let wrong_type = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name": 42}]}]}]}"#.to_vec();
    let response = post(&weft, "/v1/traces", "application/json", &[], wrong_type);
    assert_eq!(response.status(), 400);
    let body = json_body(response);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("resourceSpans[0].scopeSpans[0].spans[0].name"),
        "{body}"
    );

    let response = post(
        &weft,
        "/v1/traces",
        "application/json",
        &[("Content-Encoding", "gzip")],
        b"not gzip".to_vec(),
    );
    assert_eq!(response.status(), 400);
    assert!(json_body(response)["message"]
        .as_str()
        .unwrap()
        .contains("gzip"));

    assert_good_request_still_works(&weft);
    assert!(weft.stop().success());
}

#[test]
fn invalid_records_are_rejected_alone_through_partial_success() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let spans = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203331","name":"kept","startTimeUnixNano":"1","endTimeUnixNano":"2"},
        {"traceId":"0af7651916cd43dd","spanId":"b7ad6b7169203332","name":"short trace id"},
        {"traceId":"0af7651916cd43dd8448eb211c80319c","spanId":"b7ad6b7169203333","name":"backwards","startTimeUnixNano":"5","endTimeUnixNano":"4"}
    ]}]}]}"#;
    let response = post(&weft, "/v1/traces", "application/json", &[], spans.to_vec());
    assert_eq!(response.status(), 200);
    let body = json_body(response);
    assert_eq!(body["partialSuccess"]["rejectedSpans"], "2");
    let message = body["partialSuccess"]["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("spans[1]: trace_id must be 16 bytes, got 8"),
        "{message}"
    );
    assert!(message.contains("1 more"), "{message}");

    let logs = br#"{"resourceLogs":[{"scopeLogs":[{"logRecords":[
        {"body":{"stringValue":"kept"},"timeUnixNano":"1"},
        {"body":{"stringValue":"bad span id"},"spanId":"b7ad6b71"}
    ]}]}]}"#;
    let response = post(&weft, "/v1/logs", "application/json", &[], logs.to_vec());
    assert_eq!(response.status(), 200);
    let body = json_body(response);
    assert_eq!(body["partialSuccess"]["rejectedLogRecords"], "1");
    assert!(body["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("log_records[1]: span_id must be 8 bytes, got 4"));

    assert!(weft.stop().success());
    let stored = read_table(dir.path(), "spans");
    assert_eq!(texts(&stored, "name"), vec![Some("kept".to_string())]);
    let stored = read_table(dir.path(), "logs");
    assert_eq!(texts(&stored, "body"), vec![Some("kept".to_string())]);
}

#[test]
fn oversized_bodies_are_413_and_unknown_media_types_415() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), LIMITS);

    let response = post(
        &weft,
        "/v1/traces",
        "application/x-protobuf",
        &[],
        vec![0u8; 100_000],
    );
    assert_eq!(response.status(), 413);
    assert!(json_or_status_message(response).contains("over the limit of 65536 bytes"));

    // A small gzip body that inflates past the limit.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(&vec![b' '; 10_000_000]).unwrap();
    let bomb = encoder.finish().unwrap();
    assert!(bomb.len() < 65536);
    let response = post(
        &weft,
        "/v1/traces",
        "application/json",
        &[("Content-Encoding", "gzip")],
        bomb,
    );
    assert_eq!(response.status(), 413);

    let response = post(&weft, "/v1/traces", "text/plain", &[], b"hello".to_vec());
    assert_eq!(response.status(), 415);
    assert!(json_body(response)["message"]
        .as_str()
        .unwrap()
        .contains("text/plain"));

    let response = post(
        &weft,
        "/v1/logs",
        "application/json",
        &[("Content-Encoding", "br")],
        b"{}".to_vec(),
    );
    assert_eq!(response.status(), 415);
    assert!(json_body(response)["message"]
        .as_str()
        .unwrap()
        .contains("Content-Encoding"));

    assert_good_request_still_works(&weft);
    assert!(weft.stop().success());
}

/// `spans` small spans under a resource carrying `resource_bytes` of text.
fn spans_under_a_large_resource(
    spans: u64,
    resource_bytes: usize,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    let mut request = spans_request("crm-mobile", 0..spans);
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.attributes.clear();
    }
    let resource = request.resource_spans[0].resource.as_mut().unwrap();
    resource.attributes.push(KeyValue {
        key: "process.command_line".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue("x".repeat(resource_bytes))),
        }),
        ..Default::default()
    });
    request
}

#[test]
fn a_small_request_repeating_a_large_resource_on_many_spans_is_413() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), LIMITS);
    // 30 kB of resource on each of 500 spans: 15 MB to store from a body of
    // under 64 kB, past the 256 kB (four times the largest request) allowed.
    let body = spans_under_a_large_resource(500, 30_000).encode_to_vec();
    assert!(body.len() < 65536, "{}", body.len());
    for (content_type, body) in [
        // (JSON spans are larger: 100 of them, 3 MB to store.)
        ("application/x-protobuf", body.clone()),
        (
            "application/json",
            serde_json::to_vec(&spans_under_a_large_resource(100, 30_000)).unwrap(),
        ),
    ] {
        let response = post(&weft, "/v1/traces", content_type, &[], body);
        assert_eq!(response.status(), 413, "{content_type}");
        let message = json_or_status_message(response);
        assert!(message.contains("repeats its resource"), "{message}");
    }
    // The same resource on a few spans is stored.
    let body = spans_under_a_large_resource(5, 30_000).encode_to_vec();
    let response = post(&weft, "/v1/traces", "application/x-protobuf", &[], body);
    assert_eq!(response.status(), 200);
    assert_good_request_still_works(&weft);
    assert!(weft.stop().success());
}

fn json_or_status_message(response: Response) -> String {
    let bytes = response.bytes().unwrap();
    RpcStatus::decode(bytes.clone())
        .map(|s| s.message)
        .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).into_owned())
}

#[test]
fn metrics_are_answered_clearly_as_not_stored() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let metrics = br#"{"resourceMetrics":[{"scopeMetrics":[{"metrics":[
        {"name":"http.server.request.duration","gauge":{"dataPoints":[{"asDouble":1.5},{"asDouble":2.5}]}}
    ]}]}]}"#;
    let response = post(
        &weft,
        "/v1/metrics",
        "application/json",
        &[],
        metrics.to_vec(),
    );
    assert_eq!(response.status(), 200);
    let body = json_body(response);
    assert_eq!(body["partialSuccess"]["rejectedDataPoints"], "2");
    assert!(body["partialSuccess"]["errorMessage"]
        .as_str()
        .unwrap()
        .contains("not stored"));
    assert!(weft.stop().success());
}

/// A message whose field 1 is a varint where OTLP has a length-delimited
/// `resource_spans`: valid protobuf framing, invalid OTLP.
#[derive(Clone, PartialEq, prost::Message)]
struct NotOtlp {
    #[prost(uint64, tag = "1")]
    resource_spans: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_bad_input_gets_otlp_status_codes() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), LIMITS);
    let channel = tonic::transport::Endpoint::from_shared(weft.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();

    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<NotOtlp, ExportTraceServiceResponse>::default();
    let path = http::uri::PathAndQuery::from_static(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
    );
    let status = grpc
        .unary(
            tonic::Request::new(NotOtlp { resource_spans: 7 }),
            path,
            codec,
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    assert_eq!(
        status.message(),
        "invalid OTLP protobuf in ExportTraceServiceRequest: field resource_spans (#1) has wire type varint, expected length-delimited"
    );

    // The services are served by hand (requests are converted in place): a
    // method they do not have is still UNIMPLEMENTED, as with tonic's servers.
    grpc.ready().await.unwrap();
    let status = grpc
        .unary(
            tonic::Request::new(NotOtlp { resource_spans: 7 }),
            http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.logs.v1.LogsService/Import",
            ),
            tonic_prost::ProstCodec::<NotOtlp, ExportTraceServiceResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unimplemented, "{status:?}");

    let mut client = TraceServiceClient::new(channel.clone());
    let too_large = spans_request("crm-mobile", 0..2000);
    let status = client.export(too_large).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    let status = client
        .export(spans_under_a_large_resource(500, 30_000))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(
        status.message().contains("repeats its resource"),
        "{status:?}"
    );

    let mut invalid = spans_request("crm-mobile", 10..13);
    invalid.resource_spans[0].scope_spans[0].spans[1].span_id = vec![1, 2, 3];
    let response = client.export(invalid).await.unwrap().into_inner();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial
            .error_message
            .contains("span_id must be 8 bytes, got 3"),
        "{}",
        partial.error_message
    );

    let mut metrics = MetricsServiceClient::new(channel);
    let response = metrics
        .export(ExportMetricsServiceRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(response
        .partial_success
        .unwrap()
        .error_message
        .contains("not stored"));

    let response = client
        .export(spans_request("crm-mobile", 20..25))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.partial_success, None);
    assert!(weft.stop().success());
    assert_eq!(stored_span_ids(dir.path()).len(), 2 + 5);
}
