//! Overload is pushed back with retryable statuses, not absorbed into
//! unbounded memory; once the flush catches up, data flows again. And weft's
//! own counters are served at `/metrics`.

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use support::*;
use tonic_types::StatusExt;

/// POSTs an OTLP/HTTP protobuf trace export.
fn post_spans(
    client: &reqwest::blocking::Client,
    weft: &Weft,
    body: Vec<u8>,
) -> reqwest::blocking::Response {
    client
        .post(weft.http_url("/v1/traces"))
        .header("Content-Type", "application/x-protobuf")
        .body(body)
        .send()
        .unwrap()
}

/// The spans stored in `data_dir` are `acked`, each once, in any order.
fn assert_stored_exactly(data_dir: &std::path::Path, mut acked: Vec<u64>) {
    let mut stored = stored_span_ids(data_dir);
    stored.sort_unstable();
    acked.sort_unstable();
    assert_eq!(stored, acked);
}

/// Buffers one flush's worth and no more: while a flush runs, appends are refused.
const TIGHT: &[&str] = &[
    "--flush-bytes",
    "1000000",
    "--max-buffered-bytes",
    "1000000",
    "--retry-after",
    "2s",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_answers_resource_exhausted_with_retry_info_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), TIGHT);
    let mut client = TraceServiceClient::connect(weft.grpc_url()).await.unwrap();
    let mut acked = Vec::new();
    let mut refusal = None;
    for r in 0..5_000u64 {
        let ids = r * 200..(r + 1) * 200;
        match client
            .export(spans_request("crm-mobile", ids.clone()))
            .await
        {
            Ok(_) => acked.extend(ids),
            Err(status) => {
                refusal = Some(status);
                break;
            }
        }
    }
    let status = refusal.expect("weft never pushed back");
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    let retry = status
        .get_details_retry_info()
        .expect("RetryInfo is attached");
    assert_eq!(retry.retry_delay, Some(std::time::Duration::from_secs(2)));

    // Once the flush has drained the buffer, the same request goes through.
    let retried = 1_000_000..1_000_200u64;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match client
            .export(spans_request("crm-mobile", retried.clone()))
            .await
        {
            Ok(_) => break,
            Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                assert!(std::time::Instant::now() < deadline, "weft never recovered");
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            Err(status) => panic!("unexpected {status:?}"),
        }
    }
    acked.extend(retried);
    assert!(weft.stop().success());
    assert_stored_exactly(dir.path(), acked);
}

/// More concurrent gRPC exports than the in-flight budget holds, on two
/// HTTP/2 connections: the extra ones are refused at once with retry info,
/// and every request ends. (Held back unread instead, their bodies filled the
/// connections' flow-control windows until the ones being read could not
/// finish: a hang.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_exports_past_the_limit_are_refused_not_queued_into_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    // Room for five of the ~200 KB requests sent here (each reserves four
    // times its size).
    let weft = Weft::start(
        dir.path(),
        &[
            "--max-request-bytes",
            "1048576",
            "--max-inflight-bytes",
            "4194304",
        ],
    );
    let connections = [
        TraceServiceClient::connect(weft.grpc_url()).await.unwrap(),
        TraceServiceClient::connect(weft.grpc_url()).await.unwrap(),
    ];
    // 64 clients on two connections, each sending its next request when the
    // last is answered.
    let clients: Vec<_> = (0..64u64)
        .map(|c| {
            let mut client = connections[c as usize % 2].clone();
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                for r in 0..3 {
                    let first = (c * 3 + r) * 2000;
                    let request = spans_request("crm-mobile", first..first + 2000);
                    assert!(request.encoded_len() > 131072, "{}", request.encoded_len());
                    outcomes.push((first..first + 2000, client.export(request).await));
                }
                outcomes
            })
        })
        .collect();
    let outcomes = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        futures::future::join_all(clients),
    )
    .await
    .expect("every request gets an answer");
    let (mut acked, mut refused) = (Vec::new(), Vec::new());
    for outcome in outcomes.into_iter().flat_map(|client| client.unwrap()) {
        match outcome {
            (ids, Ok(_)) => acked.extend(ids),
            (ids, Err(status)) => {
                assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
                assert!(status.get_details_retry_info().is_some(), "{status:?}");
                refused.push(ids);
            }
        }
    }
    assert!(
        !acked.is_empty() && !refused.is_empty(),
        "{} refused",
        refused.len()
    );
    // Sent again one at a time, the refused ones are stored.
    let [mut client, _] = connections;
    for ids in refused {
        client
            .export(spans_request("crm-mobile", ids.clone()))
            .await
            .unwrap();
        acked.extend(ids);
    }
    assert!(weft.stop().success());
    assert_stored_exactly(dir.path(), acked);
}

