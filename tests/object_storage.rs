//! Segments in an object store (`--storage`): two collectors write one bucket,
//! queriers over it answer for both, a collector killed with SIGKILL loses
//! nothing it acknowledged, a querier started later sees everything, and a
//! querier's small cache is refilled from the bucket, and queriers see what
//! collectors acknowledged before it is flushed (Arrow Flight to the
//! collectors' memory), and a Ballista cluster answers a querier's SQL as
//! the querier itself would. Most tests run against
//! a `file://` bucket and against S3 (a moto server, `pip install
//! 'moto[server]'`; required in CI with `WEFT_S3_TESTS=required`).

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

/// Whether `check` (a command that succeeds where a tool is installed) runs
/// here. Where it does not, the test is skipped with a note, or fails when
/// `required_by` is set to `required` (CI sets it).
fn runs_here(check: &mut Command, required_by: &str, tool: &str) -> bool {
    let installed = check.output().is_ok_and(|o| o.status.success());
    if !installed {
        assert_ne!(
            std::env::var(required_by).as_deref(),
            Ok("required"),
            "{required_by}=required but {tool} is missing"
        );
        eprintln!("SKIPPED: needs {tool}");
    }
    installed
}

/// Where a test's segments go, and what weft needs in its environment to
/// reach it.
struct Bucket {
    url: String,
    env: Vec<(&'static str, String)>,
    _server: Option<Process>,
    dir: tempfile::TempDir,
}

impl Bucket {
    fn file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            url: format!("file://{}/bucket/weft", dir.path().display()),
            env: Vec::new(),
            _server: None,
            dir,
        }
    }

    /// A bucket on a fresh moto S3 server, or `None` (with a note) when moto
    /// is not installed and not required.
    fn s3() -> Option<Self> {
        if !runs_here(
            Command::new("moto_server").arg("--help"),
            "WEFT_S3_TESTS",
            "moto_server (pip install 'moto[server]')",
        ) {
            return None;
        }
        let mut command = Command::new("moto_server");
        command.args(["-H", "127.0.0.1", "-p", "0"]);
        let (server, line) = Process::spawn_until(command, "moto", "Running on http://");
        let endpoint = line[line.find("http://").unwrap()..].trim().to_string();
        // moto takes any credentials and creates a bucket on an unsigned PUT.
        let created = client()
            .put(format!("{endpoint}/weft-test"))
            .send()
            .unwrap();
        assert!(created.status().is_success(), "{:?}", created.text());
        Some(Self {
            url: "s3://weft-test/prefix".into(),
            env: vec![
                ("AWS_ACCESS_KEY_ID", "test".into()),
                ("AWS_SECRET_ACCESS_KEY", "test".into()),
                ("AWS_REGION", "us-east-1".into()),
                ("AWS_ENDPOINT", endpoint),
                ("AWS_ALLOW_HTTP", "true".into()),
            ],
            _server: Some(server),
            dir: tempfile::tempdir().unwrap(),
        })
    }

    /// `weft <role> --storage <bucket>` on its own data directory.
    fn start(&self, role: &str, data_dir: &Path, args: &[&str]) -> Weft {
        let mut all = vec!["--storage", &self.url];
        all.extend_from_slice(args);
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Weft::start_with_env(role, data_dir, &all, &env)
    }

    /// `weft ballista <role> --storage <bucket>` on the data directory
    /// `name`, and its "listening" line.
    fn ballista(&self, role: &str, name: &'static str, args: &[&str]) -> (Process, String) {
        let env: Vec<(&str, &str)> = self.env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        start_ballista(role, name, &self.url, &self.data_dir(name), args, &env)
    }

    fn data_dir(&self, name: &str) -> std::path::PathBuf {
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}

