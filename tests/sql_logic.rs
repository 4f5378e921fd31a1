//! The SQL contract as sqllogictest files (`tests/slt/*.slt`), run through
//! `POST /api/v1/sql` of a real `weft serve` holding the CRM fixture: its
//! traces flushed to a Parquet segment, its logs still in memory.
//!
//! `WEFT_SLT_OVERRIDE=1 cargo test --test sql_logic` rewrites the expected
//! results from what weft answers — review the diff before committing it.

mod support;

use std::path::Path;

use serde_json::Value;
use sqllogictest::{DBOutput, DefaultColumnType};
use support::Weft;

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

#[test]
fn sql_behaves_as_the_slt_files_say() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    weft.post_fixture("/v1/traces", "crm_traces.json");
    assert!(weft.stop().success());
    let weft = Weft::start(dir.path(), &[]);
    weft.post_fixture("/v1/logs", "crm_logs.json");

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
        let weft = &weft;
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
    assert!(weft.stop().success());
}