/// A gzip'd gRPC export is admitted for its wire size before it is read and
/// for its inflated size after; one that inflates past `max_request_bytes` is
/// refused for good (no retry info), like an uncompressed one that large.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_grpc_exports_are_stored_and_limited_by_their_inflated_size() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &["--max-request-bytes", "1048576"]);
    let mut client = TraceServiceClient::connect(weft.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    client
        .export(spans_request("crm-mobile", 0..2000))
        .await
        .unwrap();
    let large = spans_request("crm-mobile", 10_000..26_000);
    assert!(large.encoded_len() > 1_100_000, "{}", large.encoded_len());
    let status = client.export(large).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    assert!(status.get_details_retry_info().is_none(), "{status:?}");
    assert!(weft.stop().success());
    assert_stored_exactly(dir.path(), (0..2000).collect());
}

#[test]
fn a_full_buffer_answers_503_with_retry_after_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), TIGHT);
    let client = reqwest::blocking::Client::new();
    let mut refused = None;
    for r in 0..5_000u64 {
        let body = spans_request("crm-mobile", r * 200..(r + 1) * 200).encode_to_vec();
        let response = post_spans(&client, &weft, body);
        if response.status() != 200 {
            refused = Some(response);
            break;
        }
    }
    let response = refused.expect("weft never pushed back");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    assert!(weft.stop().success());
}

#[test]
fn metrics_count_requests_records_and_wal_syncs() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let client = reqwest::blocking::Client::new();
    let body = spans_request("crm-mobile", 0..10).encode_to_vec();
    let response = post_spans(&client, &weft, body);
    assert_eq!(response.status(), 200);
    for url in [
        weft.http_url("/metrics"),
        format!("http://{}/metrics", weft.http),
    ] {
        let response = client.get(&url).send().unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().unwrap();
        for expected in [
            r#"weft_ingest_requests_total{signal="spans",transport="http",outcome="ok"} 1"#,
            "weft_ingest_records_total{signal=\"spans\",outcome=\"accepted\"} 10\n",
            "weft_store_rows_appended_total{table=\"spans\"} 10\n",
            "weft_store_wal_fsyncs_total{table=\"spans\"} 1\n",
            r#"weft_store_buffered_bytes{table="spans"}"#,
            "# TYPE weft_store_wal_fsync_seconds counter",
        ] {
            assert!(text.contains(expected), "{url} lacks {expected}:\n{text}");
        }
    }
    assert!(weft.stop().success());
}

#[test]
fn request_memory_is_reserved_before_the_body_is_read() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    // Room for one 200 KB request in flight (it reserves 4× its size), not two.
    let weft = Weft::start(
        dir.path(),
        &[
            "--max-request-bytes",
            "262144",
            "--max-inflight-bytes",
            "1048576",
        ],
    );
    // A client that declares a large body and is slow to send it.
    let mut slow = std::net::TcpStream::connect(weft.otlp_http).unwrap();
    write!(
        slow,
        "POST /v1/traces HTTP/1.1\r\nHost: weft\r\nContent-Type: application/x-protobuf\r\nContent-Length: 200000\r\n\r\n"
    )
    .unwrap();
    slow.write_all(&[0x0a; 10]).unwrap();

    let client = reqwest::blocking::Client::new();
    let body = spans_request("crm-mobile", 0..2000).encode_to_vec();
    assert!(body.len() > 131072 && body.len() < 262144, "{}", body.len());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let refused = loop {
        let response = post_spans(&client, &weft, body.clone());
        if response.status() == 429 {
            break response;
        }
        // The slow request may not have reached its handler yet.
        assert_eq!(response.status(), 200);
        assert!(std::time::Instant::now() < deadline, "never refused");
    };
    assert_eq!(refused.headers()["retry-after"], "1");
    // Its body was never read, so the connection cannot carry another request.
    assert_eq!(refused.headers()["connection"], "close");
    drop(slow);
    // With the slow request gone, its reservation is released.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let response = post_spans(&client, &weft, body.clone());
        if response.status() == 200 {
            break;
        }
        assert_eq!(response.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the reservation was never released"
        );
    }
    assert!(weft.stop().success());
}