/// Per service: spans, distinct span ids, and spans whose name matches `op-3`.
fn per_service(weft: &Weft) -> Vec<(String, i64, i64, i64)> {
    weft.sql_rows(
        "SELECT service_name, count(*), count(DISTINCT span_id), \
         count(*) FILTER (WHERE text_match(name, 'op-3')) FROM spans GROUP BY 1 ORDER BY 1",
    )
    .into_iter()
    .map(|row| {
        let n = |i: usize| row[i].as_i64().unwrap();
        (row[0].as_str().unwrap().to_string(), n(1), n(2), n(3))
    })
    .collect()
}

/// A collector that flushes and merges its small segments every few
/// milliseconds, deleting what merges replaced a second later.
const MERGING_COLLECTOR: [&str; 8] = [
    "--flush-interval",
    "50ms",
    "--compaction-interval",
    "100ms",
    "--query-timeout",
    "1s",
    "--deletion-grace",
    "1s",
];

fn trace_spans(weft: &Weft, trace: u64) -> usize {
    let (status, body) = weft.get_json(&format!("/api/v1/traces/{trace:016x}000000000000feed"));
    assert_eq!(status, 200, "{body}");
    body["spans"].as_array().unwrap().len()
}

fn cached_parquet_files(data_dir: &Path) -> usize {
    std::fs::read_dir(data_dir.join("spans/segments"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "parquet"))
                .count()
        })
        .unwrap_or(0)
}

fn op_3(ids: std::ops::Range<u64>) -> i64 {
    ids.filter(|id| id % 7 == 3).count() as i64
}

fn two_collectors_and_queriers_share_one_bucket(bucket: &Bucket) {
    let (dir_a, dir_b, dir_q) = (
        bucket.data_dir("a"),
        bucket.data_dir("b"),
        bucket.data_dir("q"),
    );
    let flush_fast = ["--flush-interval", "50ms"];
    // Collector a merges its small segments in the bucket as they come.
    let a = bucket.start("collector", &dir_a, &MERGING_COLLECTOR);
    let b = bucket.start("collector", &dir_b, &flush_fast);
    // A cache of one byte: every segment not used in the last second goes.
    let small_cache = [
        "--cache-bytes",
        "1",
        "--query-timeout",
        "1s",
        "--deletion-grace",
        "1s",
    ];
    let q = bucket.start("query", &dir_q, &small_cache);

    // Ten segments from a, one from b.
    for i in 0..10u64 {
        a.post_spans(&spans_request("crm-conductor", i * 10..i * 10 + 10));
        eventually("a's flush", || {
            a.metric("weft_store_segments_written_total{table=\"spans\"}") > i as f64
        });
    }
    b.post_spans(&spans_request("crm-database", 100..200));
    let both = vec![
        ("crm-conductor".to_string(), 100, 100, op_3(0..100)),
        ("crm-database".to_string(), 100, 100, op_3(100..200)),
    ];
    // While a merges its ten into one, the querier never sees a row twice.
    eventually(
        "both collectors' segments, a's merged, reach the querier",
        || {
            let answer = per_service(&q);
            for (service, count, distinct, _) in &answer {
                assert_eq!(count, distinct, "{service}: a span seen twice");
            }
            answer == both
                && a.metric("weft_store_compactions_total{table=\"spans\"}") >= 1.0
                && a.metric("weft_store_segments{table=\"spans\"}") == 1.0
        },
    );
    assert_eq!(trace_spans(&q, 5), 10);
    assert_eq!(trace_spans(&q, 15), 10);

    // Queries that read only crm-conductor's segment keep it cached; the
    // other one leaves the cache once its second is over.
    eventually("the unused segment is evicted", || {
        let rows = q.sql_rows("SELECT count(*) FROM spans WHERE service_name = 'crm-conductor'");
        assert_eq!(rows[0][0], 100);
        cached_parquet_files(&dir_q) == 1
    });
    // ... and is fetched again when a query needs it.
    assert_eq!(per_service(&q), both);

    // Collector a acknowledges spans it has not flushed and is killed.
    assert!(a.stop().success());
    let a = bucket.start("collector", &dir_a, &["--flush-interval", "1h"]);
    a.post_spans(&spans_request("crm-conductor", 200..250));
    a.kill9();
    // Restarted, it replays its WAL and flushes into its own catalog again.
    let a = bucket.start("collector", &dir_a, &flush_fast);
    let all = vec![
        (
            "crm-conductor".to_string(),
            150,
            150,
            op_3(0..100) + op_3(200..250),
        ),
        ("crm-database".to_string(), 100, 100, op_3(100..200)),
    ];
    eventually("the replayed spans reach the querier", || {
        per_service(&q) == all
    });
    // The querier may have them from a's memory; the lookups below count
    // segments, so wait for a's flush of them (a has its merged one and this).
    eventually("a flushes the replayed spans", || {
        a.metric("weft_store_segments{table=\"spans\"}") == 2.0
    });

    // A trace lookup on a cold cache fetches the segments' trace-id filters,
    // not their full-text indexes, and only the Parquet files that hold it.
    let cold = bucket.data_dir("cold");
    let querier = bucket.start("query", &cold, &[]);
    assert_eq!(trace_spans(&querier, 15), 10);
    let (mut filters, mut indexes) = (0, 0);
    for entry in std::fs::read_dir(cold.join("spans/index")).unwrap() {
        let dir = entry.unwrap().path();
        filters += usize::from(dir.join("trace_ids.bloom").exists());
        indexes += usize::from(dir.join("meta.json").exists());
    }
    assert!(filters >= 3, "{filters} trace filters fetched");
    assert_eq!(indexes, 0);
    assert_eq!(cached_parquet_files(&cold), 1);
    assert!(querier.stop().success());

    // A querier started now, with a cold cache, sees everything; restarted,
    // it answers the same from the cache it left.
    let late = bucket.start("query", &bucket.data_dir("late"), &[]);
    assert_eq!(per_service(&late), all);
    assert_eq!(trace_spans(&late, 22), 10);
    assert!(late.stop().success());
    assert!(cached_parquet_files(&bucket.data_dir("late")) >= 3);
    let late = bucket.start("query", &bucket.data_dir("late"), &[]);
    assert_eq!(per_service(&late), all);

    for weft in [a, b, q, late] {
        assert!(weft.stop().success());
    }
}

