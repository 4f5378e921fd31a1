//! What the query side sees of data the collector acknowledged: at once,
//! exactly once, across flushes, in one process (`weft serve`) or two
//! (`weft collector` + `weft query` on one data directory), and through
//! `weft sql`.

mod support;

use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_span_the_sdk_got_acknowledged_is_found_by_trace_id_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(weft.grpc_url())
        .build()
        .unwrap();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .with_resource(Resource::builder().with_service_name("crm-mobile").build())
        .build();
    let tracer = provider.tracer("freshness");
    let mut span = tracer.start("GET /api/accounts");
    let trace_id = span.span_context().trace_id().to_string();
    span.end();
    // The simple exporter returns once weft acknowledged the export.
    provider.force_flush().expect("span exported");
    let acknowledged = Instant::now();

    let found = tokio::task::spawn_blocking(move || loop {
        let (status, body) = weft.get_json(&format!("/api/v1/traces/{trace_id}"));
        if status == 200 {
            assert_eq!(body["spans"][0]["name"], "GET /api/accounts");
            return (acknowledged.elapsed(), weft);
        }
        assert_eq!(status, 404, "{body}");
        assert!(
            acknowledged.elapsed() < Duration::from_secs(1),
            "not visible within 1 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    })
    .await
    .unwrap();
    assert!(
        found.0 < Duration::from_secs(1),
        "visible after {:?}",
        found.0
    );
    provider.shutdown().unwrap();
    assert!(found.1.stop().success());
}

/// Parquet segments of the spans table on disk.
fn segments(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("spans/segments")).map_or(0, |d| d.count())
}

fn span_count(weft: &Weft) -> i64 {
    weft.sql_rows("SELECT count(*) FROM spans")[0][0]
        .as_i64()
        .unwrap()
}

/// Sends the CRM traces (8 spans) `rounds` times with fresh trace ids, and
/// after each acknowledgement checks the count is exactly what was sent,
/// while flushes every few milliseconds move data from memory to segments.
fn count_exactly_while_flushing(writer: &Weft, reader: &Weft, rounds: usize) {
    let template = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/crm_traces.json"),
    )
    .unwrap();
    let client = reqwest::blocking::Client::new();
    for round in 1..=rounds {
        let body = template
            .replace(
                "a1000000000000000000000000000001",
                &format!("a1{round:030}"),
            )
            .replace(
                "b2000000000000000000000000000002",
                &format!("b2{round:030}"),
            );
        let response = client
            .post(writer.http_url("/v1/traces"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(span_count(reader), 8 * round as i64, "after round {round}");
    }
}

#[test]
fn queries_during_flushes_neither_lose_nor_double_rows() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &["--flush-interval", "20ms"]);
    count_exactly_while_flushing(&weft, &weft, 40);
    assert!(segments(dir.path()) >= 2, "flushes ran during the queries");
    assert!(weft.stop().success());
}

#[test]
fn weft_query_beside_weft_collector_sees_acknowledged_data_once_before_and_after_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Weft::start_role("collector", dir.path(), &["--flush-interval", "20ms"]);
    let query = Weft::start_role("query", dir.path(), &[]);
    count_exactly_while_flushing(&collector, &query, 30);
    assert!(segments(dir.path()) >= 2, "flushes ran during the queries");
    assert!(collector.stop().success());
    assert_eq!(span_count(&query), 240);
    assert!(query.stop().success());
}

fn weft_sql(args: &[&str]) -> (bool, String, String) {
    weft_sql_in(std::path::Path::new("."), args)
}

fn weft_sql_in(cwd: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .current_dir(cwd)
        .arg("sql")
        .args(args)
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

#[test]
fn weft_sql_prints_a_table_csv_or_json_from_a_server_or_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().to_str().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    weft.post_fixture("/v1/traces", "crm_traces.json");
    let server = weft.api_url("");
    let query = "SELECT service_name, count(*) AS spans FROM spans GROUP BY 1 ORDER BY 1";

    let (ok, table, err) = weft_sql(&["--server", &server, query]);
    assert!(ok, "{err}");
    assert_eq!(
        table,
        "+----------------+-------+\n\
         | service_name   | spans |\n\
         +----------------+-------+\n\
         | crm-conductor  | 2     |\n\
         | crm-database   | 2     |\n\
         | crm-mobile     | 2     |\n\
         | crm-salesforce | 2     |\n\
         +----------------+-------+\n"
    );
    let (ok, csv, err) = weft_sql(&["--server", &server, "--format", "csv", query]);
    assert!(ok, "{err}");
    assert_eq!(
        csv,
        "service_name,spans\ncrm-conductor,2\ncrm-database,2\ncrm-mobile,2\ncrm-salesforce,2\n"
    );
    let (ok, _, err) = weft_sql(&["--server", &server, "SELECT nope FROM spans"]);
    assert!(!ok);
    assert!(err.contains("400") && err.contains("nope"), "{err}");

    // The same query on the data directory, while weft still runs (its tail
    // is read from the WAL) and after it stopped (all in segments).
    let (ok, running, err) = weft_sql(&["--data-dir", data_dir, "--format", "csv", query]);
    assert!(ok, "{err}");
    assert_eq!(running, csv);
    assert!(weft.stop().success());
    // A relative data directory, as the default `./weft-data` is.
    let (ok, json_out, err) =
        weft_sql_in(dir.path(), &["--data-dir", ".", "--format", "json", query]);
    assert!(ok, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(
        rows[0],
        json!({"service_name": "crm-conductor", "spans": 2})
    );

    let (ok, _, err) = weft_sql(&["--data-dir", "/nonexistent/weft", query]);
    assert!(!ok);
    assert!(err.contains("does not exist"), "{err}");
}
