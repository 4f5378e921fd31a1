//! Runs the real `weft` binary for end-to-end tests and reads back what it
//! stored, straight from the Parquet files.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

/// A child process with its stderr collected (and echoed, prefixed), killed
/// when dropped.
pub struct Process {
    child: Child,
    name: &'static str,
    log: Arc<Mutex<String>>,
}

impl Process {
    /// Starts `command` and waits for its "… listening …" log line, which it returns.
    pub fn spawn(command: Command, name: &'static str) -> (Self, String) {
        Self::spawn_until(command, name, "listening")
    }

    /// Starts `command` and waits for the first log line containing `ready`, which it returns.
    pub fn spawn_until(
        mut command: Command,
        name: &'static str,
        ready: &'static str,
    ) -> (Self, String) {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        let log = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    eprintln!("[{name}] {line}");
                    if line.contains(ready) {
                        let _ = ready_tx.send(line.clone());
                    }
                    let mut log = log.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let line = ready_rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("{name} did not start; its log:\n{}", log.lock().unwrap()));
        (Self { child, name, log }, line)
    }

    /// Everything the process has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("can poll the child").is_none()
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        self.wait()
    }

    /// SIGINT (Ctrl-C), then waits for the exit.
    pub fn interrupt(&mut self) -> ExitStatus {
        self.signal(libc::SIGINT);
        self.wait()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        self.wait();
    }

    pub fn signal(&mut self, signal: i32) {
        // SAFETY: kill(2) on the pid of a child this test owns and has not reaped.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill({signal}) failed");
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit; its log:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The address a "listening" log line gives for `key` (`key=127.0.0.1:4317`);
/// a listener the process does not run is logged as `-` (port 0 here).
pub fn logged_addr(line: &str, key: &str) -> SocketAddr {
    line.split_whitespace()
        .find_map(|field| field.strip_prefix(&format!("{key}=")))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)))
}

/// A running weft (`serve` unless started as another role) on ephemeral
/// ports, with its stderr collected.
pub struct Weft {
    process: Process,
    pub data_dir: PathBuf,
    pub otlp_grpc: SocketAddr,
    pub otlp_http: SocketAddr,
    pub http: SocketAddr,
}

impl Weft {
    /// Starts `weft serve` on `data_dir` with flushes only at shutdown, unless `args` say otherwise.
    pub fn start(data_dir: &Path, args: &[&str]) -> Self {
        Self::start_role("serve", data_dir, args)
    }

    /// Starts `weft <role>` (`serve`, `collector` or `query`) like [`Weft::start`].
    pub fn start_role(role: &str, data_dir: &Path, args: &[&str]) -> Self {
        Self::start_with_env(role, data_dir, args, &[])
    }

    /// [`Weft::start_role`] with extra environment variables.
    pub fn start_with_env(
        role: &str,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
        command.envs(env.iter().copied());
        command
            .arg(role)
            .arg("--data-dir")
            .arg(data_dir)
            .args([
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
            ])
            .args(["--http-addr", "127.0.0.1:0"])
            .args(if args.contains(&"--flush-interval") {
                &[][..]
            } else {
                &["--flush-interval", "1h"][..]
            })
            .args(args)
            .env("WEFT_LOG", "info");
        let (process, line) = Process::spawn(command, "weft");
        Self {
            otlp_grpc: logged_addr(&line, "otlp_grpc"),
            otlp_http: logged_addr(&line, "otlp_http"),
            http: logged_addr(&line, "http"),
            process,
            data_dir: data_dir.to_path_buf(),
        }
    }

    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.otlp_grpc)
    }

    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.otlp_http)
    }

    /// A sample's value on `/metrics`, e.g. `weft_store_compactions_total{table="spans"}`.
    pub fn metric(&self, sample: &str) -> f64 {
        let text = client()
            .get(self.http_url("/metrics"))
            .send()
            .and_then(|r| r.text())
            .expect("/metrics answers");
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {sample} on /metrics:\n{text}"))
            .parse()
            .expect("a number")
    }

    /// Sends a trace export request over OTLP/HTTP protobuf; it must be accepted whole.
    pub fn post_spans(
        &self,
        request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    ) {
        send_spans(client().post(self.http_url("/v1/traces")), request);
    }

    /// A URL on the query API port.
    pub fn api_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// `GET` on the query API: the status and the JSON body.
    pub fn get_json(&self, path: &str) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::get(self.api_url(path)).expect("query API answers");
        let status = response.status().as_u16();
        let text = response.text().expect("body");
        let json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("GET {path}: {e}: not JSON: {text}"));
        (status, json)
    }

    /// `POST /api/v1/sql`: the status and the JSON body.
    pub fn sql(&self, sql: &str) -> (u16, serde_json::Value) {
        let response = reqwest::blocking::Client::new()
            .post(self.api_url("/api/v1/sql"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .expect("query API answers");
        let status = response.status().as_u16();
        (status, response.json().expect("JSON body"))
    }

    /// The rows of a query that must succeed.
    pub fn sql_rows(&self, sql: &str) -> Vec<Vec<serde_json::Value>> {
        let (status, body) = self.sql(sql);
        assert_eq!(status, 200, "{sql}: {body}");
        serde_json::from_value(body["rows"].clone()).expect("rows")
    }

    /// Posts an OTLP/JSON file from `tests/fixtures` to `/v1/traces` or `/v1/logs`.
    pub fn post_fixture(&self, path: &str, fixture: &str) {
        let body = std::fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures")
                .join(fixture),
        )
        .expect("fixture exists");
        let response = reqwest::blocking::Client::new()
            .post(self.http_url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .expect("OTLP/HTTP answers");
        assert_eq!(
            response.status().as_u16(),
            200,
            "{fixture}: {:?}",
            response.text()
        );
    }

    /// Everything weft has logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.process.is_running()
    }

    /// CPU time (user + system) the process has used so far, from /proc.
    pub fn cpu_time(&self) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.process.id()))
            .expect("weft's /proc stat");
        // Fields after the command name, which is in parentheses and may hold spaces.
        let fields: Vec<&str> = stat[stat.rfind(')').expect("stat format") + 2..]
            .split_whitespace()
            .collect();
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // SAFETY: sysconf has no preconditions.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
        Duration::from_millis(ticks * 1000 / per_second)
    }

    /// SIGTERM, then waits for a clean exit.
    pub fn stop(self) -> ExitStatus {
        self.process.stop()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(self) {
        self.process.kill9()
    }

    /// SIGTERM, without waiting: the shutdown goes on while the test looks.
    pub fn terminate(&mut self) {
        self.process.signal(libc::SIGTERM);
    }

    /// Waits for the exit that [`Weft::terminate`] started.
    pub fn wait(mut self) -> ExitStatus {
        self.process.wait()
    }
}