/// Spans per service, and distinct span ids in all.
fn counts(weft: &Weft) -> (Vec<(String, i64)>, i64) {
    let services = weft
        .sql_rows("SELECT service_name, count(*) FROM spans GROUP BY 1 ORDER BY 1")
        .into_iter()
        .map(|row| {
            (
                row[0].as_str().unwrap().to_string(),
                row[1].as_i64().unwrap(),
            )
        })
        .collect();
    let distinct = weft.sql_rows("SELECT count(DISTINCT span_id) FROM spans")[0][0]
        .as_i64()
        .unwrap();
    (services, distinct)
}

fn queriers_see_acknowledged_spans_before_any_flush(bucket: &Bucket) {
    // Collector a never flushes on its own; b flushes and merges all the time.
    let a = bucket.start(
        "collector",
        &bucket.data_dir("a"),
        &["--flush-interval", "1h"],
    );
    let b = bucket.start("collector", &bucket.data_dir("b"), &MERGING_COLLECTOR);
    let q = bucket.start("query", &bucket.data_dir("q"), &[]);

    // Each answer comes straight after the acknowledgements: no waiting.
    a.post_spans(&spans_request("crm-conductor", 0..10));
    assert_eq!(trace_spans(&q, 0), 10);
    for round in 1..=20u64 {
        b.post_spans(&spans_request("crm-database", round * 10..round * 10 + 10));
        let (services, distinct) = counts(&q);
        let expected = vec![
            ("crm-conductor".to_string(), 10),
            ("crm-database".to_string(), round as i64 * 10),
        ];
        assert_eq!(services, expected, "round {round}");
        assert_eq!(
            distinct,
            10 + round as i64 * 10,
            "round {round}: a span seen twice"
        );
    }
    assert!(b.metric("weft_store_segments_written_total{table=\"spans\"}") >= 2.0);
    assert!(b.metric("weft_store_compactions_total{table=\"spans\"}") >= 1.0);
    assert_eq!(
        a.metric("weft_store_segments_written_total{table=\"spans\"}"),
        0.0
    );

    // Killed, a's acknowledged spans are only in its WAL: the querier answers
    // without them rather than failing, and has them again once a is back.
    a.kill9();
    let (services, _) = counts(&q);
    assert_eq!(services, vec![("crm-database".to_string(), 200)]);
    let a = bucket.start(
        "collector",
        &bucket.data_dir("a"),
        &["--flush-interval", "1h"],
    );
    eventually("the restarted collector's replayed spans", || {
        counts(&q).0.len() == 2
    });
    assert_eq!(trace_spans(&q, 0), 10);

    // Stopped cleanly, a flushes and leaves its catalog without an address,
    // answering for its rows over Flight until that flush has committed
    // them: the querier sees them all the way through, and after.
    let mut a = a;
    a.terminate();
    while a.is_running() {
        assert_eq!(trace_spans(&q, 0), 10, "while a stops");
    }
    assert!(a.wait().success());
    assert_eq!(trace_spans(&q, 0), 10, "once a has stopped");
    for weft in [b, q] {
        assert!(weft.stop().success());
    }
}

