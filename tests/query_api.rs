//! The query API of a real `weft serve`: SQL in its three formats, trace by
//! id with its logs, trace and log search, services, operations,
//! dependencies, and the Jaeger API in the shapes Grafana reads. The data is
//! the CRM fixture (one failing trace through four services, one healthy
//! one, logs of both) sent over OTLP/HTTP; part of it is flushed to a
//! Parquet segment and part is still in memory, so every answer crosses both.

mod support;

use serde_json::{json, Value};
use support::*;

const FAILING: &str = "a1000000000000000000000000000001";
const HEALTHY: &str = "b2000000000000000000000000000002";

/// weft with the CRM traces in a segment (sent, then flushed by a restart)
/// and the CRM logs still unflushed.
fn crm_weft(dir: &std::path::Path) -> Weft {
    let weft = Weft::start(dir, &[]);
    weft.post_fixture("/v1/traces", "crm_traces.json");
    assert!(weft.stop().success());
    let weft = Weft::start(dir, &[]);
    weft.post_fixture("/v1/logs", "crm_logs.json");
    weft
}

#[test]
fn sql_answers_over_flushed_and_unflushed_data_with_joins_and_full_text_search() {
    let dir = tempfile::tempdir().unwrap();
    let weft = crm_weft(dir.path());

    let rows = weft.sql_rows(
        "SELECT service_name, count(*) AS spans, sum(CASE WHEN status_code = 'ERROR' THEN 1 ELSE 0 END) AS errors \
         FROM spans GROUP BY service_name ORDER BY service_name",
    );
    assert_eq!(
        rows,
        vec![
            vec![json!("crm-conductor"), json!(2), json!(1)],
            vec![json!("crm-database"), json!(2), json!(1)],
            vec![json!("crm-mobile"), json!(2), json!(1)],
            vec![json!("crm-salesforce"), json!(2), json!(0)],
        ]
    );

    // Logs (in memory) joined to error spans (in a segment).
    let rows = weft.sql_rows(
        "SELECT l.body, s.name FROM logs l JOIN spans s ON l.span_id = s.span_id AND l.trace_id = s.trace_id \
         WHERE s.status_code = 'ERROR' ORDER BY l.time",
    );
    assert_eq!(
        rows,
        vec![
            vec![
                json!("syncing account 42 for gold customer"),
                json!("sync account")
            ],
            vec![
                json!("slow query: SELECT accounts took 275ms"),
                json!("SELECT accounts")
            ],
            vec![
                json!("timeout waiting for crm-database after 280ms in conductor"),
                json!("sync account")
            ],
        ]
    );

    let rows =
        weft.sql_rows("SELECT body FROM logs WHERE text_match(body, 'timeout AND conductor')");
    assert_eq!(
        rows,
        vec![vec![json!(
            "timeout waiting for crm-database after 280ms in conductor"
        )]]
    );
    let rows =
        weft.sql_rows("SELECT name FROM spans WHERE text_match(attributes, 'gold') ORDER BY name");
    assert_eq!(
        rows,
        vec![
            vec![json!("GET /api/accounts/{id}")],
            vec![json!("sync account")]
        ]
    );

    let rows = weft.sql_rows(
        "SELECT attributes['http.route'], http_response_status_code, start_time FROM spans \
         WHERE start_time >= '2026-11-25T10:00:00Z' AND start_time < '2026-11-25T10:00:00.010Z'",
    );
    assert_eq!(
        rows,
        vec![vec![
            json!("/api/accounts/{id}"),
            json!(500),
            json!("2026-11-25T10:00:00.000000000+00:00")
        ]]
    );
    assert!(weft.stop().success());
}

/// The `DataSourceExec` line of an `EXPLAIN ANALYZE` over the spans segment.
fn segment_scan(weft: &Weft, sql: &str) -> String {
    let rows = weft.sql_rows(&format!("EXPLAIN ANALYZE {sql}"));
    let plan = rows[0][1].as_str().unwrap().to_string();
    plan.lines()
        .find(|line| line.contains("DataSourceExec") && line.contains(".parquet"))
        .unwrap_or_else(|| panic!("no Parquet scan in {plan}"))
        .to_string()
}