/// Every row of a table's segments, read with the parquet crate from the
/// files its catalog names (a merge's inputs stay on disk for a while after
/// the catalog replaced them).
pub fn read_table(data_dir: &Path, table: &str) -> RecordBatch {
    let segments = data_dir.join(table).join("segments");
    let mut batches = Vec::new();
    let mut schema = None;
    for path in catalog_segments(data_dir, table) {
        let builder =
            ParquetRecordBatchReaderBuilder::try_new(std::fs::File::open(&path).unwrap()).unwrap();
        schema = Some(builder.schema().clone());
        batches.extend(builder.build().unwrap().map(|b| b.unwrap()));
    }
    let schema = schema.unwrap_or_else(|| panic!("no segments in {}", segments.display()));
    arrow::compute::concat_batches(&schema, &batches).unwrap()
}

/// The Parquet files the table's catalog names.
pub fn catalog_segments(data_dir: &Path, table: &str) -> Vec<PathBuf> {
    let table_dir = data_dir.join(table);
    let catalog: serde_json::Value = std::fs::read(table_dir.join("catalog.json"))
        .map(|bytes| serde_json::from_slice(&bytes).expect("catalog is JSON"))
        .unwrap_or_else(|e| panic!("no catalog in {}: {e}", table_dir.display()));
    catalog["segments"]
        .as_array()
        .expect("catalog lists segments")
        .iter()
        .map(|segment| {
            let id = segment["id"].as_str().expect("segment id");
            table_dir.join("segments").join(format!("{id}.parquet"))
        })
        .collect()
}

/// A text column's values, NULL as `None`.
pub fn texts(batch: &RecordBatch, column: &str) -> Vec<Option<String>> {
    let array = batch
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column}"));
    let array = array.as_string::<i32>();
    (0..array.len())
        .map(|i| array.is_valid(i).then(|| array.value(i).to_string()))
        .collect()
}

/// The row whose `column` equals `value`; panics unless there is exactly one.
pub fn row_where(batch: &RecordBatch, column: &str, value: &str) -> usize {
    let rows: Vec<usize> = texts(batch, column)
        .iter()
        .enumerate()
        .filter(|(_, v)| v.as_deref() == Some(value))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "expected one row with {column} = {value}, found {rows:?}"
    );
    rows[0]
}

/// A text cell.
pub fn text(batch: &RecordBatch, column: &str, row: usize) -> Option<String> {
    texts(batch, column)[row].clone()
}

/// An int64 cell.
pub fn int64(batch: &RecordBatch, column: &str, row: usize) -> Option<i64> {
    let array = batch.column_by_name(column).unwrap();
    let array = array.as_primitive::<arrow::datatypes::Int64Type>();
    array.is_valid(row).then(|| array.value(row))
}

/// A timestamp cell in ns.
pub fn timestamp(batch: &RecordBatch, column: &str, row: usize) -> i64 {
    batch
        .column_by_name(column)
        .unwrap()
        .as_primitive::<arrow::datatypes::TimestampNanosecondType>()
        .value(row)
}