#[test]
fn queriers_see_unflushed_spans_of_collectors_on_a_file_bucket() {
    queriers_see_acknowledged_spans_before_any_flush(&Bucket::file());
}

#[test]
fn queriers_see_unflushed_spans_of_collectors_on_an_s3_bucket() {
    if let Some(bucket) = Bucket::s3() {
        queriers_see_acknowledged_spans_before_any_flush(&bucket);
    }
}

/// `weft token create` in `data_dir`: the token.
fn create_token(data_dir: &Path, tenant: &str, role: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["token", "create", "--data-dir", data_dir.to_str().unwrap()])
        .args(["--tenant", tenant, "--role", role])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[test]
fn a_collector_with_auth_serves_unflushed_rows_to_read_tokens_of_their_tenant_only() {
    let bucket = Bucket::file();
    let dir = bucket.data_dir("c");
    let ingest = create_token(&dir, "default", "ingest");
    let read = create_token(&dir, "default", "read");
    let other_tenant = create_token(&dir, "acme", "read");
    let collector = bucket.start("collector", &dir, &["--auth", "--flush-interval", "1h"]);
    send_spans(
        client()
            .post(collector.http_url("/v1/traces"))
            .bearer_auth(&ingest),
        &spans_request("crm-mobile", 0..30),
    );

    // Without a token, with another tenant's and with an ingest token the
    // collector refuses, and the querier answers from the (empty) segments.
    for token in [None, Some(&other_tenant), Some(&ingest), Some(&read)] {
        let mut args = vec![];
        if let Some(token) = token {
            args.extend(["--collector-token", token.as_str()]);
        }
        let q = bucket.start("query", &bucket.data_dir("q"), &args);
        let rows = q.sql_rows("SELECT count(*) FROM spans");
        let expected = if token == Some(&read) { 30 } else { 0 };
        assert_eq!(rows[0][0], expected, "{token:?}");
        if expected == 0 {
            // The querier's log reaches this test through a pipe, maybe after the answer.
            eventually("the querier to log the refusal", || {
                q.log()
                    .contains("cannot read a live writer's unflushed rows")
            });
        }
        assert!(q.stop().success());
    }
    assert!(collector.stop().success());
}