#[test]
fn the_index_answers_text_match_and_the_catalog_prunes_segments() {
    let dir = tempfile::tempdir().unwrap();
    let weft = crm_weft(dir.path());
    // Four of the segment's eight spans match: only those four rows reach the
    // Parquet reader's filter — the index chose them, nothing was scanned.
    let scan = segment_scan(
        &weft,
        "SELECT name FROM spans WHERE text_match(name, 'contacts')",
    );
    assert!(scan.contains("output_rows=4,"), "{scan}");
    assert!(
        scan.contains("pushdown_rows_matched=4,") && scan.contains("pushdown_rows_pruned=0,"),
        "{scan}"
    );
    // The same filter as a scan (not on an indexed column) reads all eight.
    let scan = segment_scan(&weft, "SELECT name FROM spans WHERE name LIKE '%contacts%'");
    assert!(
        scan.contains("pushdown_rows_matched=4,") && scan.contains("pushdown_rows_pruned=4,"),
        "{scan}"
    );

    // A time range or service the catalog says a segment lacks, text the
    // index does not hold, or a trace id its trace filter rules out skips the file.
    for sql in [
        "SELECT count(*) FROM spans WHERE start_time > '2030-01-01T00:00:00Z'",
        "SELECT count(*) FROM spans WHERE service_name = 'crm-billing'",
        "SELECT count(*) FROM spans WHERE text_match(name, 'nowhere')",
        "SELECT count(*) FROM spans WHERE trace_id = '00000000000000000000000000000bad'",
        "SELECT count(*) FROM spans WHERE trace_id IN ('00000000000000000000000000000bad', 'c3000000000000000000000000000003')",
    ] {
        let rows = weft.sql_rows(&format!("EXPLAIN {sql}"));
        let plan: String = rows.iter().map(|r| r[1].as_str().unwrap()).collect();
        assert!(!plan.contains(".parquet"), "{sql}: {plan}");
        assert_eq!(weft.sql_rows(sql), vec![vec![json!(0)]]);
    }
    let rows = weft.sql_rows(&format!(
        "EXPLAIN SELECT count(*) FROM spans WHERE trace_id = '{FAILING}'"
    ));
    let plan: String = rows.iter().map(|r| r[1].as_str().unwrap()).collect();
    assert!(plan.contains(".parquet"), "{plan}");
    assert!(weft.stop().success());
}

