//! What weft acknowledged stays: through SIGKILL, a torn WAL tail, and clean
//! restarts, every acknowledged span is stored exactly once.

mod support;

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use support::*;

/// Sends `requests` requests of `per_request` spans each, ids starting at `first`.
async fn send_all(url: &str, first: u64, requests: u64, per_request: u64) {
    let mut client = TraceServiceClient::connect(url.to_string()).await.unwrap();
    for r in 0..requests {
        let start = first + r * per_request;
        let response = client
            .export(spans_request("crm-conductor", start..start + per_request))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.partial_success, None);
    }
}

fn assert_exactly_once(stored: &[u64], expected: impl IntoIterator<Item = u64>) {
    let mut sorted = stored.to_vec();
    sorted.sort_unstable();
    let unique: BTreeSet<u64> = sorted.iter().copied().collect();
    assert_eq!(unique.len(), sorted.len(), "some spans are stored twice");
    let expected: BTreeSet<u64> = expected.into_iter().collect();
    let missing: Vec<_> = expected.difference(&unique).take(10).collect();
    assert!(
        missing.is_empty(),
        "acknowledged spans are missing, e.g. {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_survive_sigkill_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    // Small flushes and frequent merges, so the kill can land before, during
    // or after either.
    let weft = Weft::start(
        dir.path(),
        &["--flush-bytes", "300000", "--compaction-interval", "50ms"],
    );
    let url = weft.grpc_url();
    let acked = Arc::new(Mutex::new(Vec::<u64>::new()));
    let mut clients = Vec::new();
    for client_no in 0..4u64 {
        let url = url.clone();
        let acked = acked.clone();
        clients.push(tokio::spawn(async move {
            let mut client = TraceServiceClient::connect(url).await.unwrap();
            for r in 0..10_000u64 {
                let first = (client_no << 32) + r * 25;
                let ids = first..first + 25;
                match client
                    .export(spans_request("crm-mobile", ids.clone()))
                    .await
                {
                    Ok(_) => acked.lock().unwrap().extend(ids),
                    Err(_) => return, // weft is gone: this request was never acknowledged.
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 20_000 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    weft.kill9();
    for client in clients {
        client.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();

    let weft = Weft::start(dir.path(), &[]);
    assert!(
        weft.log().contains("replayed WAL"),
        "the WAL was not replayed:\n{}",
        weft.log()
    );
    assert!(weft.stop().success());
    assert_exactly_once(&stored_span_ids(dir.path()), acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_wal_tail_is_skipped_and_the_good_records_kept() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    send_all(&weft.grpc_url(), 0, 3, 10).await;
    weft.kill9();

    // Half a record at the end of the newest WAL file, as a crash in the
    // middle of an (unacknowledged) write leaves it.
    let wal_dir = dir.path().join("spans").join("wal");
    let newest = std::fs::read_dir(&wal_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap();
    file.write_all(&4096u32.to_le_bytes()).unwrap();
    file.write_all(&0xdead_beef_u32.to_le_bytes()).unwrap();
    file.write_all(&[7u8; 100]).unwrap();
    drop(file);

    let weft = Weft::start(dir.path(), &[]);
    assert!(
        weft.log().contains("torn or corrupt tail"),
        "no warning:\n{}",
        weft.log()
    );
    send_all(&weft.grpc_url(), 1000, 1, 10).await;
    assert!(weft.stop().success());
    let stored = stored_span_ids(dir.path());
    assert_eq!(stored.len(), 40);
    assert_exactly_once(&stored, (0..30).chain(1000..1010));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_flushes_everything_and_a_restart_finds_it() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    send_all(&weft.grpc_url(), 0, 5, 20).await;
    assert!(weft.stop().success(), "SIGTERM must exit 0");

    // Everything is in Parquet; the WAL holds nothing more.
    let wal_bytes: u64 = std::fs::read_dir(dir.path().join("spans").join("wal"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(wal_bytes, 0);
    assert_eq!(stored_span_ids(dir.path()).len(), 100);

    let weft = Weft::start(dir.path(), &[]);
    send_all(&weft.grpc_url(), 100, 5, 20).await;
    assert!(weft.stop().success());
    assert_exactly_once(&stored_span_ids(dir.path()), 0..200);
    let catalog: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("spans").join("catalog.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(catalog["segments"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_client_connection_does_not_hold_shutdown_open() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &["--shutdown-grace", "1s"]);
    // A client that keeps its connection open and never goes away.
    let mut client = TraceServiceClient::connect(weft.grpc_url()).await.unwrap();
    client
        .export(spans_request("crm-mobile", 0..10))
        .await
        .unwrap();
    let stopped = tokio::task::spawn_blocking(move || weft.stop())
        .await
        .unwrap();
    assert!(stopped.success());
    assert_eq!(stored_span_ids(dir.path()).len(), 10);
    drop(client);
}

#[test]
fn a_second_weft_on_the_same_data_directory_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "serve",
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
        ])
        .args(["--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(
        stderr.contains("in use by another weft process"),
        "{stderr}"
    );
    assert!(weft.stop().success());
}