#[test]
fn pyarrow_reads_a_collectors_unflushed_spans_over_arrow_flight() {
    if !runs_here(
        Command::new("python3").args(["-c", "import pyarrow.flight"]),
        "WEFT_PYARROW_TESTS",
        "pyarrow (pip install pyarrow)",
    ) {
        return;
    }
    let bucket = Bucket::file();
    let collector = bucket.start(
        "collector",
        &bucket.data_dir("c"),
        &["--flush-interval", "1h"],
    );
    collector.post_spans(&spans_request("crm-salesforce", 0..25));
    let script = r#"
import sys
import pyarrow.flight as flight
client = flight.connect(sys.argv[1])
table = client.do_get(flight.Ticket(b'{"table": "spans", "tenant": "default"}')).read_all()
print(table.num_rows, sorted(set(table.column("service_name").to_pylist())))
try:
    client.do_get(flight.Ticket(b'{"table": "metrics", "tenant": "default"}')).read_all()
except Exception as e:
    print(str(e).splitlines()[0])
"#;
    let url = collector.grpc_url().replace("http://", "grpc://");
    let output = Command::new("python3")
        .args(["-c", script, &url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("25 ['crm-salesforce']"));
    let refused = lines.next().unwrap();
    assert!(
        refused.contains("invalid argument") && refused.contains("no table \"metrics\""),
        "{refused}"
    );
    assert!(collector.stop().success());
}

#[test]
fn collectors_and_queriers_share_a_file_bucket() {
    let bucket = Bucket::file();
    let root = bucket.dir.path().join("bucket/weft/spans");
    two_collectors_and_queriers_share_one_bucket(&bucket);
    // One catalog per collector, and exactly their segments beside them:
    // the merged ones are gone from the bucket.
    let names = |sub: &str| -> std::collections::BTreeSet<String> {
        std::fs::read_dir(root.join(sub))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect()
    };
    assert_eq!(names("catalogs").len(), 2, "{:?}", names("catalogs"));
    let mut cataloged = std::collections::BTreeSet::new();
    for catalog in names("catalogs") {
        let catalog: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("catalogs").join(catalog)).unwrap())
                .unwrap();
        for segment in catalog["segments"].as_array().unwrap() {
            cataloged.insert(segment["id"].as_str().unwrap().to_string());
        }
    }
    assert_eq!(
        cataloged.len(),
        3,
        "a's merged and replayed segments, b's one"
    );
    assert_eq!(names("index"), cataloged);
    let parquet: std::collections::BTreeSet<String> =
        cataloged.iter().map(|id| format!("{id}.parquet")).collect();
    assert_eq!(names("segments"), parquet);
}

#[test]
fn collectors_and_queriers_share_an_s3_bucket() {
    if let Some(bucket) = Bucket::s3() {
        two_collectors_and_queriers_share_one_bucket(&bucket);
    }
}

#[test]
fn a_data_directory_with_local_segments_moves_them_to_the_bucket() {
    let bucket = Bucket::file();
    let dir = bucket.data_dir("serve");
    let local = Weft::start(&dir, &[]);
    local.post_spans(&spans_request("crm-mobile", 0..30));
    assert!(local.stop().success());
    assert_eq!(cached_parquet_files(&dir), 1);

    let remote = bucket.start("serve", &dir, &[]);
    assert_eq!(
        per_service(&remote),
        vec![("crm-mobile".to_string(), 30, 30, op_3(0..30))]
    );
    assert!(remote.stop().success());
    assert!(!dir.join("spans/catalog.json").exists());
    let querier = bucket.start("query", &bucket.data_dir("q"), &[]);
    assert_eq!(
        per_service(&querier),
        vec![("crm-mobile".to_string(), 30, 30, op_3(0..30))]
    );
    assert!(querier.stop().success());

    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "sql",
            "--format",
            "csv",
            "--storage",
            &bucket.url,
            "--data-dir",
        ])
        .arg(bucket.data_dir("sql"))
        .arg("SELECT service_name, count(*) AS spans FROM spans GROUP BY 1")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout),
        "service_name,spans\ncrm-mobile,30\n"
    );
}