#[test]
fn sql_results_come_as_csv_or_arrow_and_bad_or_writing_queries_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let weft = crm_weft(dir.path());
    let client = reqwest::blocking::Client::new();
    let post = |accept: &str, sql: &str| {
        client
            .post(weft.api_url("/api/v1/sql"))
            .header("accept", accept)
            .json(&json!({ "sql": sql }))
            .send()
            .unwrap()
    };

    let csv = post(
        "text/csv",
        "SELECT name, duration_ns FROM spans WHERE service_name = 'crm-database' ORDER BY name",
    );
    assert_eq!(csv.status().as_u16(), 200);
    assert_eq!(
        csv.text().unwrap(),
        "name,duration_ns\nSELECT accounts,280000000\nSELECT contacts,18000000\n"
    );

    let arrow = post(
        "application/vnd.apache.arrow.stream",
        "SELECT count(*) AS n FROM logs",
    );
    assert_eq!(arrow.status().as_u16(), 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(
        std::io::Cursor::new(arrow.bytes().unwrap()),
        None,
    )
    .unwrap();
    let batches: Vec<_> = reader.map(Result::unwrap).collect();
    assert_eq!(batches[0].schema().field(0).name(), "n");
    assert_eq!(
        arrow::array::AsArray::as_primitive::<arrow::datatypes::Int64Type>(batches[0].column(0))
            .value(0),
        5
    );

    for (sql, expected) in [
        ("CREATE TABLE t AS SELECT 1", "DDL not supported"),
        ("DROP TABLE spans", "DDL not supported"),
        ("INSERT INTO spans SELECT * FROM spans", "DML not supported"),
        (
            "COPY (SELECT 1) TO '/tmp/weft-copy.csv'",
            "DML not supported",
        ),
        (
            "SET datafusion.execution.batch_size = 1",
            "Statement not supported",
        ),
        ("SELEC 1", "Expected"),
        ("SELECT nope FROM spans", "nope"),
        (
            "SELECT body FROM logs WHERE text_match(body, '\"unclosed')",
            "unclosed quote",
        ),
    ] {
        let (status, body) = weft.sql(sql);
        assert_eq!(status, 400, "{sql}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(expected), "{sql}: {error}");
    }
    let response = client
        .post(weft.api_url("/api/v1/sql"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    assert!(response.json::<Value>().unwrap()["error"].is_string());
    assert!(weft.stop().success());
}

#[test]
fn a_trace_comes_with_its_logs_and_search_finds_traces_logs_services_and_dependencies() {
    let dir = tempfile::tempdir().unwrap();
    let weft = crm_weft(dir.path());

    let (status, trace) = weft.get_json(&format!("/api/v1/traces/{}", FAILING.to_uppercase()));
    assert_eq!(status, 200, "{trace}");
    assert_eq!(trace["trace_id"], FAILING);
    let names: Vec<&str> = trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "GET /api/accounts/{id}",
            "sync account",
            "GET /services/data/accounts",
            "SELECT accounts"
        ]
    );
    assert_eq!(trace["spans"][0]["parent_span_id"], Value::Null);
    assert_eq!(trace["spans"][0]["attributes"]["customer.tier"], "gold");
    let bodies: Vec<&str> = trace["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["body"].as_str().unwrap())
        .collect();
    assert_eq!(bodies.len(), 3, "{bodies:?}");

    let (status, body) = weft.get_json("/api/v1/traces/00000000000000000000000000000bad");
    assert_eq!(
        (
            status,
            body["error"].as_str().unwrap().contains("not found")
        ),
        (404, true)
    );
    let (status, body) = weft.get_json("/api/v1/traces/not-a-trace-id");
    assert_eq!(status, 400, "{body}");

    let (status, found) = weft.get_json(
        "/api/v1/traces?service=crm-database&tags=db.system=sqlite&min_duration=100ms&limit=5",
    );
    assert_eq!(status, 200, "{found}");
    let traces = found["traces"].as_array().unwrap();
    assert_eq!(traces.len(), 1, "{found}");
    assert_eq!(traces[0]["trace_id"], FAILING);
    assert_eq!(traces[0]["span_count"], 4);
    assert_eq!(traces[0]["error_count"], 3);
    assert_eq!(traces[0]["duration_ns"], 420_000_000);
    assert_eq!(traces[0]["root_service"], "crm-mobile");
    assert_eq!(traces[0]["root_name"], "GET /api/accounts/{id}");
    assert_eq!(
        traces[0]["services"],
        json!([
            "crm-conductor",
            "crm-database",
            "crm-mobile",
            "crm-salesforce"
        ])
    );
    let (_, found) = weft.get_json("/api/v1/traces?tags=customer.tier=silver&tags=error=false");
    let ids: Vec<&str> = found["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [HEALTHY]);
    let (status, body) = weft.get_json("/api/v1/traces?min_duration=fast");
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("min_duration"),
        "{body}"
    );

    let (status, logs) = weft.get_json("/api/v1/logs?q=timeout%20AND%20conductor&severity=warn");
    assert_eq!(status, 200, "{logs}");
    assert_eq!(logs["logs"].as_array().unwrap().len(), 1);
    assert_eq!(logs["logs"][0]["trace_id"], FAILING);
    let (_, logs) = weft.get_json("/api/v1/logs?service=crm-database&limit=1");
    assert_eq!(
        logs["logs"][0]["body"], "checkpoint complete",
        "newest first"
    );
    let (_, logs) = weft.get_json("/api/v1/logs?service=crm-database&limit=1&offset=1");
    assert_eq!(
        logs["logs"][0]["body"],
        "slow query: SELECT accounts took 275ms"
    );
    let (status, _) = weft.get_json("/api/v1/logs?severity=loud");
    assert_eq!(status, 400);

    let (_, services) = weft.get_json("/api/v1/services");
    assert_eq!(
        services["services"],
        json!([
            "crm-conductor",
            "crm-database",
            "crm-mobile",
            "crm-salesforce"
        ])
    );
    let (_, operations) = weft.get_json("/api/v1/services/crm-database/operations");
    assert_eq!(
        operations["operations"],
        json!([
            {"name": "SELECT accounts", "kind": "SERVER", "span_count": 1, "error_count": 1, "p50_ns": 280_000_000, "p99_ns": 280_000_000},
            {"name": "SELECT contacts", "kind": "SERVER", "span_count": 1, "error_count": 0, "p50_ns": 18_000_000, "p99_ns": 18_000_000}
        ])
    );
    // Over a window that holds only the healthy trace.
    let (status, operations) = weft.get_json(
        "/api/v1/services/crm-database/operations?start=2026-11-25T10:00:00.500Z&end=2026-11-25T11:00:00Z",
    );
    assert_eq!(status, 200, "{operations}");
    assert_eq!(
        operations["operations"],
        json!([{"name": "SELECT contacts", "kind": "SERVER", "span_count": 1, "error_count": 0, "p50_ns": 18_000_000, "p99_ns": 18_000_000}])
    );
    let (status, deps) =
        weft.get_json("/api/v1/dependencies?start=2026-11-25T09:00:00Z&end=2026-11-25T11:00:00Z");
    assert_eq!(status, 200, "{deps}");
    assert_eq!(
        deps["dependencies"],
        json!([
            {"parent": "crm-conductor", "child": "crm-database", "call_count": 2, "error_count": 1},
            {"parent": "crm-conductor", "child": "crm-salesforce", "call_count": 2, "error_count": 0},
            {"parent": "crm-mobile", "child": "crm-conductor", "call_count": 2, "error_count": 1},
        ])
    );
    assert!(weft.stop().success());
}

#[test]
fn the_jaeger_api_answers_in_the_shapes_grafana_reads() {
    let dir = tempfile::tempdir().unwrap();
    let weft = crm_weft(dir.path());

    let (status, services) = weft.get_json("/api/services");
    assert_eq!(status, 200);
    assert_eq!(
        services["data"],
        json!([
            "crm-conductor",
            "crm-database",
            "crm-mobile",
            "crm-salesforce"
        ])
    );
    assert_eq!(services["total"], 4);
    assert!(services["errors"].is_null());

    let (_, operations) = weft.get_json("/api/services/crm-mobile/operations");
    assert_eq!(
        operations["data"],
        json!(["GET /api/accounts/{id}", "GET /api/contacts"])
    );
    let (_, operations) = weft.get_json("/api/operations?service=crm-mobile&spanKind=server");
    assert_eq!(
        operations["data"][0],
        json!({"name": "GET /api/accounts/{id}", "spanKind": "server"})
    );

    let (status, trace) = weft.get_json(&format!("/api/traces/{FAILING}"));
    assert_eq!(status, 200, "{trace}");
    let trace = &trace["data"][0];
    assert_eq!(trace["traceID"], FAILING);
    let spans = trace["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 4);
    let database = spans
        .iter()
        .find(|s| s["operationName"] == "SELECT accounts")
        .unwrap();
    assert_eq!(database["spanID"], "a100000000000004");
    assert_eq!(
        database["references"],
        json!([{"refType": "CHILD_OF", "traceID": FAILING, "spanID": "a100000000000002"}])
    );
    assert_eq!(database["startTime"], 1_795_600_800_125_000i64);
    assert_eq!(database["duration"], 280_000);
    let tags = database["tags"].as_array().unwrap();
    assert!(
        tags.contains(&json!({"key": "db.system", "type": "string", "value": "sqlite"})),
        "{tags:?}"
    );
    assert!(
        tags.contains(&json!({"key": "error", "type": "bool", "value": true})),
        "{tags:?}"
    );
    assert_eq!(
        database["logs"][0]["fields"][0],
        json!({"key": "message", "type": "string", "value": "slow query: SELECT accounts took 275ms"})
    );
    assert_eq!(database["logs"][0]["timestamp"], 1_795_600_800_400_000i64);
    let process = &trace["processes"][database["processID"].as_str().unwrap()];
    assert_eq!(process["serviceName"], "crm-database");
    assert!(process["tags"]
        .as_array()
        .unwrap()
        .contains(&json!({"key": "service.version", "type": "string", "value": "1.4.0"})));

    let (status, missing) = weft.get_json("/api/traces/00000000000000000000000000000bad");
    assert_eq!(status, 404);
    assert_eq!(missing["errors"][0]["code"], 404);

    // Grafana searches with microsecond bounds and tags as a JSON object.
    let start = 1_795_600_800_000_000i64 - 60_000_000;
    let end = start + 3_600_000_000;
    let tags = "%7B%22customer.tier%22%3A%22gold%22%7D";
    let (status, found) = weft.get_json(&format!(
        "/api/traces?service=crm-mobile&operation=GET%20%2Fapi%2Faccounts%2F%7Bid%7D&tags={tags}&start={start}&end={end}&minDuration=100ms&limit=20"
    ));
    assert_eq!(status, 200, "{found}");
    let ids: Vec<&str> = found["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [FAILING]);
    let (_, found) = weft.get_json(&format!(
        "/api/traces?service=crm-mobile&start={start}&end={end}"
    ));
    assert_eq!(found["data"].as_array().unwrap().len(), 2);

    let end_ms = 1_795_600_800_000i64 + 3_600_000;
    let (_, deps) = weft.get_json(&format!(
        "/api/dependencies?endTs={end_ms}&lookback=7200000"
    ));
    assert_eq!(
        deps["data"],
        json!([
            {"parent": "crm-conductor", "child": "crm-database", "callCount": 2},
            {"parent": "crm-conductor", "child": "crm-salesforce", "callCount": 2},
            {"parent": "crm-mobile", "child": "crm-conductor", "callCount": 2},
        ])
    );
    assert!(weft.stop().success());
}

#[test]
fn queries_are_cut_at_the_row_limit_and_cancelled_at_the_time_limit() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(
        dir.path(),
        &["--query-max-rows", "3", "--query-timeout", "300ms"],
    );
    weft.post_fixture("/v1/traces", "crm_traces.json");

    let (status, body) = weft.sql("SELECT span_id FROM spans");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["rows"].as_array().unwrap().len(), 3);
    assert_eq!(body["truncated"], true);
    let (_, body) = weft.sql("SELECT count(*) FROM spans");
    assert_eq!(
        (body["rows"][0][0].as_i64(), body["truncated"].as_bool()),
        (Some(8), Some(false))
    );
    // A trace bigger than the limit says so, in both APIs.
    let (status, body) = weft.get_json("/api/v1/traces/a1000000000000000000000000000001");
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spans"].as_array().unwrap().len(), 3);
    assert_eq!(body["truncated"], true);
    let (_, body) = weft.get_json("/api/traces/a1000000000000000000000000000001");
    assert!(body["data"][0]["warnings"][0]
        .as_str()
        .unwrap()
        .contains("row limit"));

    let started = std::time::Instant::now();
    let (status, body) = weft.sql("SELECT count(*) FROM generate_series(1, 10000000000)");
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("time limit of 300ms"),
        "{body}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    // The server is fine afterwards.
    assert_eq!(weft.sql("SELECT 1").0, 200);
    assert!(weft.stop().success());
}

/// A cross join emits batch after batch without reading its inputs; it must
/// still give the time limit its chance, and its work must stop with it.
#[test]
fn a_join_cancelled_at_the_time_limit_stops_using_cpu() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &["--query-timeout", "2s"]);
    // One request, so one large in-memory batch: a join's output per input
    // batch is then far larger than the runtime's cooperative budget.
    let spans: Vec<_> = (0..6000)
        .map(|i| {
            json!({
                "traceId": format!("{:032x}", 0xc0ffee0000u64 + i / 10),
                "spanId": format!("{:016x}", 0xbeef0000u64 + i),
                "name": "work",
                "startTimeUnixNano": "1764064800000000000",
                "endTimeUnixNano": "1764064800001000000",
            })
        })
        .collect();
    let response = reqwest::blocking::Client::new()
        .post(weft.http_url("/v1/traces"))
        .json(&json!({ "resourceSpans": [{ "scopeSpans": [{ "spans": spans }] }] }))
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    // A clean stop flushes them to a Parquet segment, where the scan runs.
    assert!(weft.stop().success());
    let weft = Weft::start(dir.path(), &["--query-timeout", "2s"]);
    let started = std::time::Instant::now();
    let (status, body) = weft.sql(
        "SELECT max(a.duration_ns + b.duration_ns + c.duration_ns) FROM spans a, spans b, spans c",
    );
    assert_eq!(status, 400, "{body}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    // ... and the work stops with it: a runaway join would keep a core busy.
    let before = weft.cpu_time();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let used = weft.cpu_time() - before;
    assert!(
        used < std::time::Duration::from_millis(1000),
        "weft used {used:?} of CPU in the 2 s after the query was cancelled"
    );
    assert_eq!(weft.sql("SELECT 1").0, 200);
    assert!(weft.stop().success());
}
