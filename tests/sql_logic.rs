//! The SQL contract as sqllogictest files (`tests/slt/*.slt`), run through
//! `POST /api/v1/sql` of a real `weft serve` holding the CRM fixture: its
//! traces flushed to a Parquet segment, its logs still in memory; then the
//! same files through a querier whose statements run on a Ballista cluster.
//!
//! `WEFT_SLT_OVERRIDE=1 cargo test --test sql_logic` rewrites the expected
//! results from what weft answers — review the diff before committing it.

mod support;

use std::path::Path;

use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};

use support::{logged_addr, start_ballista, Weft};

struct WeftSql<'a> {
    weft: &'a Weft,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct SqlError(String);

/// A value as the `.slt` files write it.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "NULL".to_string(),
        Value::String(s) if s.is_empty() => "(empty)".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl sqllogictest::DB for WeftSql<'_> {
    type Error = SqlError;
    type ColumnType = DefaultColumnType;

    fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SqlError> {
        let (status, body) = self.weft.sql(sql);
        if status != 200 {
            return Err(SqlError(format!(
                "{status}: {}",
                body["error"].as_str().unwrap_or_default()
            )));
        }
        let columns = body["columns"].as_array().map_or(0, Vec::len);
        let rows = body["rows"]
            .as_array()
            .expect("rows")
            .iter()
            .map(|row| row.as_array().expect("row").iter().map(cell).collect())
            .collect();
        Ok(DBOutput::Rows {
            types: vec![DefaultColumnType::Any; columns],
            rows,
        })
    }

    fn engine_name(&self) -> &str {
        "weft"
    }
}

/// Runs every `.slt` file against `weft`'s `POST /api/v1/sql` (or rewrites
/// their expected results with `WEFT_SLT_OVERRIDE=1`).
fn run_slt_files(weft: &Weft) {
    let mut files: Vec<_> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slt"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "slt"))
            .collect();
    files.sort();
    assert!(!files.is_empty());
    let override_results = std::env::var_os("WEFT_SLT_OVERRIDE").is_some();
    for file in files {
        let mut runner = sqllogictest::Runner::new(move || async move { Ok(WeftSql { weft }) });
        if override_results {
            futures::executor::block_on(runner.update_test_file(
                &file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            ))
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        } else if let Err(e) = runner.run_file(&file) {
            panic!("{}", e.display(true));
        }
    }
}

#[test]
fn sql_behaves_as_the_slt_files_say() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    weft.post_fixture("/v1/traces", "crm_traces.json");
    assert!(weft.stop().success());
    let weft = Weft::start(dir.path(), &[]);
    weft.post_fixture("/v1/logs", "crm_logs.json");
    run_slt_files(&weft);
    assert!(weft.stop().success());
}

/// The same files, with the same expected answers, through a querier that
/// sends every statement to a Ballista cluster — a `weft ballista
/// scheduler` and a `weft ballista executor` on loopback — over an object
/// store. As above, the traces are in a flushed segment and the logs only in
/// the running collector's memory, which the scheduler reads over Flight.
#[test]
fn sql_on_a_ballista_cluster_answers_as_on_one_node() {
    if std::env::var_os("WEFT_SLT_OVERRIDE").is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let storage = format!("file://{}/bucket/weft", dir.path().display());
    let with_storage = |args: &[&str]| {
        let mut all = vec!["--storage", storage.as_str()];
        all.extend_from_slice(args);
        all.iter().map(|a| a.to_string()).collect::<Vec<_>>()
    };
    let collector_dir = dir.path().join("collector");
    let args = with_storage(&[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let collector = Weft::start_role("collector", &collector_dir, &args);
    collector.post_fixture("/v1/traces", "crm_traces.json");
    assert!(collector.stop().success());
    let collector = Weft::start_role("collector", &collector_dir, &args);
    collector.post_fixture("/v1/logs", "crm_logs.json");

    let ballista = |role: &str, name: &'static str, data_dir: &str, extra: &[&str]| {
        start_ballista(role, name, &storage, &dir.path().join(data_dir), extra, &[])
    };
    let (scheduler, line) = ballista(
        "scheduler",
        "scheduler",
        "scheduler",
        &["--bind", "127.0.0.1:0"],
    );
    let scheduler_addr = logged_addr(&line, "scheduler").to_string();
    let (executor, _) = ballista(
        "executor",
        "executor",
        "executor",
        &[
            "--scheduler",
            &scheduler_addr,
            "--bind",
            "127.0.0.1:0",
            "--grpc-port",
            "0",
        ],
    );

    let querier_args = with_storage(&["--ballista-scheduler", &scheduler_addr]);
    let querier_args: Vec<&str> = querier_args.iter().map(String::as_str).collect();
    let querier = Weft::start_role("query", &dir.path().join("querier"), &querier_args);
    run_slt_files(&querier);

    // The statements ran on the cluster: its executor ran the tasks and
    // fetched the trace segment into its own cache to read it.
    let segments = std::fs::read_dir(dir.path().join("executor/spans/segments"))
        .map(|files| files.count())
        .unwrap_or(0);
    assert!(
        segments > 0 && executor.log().contains("Finished task"),
        "the executor ran no task; its log:\n{}",
        executor.log()
    );

    // Without its scheduler, the querier says so for SQL and still answers
    // what it answers itself.
    drop((scheduler, executor));
    let (status, body) = querier.sql("SELECT count(*) FROM spans");
    let error = body["error"].as_str().unwrap_or_default();
    assert_eq!(status, 503, "{body}");
    assert!(error.contains(&scheduler_addr), "{error}");
    let (status, trace) = querier.get_json("/api/v1/traces/a1000000000000000000000000000001");
    assert_eq!(status, 200, "{trace}");
    assert!(querier.stop().success());
    assert!(collector.stop().success());
}