/// A collector retired for good hands its segments on through its node id:
/// a collector started elsewhere with only that `node-id` file merges them
/// and expires the old ones, as their writer would have.
#[test]
fn a_collector_running_as_a_retired_node_merges_and_expires_its_segments() {
    let bucket = Bucket::file();
    let retired = bucket.data_dir("retired");
    let no_merging = ["--flush-interval", "50ms", "--compaction-interval", "1000h"];
    let old = bucket.start("collector", &retired, &no_merging);
    let recent = std::time::Duration::from_secs(60);
    // Ten small segments, a merge's worth, and one of spans ten days old.
    for i in 0..10u64 {
        old.post_spans(&spans_aged("crm-database", i * 10..i * 10 + 10, recent));
        eventually("the flush", || {
            old.metric("weft_store_segments_written_total{table=\"spans\"}") > i as f64
        });
    }
    let ten_days = std::time::Duration::from_secs(10 * 86_400);
    old.post_spans(&spans_aged("crm-database", 1000..1010, ten_days));
    assert!(old.stop().success());

    let querier = bucket.start("query", &bucket.data_dir("q"), &[]);
    assert_eq!(
        per_service(&querier),
        vec![(
            "crm-database".to_string(),
            110,
            110,
            op_3(0..100) + op_3(1000..1010)
        )]
    );

    let heir = bucket.data_dir("heir");
    std::fs::copy(retired.join("node-id"), heir.join("node-id")).unwrap();
    let merging = [
        "--compaction-interval",
        "100ms",
        "--retention",
        "7d",
        "--query-timeout",
        "1s",
        "--deletion-grace",
        "1s",
    ];
    let new = bucket.start("collector", &heir, &merging);
    eventually(
        "the ten recent segments merged and the old one expired",
        || new.metric("weft_store_segments{table=\"spans\"}") == 1.0,
    );
    eventually("the querier no longer sees the expired spans", || {
        per_service(&querier) == vec![("crm-database".to_string(), 100, 100, op_3(0..100))]
    });
    assert!(new.stop().success());
}

/// Two processes sharing a cache would evict the files the other reads: the
/// second one stops at start, naming the directory.
#[test]
fn a_second_process_on_a_cache_directory_in_use_stops_naming_it() {
    let bucket = Bucket::file();
    let dir = bucket.data_dir("q");
    let querier = bucket.start("query", &dir, &[]);
    let output = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args([
            "query",
            "--storage",
            &bucket.url,
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("is in use by another weft process")
            && stderr.contains(dir.to_str().unwrap()),
        "{stderr}"
    );
    assert_eq!(per_service(&querier), vec![]);
    assert!(querier.stop().success());
}

#[test]
fn an_unusable_storage_url_stops_weft_at_start_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (url, says) in [
        ("ftp://example.com/x", "ftp://example.com/x"),
        ("not a url", "not a url"),
        // Acknowledged data would not survive a restart.
        ("memory://", "memory://"),
    ] {
        let output = Command::new(env!("CARGO_BIN_EXE_weft"))
            .args(["serve", "--storage", url, "--data-dir"])
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success());
        assert!(stderr.contains(says), "{stderr}");
    }
}