/// A `map<text, text>` cell as sorted (key, value) pairs.
pub fn map(batch: &RecordBatch, column: &str, row: usize) -> Vec<(String, Option<String>)> {
    let array = batch.column_by_name(column).unwrap().as_map();
    let entries = array.value(row);
    let keys = entries.column(0).as_string::<i32>();
    let values = entries.column(1).as_string::<i32>();
    let mut pairs: Vec<_> = (0..keys.len())
        .map(|i| {
            (
                keys.value(i).to_string(),
                values.is_valid(i).then(|| values.value(i).to_string()),
            )
        })
        .collect();
    pairs.sort();
    pairs
}

/// One value of a `map<text, text>` cell.
pub fn map_get(batch: &RecordBatch, column: &str, row: usize, key: &str) -> Option<String> {
    map(batch, column, row)
        .into_iter()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v)
}

/// A list<struct> cell as the struct rows it holds.
pub fn list(batch: &RecordBatch, column: &str, row: usize) -> arrow::array::StructArray {
    batch
        .column_by_name(column)
        .unwrap()
        .as_list::<i32>()
        .value(row)
        .as_struct()
        .clone()
}

/// Marks test span ids so that id 0 still makes a valid (non-zero) span id.
const SPAN_ID_MARK: u64 = 1 << 63;

/// A trace export request with one span per id: span id `id` (big-endian,
/// top bit set), trace id derived from it, all from `service`.
pub fn spans_request(
    service: &str,
    ids: impl IntoIterator<Item = u64>,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let attribute = |key: &str, value: &str| KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    };
    let spans = ids
        .into_iter()
        .map(|id| Span {
            trace_id: [(id / 10).to_be_bytes(), 0xfeed_u64.to_be_bytes()].concat(),
            span_id: (id | SPAN_ID_MARK).to_be_bytes().to_vec(),
            name: format!("op-{}", id % 7),
            kind: 2,
            start_time_unix_nano: 1_700_000_000_000_000_000 + id * 1000,
            end_time_unix_nano: 1_700_000_000_000_000_000 + id * 1000 + 500,
            attributes: vec![attribute("http.route", "/api/accounts/{id}")],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attribute("service.name", service)],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// `weft ballista <role> --storage <storage>` on `data_dir` with `args` and
/// `env`, logging at info, and its "listening" line.
pub fn start_ballista(
    role: &str,
    name: &'static str,
    storage: &str,
    data_dir: &Path,
    args: &[&str],
    env: &[(&str, &str)],
) -> (Process, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weft"));
    command
        .args(["ballista", role, "--storage", storage, "--data-dir"])
        .arg(data_dir)
        .args(args)
        .envs(env.iter().copied())
        .env("WEFT_LOG", "info");
    Process::spawn(command, name)
}

/// Spans `ids` of `service` as [`spans_request`] makes them, but started `age` ago.
pub fn spans_aged(
    service: &str,
    ids: std::ops::Range<u64>,
    age: Duration,
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    let mut request = spans_request(service, ids);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let start = (now - age).as_nanos() as u64;
    for span in &mut request.resource_spans[0].scope_spans[0].spans {
        span.start_time_unix_nano = start;
        span.end_time_unix_nano = start + 1_000_000;
    }
    request
}

/// The span ids stored in the `spans` table, decoded back to the numbers
/// [`spans_request`] made them from.
pub fn stored_span_ids(data_dir: &Path) -> Vec<u64> {
    let spans = read_table(data_dir, "spans");
    texts(&spans, "span_id")
        .into_iter()
        .map(|id| {
            u64::from_str_radix(&id.expect("span_id is never NULL"), 16).unwrap() & !SPAN_ID_MARK
        })
        .collect()
}

/// A blocking HTTP client with a 10 s timeout.
/// Sends `request` as OTLP/HTTP protobuf with `post` (a POST to
/// `/v1/traces`, with whatever credentials or TLS it carries) and checks
/// that it was acknowledged.
pub fn send_spans(
    post: reqwest::blocking::RequestBuilder,
    request: &opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
) {
    let response = post
        .header("content-type", "application/x-protobuf")
        .body(prost::Message::encode_to_vec(request))
        .send()
        .expect("OTLP/HTTP answers");
    assert_eq!(response.status().as_u16(), 200, "{:?}", response.text());
}

pub fn client() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// The status and JSON body of a response (`null` when it has none).
pub fn get_json(response: reqwest::blocking::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    (status, response.json().unwrap_or(serde_json::Value::Null))
}

/// Polls `check` until it holds, or fails naming `what` after 20 s.
pub fn eventually(what: &str, check: impl FnMut() -> bool) {
    eventually_within(what, Duration::from_secs(20), check);
}

/// Polls `check` until it holds, or fails naming `what` after `limit`.
pub fn eventually_within(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