/// Distributed SQL over S3: a Ballista scheduler and two executors answer a
/// querier's statements exactly as a querier running them itself, over one
/// collector's flushed segments and another's unflushed rows; the executors
/// fetch the segments from the bucket.
#[test]
fn a_ballista_cluster_over_s3_answers_as_one_querier() {
    let Some(bucket) = Bucket::s3() else {
        return;
    };
    let a = bucket.start(
        "collector",
        &bucket.data_dir("a"),
        &["--flush-interval", "50ms"],
    );
    let b = bucket.start("collector", &bucket.data_dir("b"), &[]);
    for i in 0..4u64 {
        a.post_spans(&spans_request("crm-conductor", i * 25..i * 25 + 25));
        eventually("a's flush", || {
            a.metric("weft_store_segments_written_total{table=\"spans\"}") > i as f64
        });
    }
    b.post_spans(&spans_request("crm-database", 100..160));

    let (_scheduler, line) = bucket.ballista("scheduler", "scheduler", &["--bind", "127.0.0.1:0"]);
    let scheduler = logged_addr(&line, "scheduler").to_string();
    let executor = |name| {
        let args = [
            "--scheduler",
            &scheduler,
            "--bind",
            "127.0.0.1:0",
            "--grpc-port",
            "0",
        ];
        bucket.ballista("executor", name, &args).0
    };
    let _executors = [executor("e1"), executor("e2")];
    let single = bucket.start("query", &bucket.data_dir("single"), &[]);
    let cluster = bucket.start(
        "query",
        &bucket.data_dir("cluster"),
        &["--ballista-scheduler", &scheduler],
    );

    let expected = vec![
        ("crm-conductor".to_string(), 100, 100, op_3(0..100)),
        ("crm-database".to_string(), 60, 60, op_3(100..160)),
    ];
    assert_eq!(per_service(&single), expected);
    assert_eq!(per_service(&cluster), expected);
    let join = "SELECT s.service_name, s.name, count(*) FROM spans s \
                JOIN (SELECT DISTINCT trace_id FROM spans WHERE text_match(name, 'op-3')) t \
                ON s.trace_id = t.trace_id GROUP BY 1, 2 ORDER BY 1, 2";
    assert_eq!(cluster.sql_rows(join), single.sql_rows(join));
    // a's four segments are four partitions of the scan, which Ballista
    // divides among its tasks (the exact counts above: none read twice).
    let explained =
        cluster.sql_rows("EXPLAIN SELECT count(*) FROM spans WHERE service_name = 'crm-conductor'");
    let distributed = explained
        .iter()
        .find(|row| row[0] == "distributed_plan")
        .map(|row| row[1].as_str().unwrap_or_default().to_string())
        .unwrap_or_default();
    assert!(
        distributed.contains("SegmentScanExec: table=spans, partitions=4"),
        "{explained:?}"
    );
    // The executors, not the cluster's querier, read a's four segments.
    let fetched =
        cached_parquet_files(&bucket.data_dir("e1")) + cached_parquet_files(&bucket.data_dir("e2"));
    assert!(fetched >= 4, "the executors fetched {fetched} segments");
    assert_eq!(cached_parquet_files(&bucket.data_dir("cluster")), 0);

    for weft in [a, b, single, cluster] {
        assert!(weft.stop().success());
    }
}

/// A segment id (UUIDv7, as weft names segments) made `ago`.
fn segment_id_made(ago: std::time::Duration) -> String {
    let made = std::time::SystemTime::now() - ago;
    let millis = made
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("{millis:012x}7000{}", "8000000000000abc")
}

/// Files a writer that died would leave in the bucket: a segment uploaded but
/// never committed (or merged away but never deleted), Parquet and index.
fn plant_segment(table_dir: &Path, id: &str, parquet: &[u8], written: std::time::SystemTime) {
    let segment = table_dir.join("segments").join(format!("{id}.parquet"));
    let index = table_dir.join("index").join(id).join("meta.json");
    std::fs::create_dir_all(index.parent().unwrap()).unwrap();
    write_dated(&segment, parquet, written);
    write_dated(&index, b"{}", written);
}

/// Writes `contents` to `path` as if at `written`.
fn write_dated(path: &Path, contents: &[u8], written: std::time::SystemTime) {
    std::fs::write(path, contents).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(written).unwrap();
}

/// Segments no catalog names, left by collectors that died mid-flush or
/// mid-merge, are deleted once they have been unnamed for the deletion grace,
/// and only if they are old: an upload whose commit may still be coming, a
/// named segment and files weft did not write stay.
#[test]
fn segments_no_catalog_names_are_deleted_once_old_and_unnamed_for_the_grace() {
    let bucket = Bucket::file();
    let table_dir = bucket.dir.path().join("bucket/weft/spans");
    let collector = bucket.start("collector", &bucket.data_dir("c"), &MERGING_COLLECTOR);
    collector.post_spans(&spans_request("crm-mobile", 0..20));
    eventually("the first segment", || {
        collector.metric("weft_store_segments_written_total{table=\"spans\"}") >= 1.0
    });
    let named: Vec<std::path::PathBuf> = std::fs::read_dir(table_dir.join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let parquet = std::fs::read(&named[0]).unwrap();

    let hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    let two_hours = std::time::Duration::from_secs(2 * 3600);
    let orphan = segment_id_made(two_hours);
    plant_segment(&table_dir, &orphan, &parquet, hours_ago);
    // Made a minute ago: its writer may still be about to commit it.
    let recent = segment_id_made(std::time::Duration::from_secs(60));
    plant_segment(&table_dir, &recent, &parquet, hours_ago);
    // An old id uploaded just now, as when a data directory moves into the bucket.
    let just_uploaded = segment_id_made(two_hours + std::time::Duration::from_secs(1));
    plant_segment(
        &table_dir,
        &just_uploaded,
        &parquet,
        std::time::SystemTime::now(),
    );
    let foreign = table_dir.join("segments/notes.parquet");
    write_dated(&foreign, b"not weft's", hours_ago);

    eventually("the orphan's deletion", || {
        collector.metric("weft_store_orphans_deleted_total{table=\"spans\"}") >= 1.0
    });
    let exists = |id: &str| table_dir.join(format!("segments/{id}.parquet")).exists();
    assert!(!exists(&orphan));
    assert!(!table_dir.join("index").join(&orphan).exists());
    for kept in [&recent, &just_uploaded] {
        assert!(exists(kept), "{kept} was deleted");
        assert!(table_dir
            .join("index")
            .join(kept)
            .join("meta.json")
            .exists());
    }
    assert!(foreign.exists());
    for path in &named {
        assert!(path.exists(), "{} was deleted", path.display());
    }
    assert_eq!(
        collector.metric("weft_store_orphans_deleted_total{table=\"spans\"}"),
        1.0
    );
    let querier = bucket.start("query", &bucket.data_dir("q"), &[]);
    assert_eq!(querier.sql_rows("SELECT count(*) FROM spans")[0][0], 20);
    assert!(querier.stop().success());
    assert!(collector.stop().success());
}

/// A collector that stops right after a merge deletes the merge's inputs
/// from its own cache but leaves them in the bucket for the deletion grace
/// (for the orphan sweep to take later): queriers elsewhere may still be
/// reading them.
#[test]
fn a_stopping_collector_leaves_a_merges_inputs_in_the_bucket_for_queriers_elsewhere() {
    let bucket = Bucket::file();
    let data_dir = bucket.data_dir("c");
    let collector = bucket.start(
        "collector",
        &data_dir,
        &["--flush-interval", "50ms", "--compaction-interval", "100ms"],
    );
    // Ten small segments, a merge's worth.
    for i in 0..10u64 {
        collector.post_spans(&spans_request("crm-database", i * 10..i * 10 + 10));
        eventually("the flush", || {
            collector.metric("weft_store_segments_written_total{table=\"spans\"}") > i as f64
        });
    }
    eventually("the merge", || {
        collector.metric("weft_store_compactions_total{table=\"spans\"}") >= 1.0
    });
    assert!(collector.stop().success());
    let in_bucket = std::fs::read_dir(bucket.dir.path().join("bucket/weft/spans/segments"))
        .unwrap()
        .count();
    assert_eq!(in_bucket, 11, "the ten inputs and the merged segment");
    assert_eq!(cached_parquet_files(&data_dir), 1);
    let querier = bucket.start("query", &bucket.data_dir("q"), &[]);
    assert_eq!(querier.sql_rows("SELECT count(*) FROM spans")[0][0], 100);
    assert!(querier.stop().success());
}
