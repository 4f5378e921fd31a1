//! The query benchmark.
//!
//! 1. Load (unless the data directory is already loaded): start `weft serve`,
//!    send CRM traces and logs (`workload.rs`) over OTLP/gRPC until the target
//!    count is acknowledged, stop weft so everything is in segments.
//! 2. Measure over `weft query` on that directory: trace by id (`GET
//!    /api/v1/traces/{id}`) and full-text log search (`GET /api/v1/logs?q=`)
//!    latency percentiles, and each query of `queries.json` through
//!    `POST /api/v1/sql`.
//! 3. Run the same suite in DuckDB and chDB over the very same Parquet files
//!    (`compare.py`), in the same run, and print the ratios.
//!
//! With `--compact`, the load writes small segments (`--flush-bytes`) and
//! does not merge them; step 2 runs over those, then a `weft serve` with
//! compaction on merges them, and step 2 runs again: before and after, one run.
//!
//! With `--storage URL`, a copy of the loaded directory moves its segments to
//! that object store (`weft serve --storage`), and step 2 runs again over a
//! `weft query --storage` with a warm cache, after timing first queries on
//! cold ones: local disk, cold and warm cache, one run. Adding `--ballista`
//! then runs the SQL suite once more through a `weft query
//! --ballista-scheduler` over a `weft ballista` scheduler and executor of the
//! same object store, beside the querier that runs it alone.

mod workload;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_client::LogsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Parser)]
struct Args {
    /// Where the loaded data lives; reused by later runs.
    #[arg(long, default_value = "target/bench-query-data")]
    data_dir: PathBuf,
    /// Spans to load (about as many log records come with them).
    #[arg(long, default_value_t = 10_000_000)]
    spans: u64,
    /// The weft binary [default: `weft` beside this benchmark's binary]
    #[arg(long)]
    weft: Option<PathBuf>,
    /// Trace-by-id lookups to time.
    #[arg(long, default_value_t = 300)]
    lookups: usize,
    /// Runs of each SQL query (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Skip DuckDB and chDB.
    #[arg(long)]
    weft_only: bool,
    /// `--flush-bytes` of the loading `weft serve` (smaller: more, smaller segments).
    #[arg(long)]
    flush_bytes: Option<u64>,
    /// Measure over the loaded segments, merge them with compaction, measure
    /// again, and compare the two (instead of DuckDB and chDB). Use a fresh
    /// `--data-dir`: a loaded one may be merged already.
    #[arg(long)]
    compact: bool,
    /// Compare local disk with this object store (`s3://…` with the `AWS_*`
    /// variables set, `file:///…`), cold and warm cache, instead of DuckDB and chDB.
    #[arg(long, value_name = "URL")]
    storage: Option<String>,
    /// With `--storage`: also run the SQL suite on a Ballista scheduler and
    /// executor over the object store, against the querier alone.
    #[arg(long, requires = "storage")]
    ballista: bool,
}

/// What one pass of step 2 measured.
struct Measurement {
    /// Spans and log records seen.
    rows: (Value, Value),
    segments: (u64, u64),
    trace_ms: Vec<f64>,
    search_ms: Vec<f64>,
    /// Median of each query of the suite, in its order.
    suite_ms: Vec<f64>,
    /// Each query's rows, sorted.
    suite_rows: Vec<Vec<String>>,
}

/// One query of the SQL suite, in each engine's dialect.
#[derive(Debug, Deserialize)]
struct SuiteQuery {
    name: String,
    weft: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let weft = match &args.weft {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("weft"),
    };
    std::fs::create_dir_all(&args.data_dir)?;
    let samples_path = args.data_dir.join("bench-trace-ids.json");
    if !samples_path.exists() {
        let mut serve_args = Vec::new();
        if let Some(bytes) = args.flush_bytes {
            serve_args.extend(["--flush-bytes".to_string(), bytes.to_string()]);
        }
        if args.compact {
            serve_args.extend(["--compaction-interval".to_string(), "1000h".to_string()]);
        }
        let samples = load(&weft, &args.data_dir, args.spans, &serve_args)?;
        std::fs::write(&samples_path, serde_json::to_vec(&samples)?)?;
    }
    let samples: Vec<String> = serde_json::from_slice(&std::fs::read(&samples_path)?)?;

    let suite_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("queries.json");
    let suite: Vec<SuiteQuery> = serde_json::from_slice(&std::fs::read(&suite_path)?)?;
    let local = ["query", "--data-dir"];
    let measured = measure(&weft, &args, &samples, &suite, &local, &args.data_dir)?;
    if let Some(url) = &args.storage {
        return compare_object_storage(&weft, &args, url, &samples, &suite, &measured);
    }
    if args.compact {
        let merged = compact(&weft, &args.data_dir)?;
        let after = measure(&weft, &args, &samples, &suite, &local, &args.data_dir)?;
        if after.rows != measured.rows {
            bail!(
                "compaction changed the row counts: {:?} → {:?}",
                measured.rows,
                after.rows
            );
        }
        print_compaction(&measured, &merged, &after, &suite);
        return Ok(());
    }
    print_lookups(&measured);
    let weft_ms = measured.suite_ms;

    let others: Value = if args.weft_only {
        json!({})
    } else {
        let output = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("compare.py"))
            .arg(&args.data_dir)
            .arg(&suite_path)
            .arg(args.runs.to_string())
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run python3 compare.py")?;
        if !output.status.success() {
            bail!("compare.py failed (pip install duckdb chdb)");
        }
        serde_json::from_slice(&output.stdout)?
    };
    println!(
        "\n## SQL suite (median of {} runs, ms; weft through POST /api/v1/sql)\n",
        args.runs
    );
    println!(
        "| query | weft | DuckDB | chDB | weft / DuckDB | weft / chDB |\n|---|---|---|---|---|---|"
    );
    for (query, weft) in suite.iter().zip(&weft_ms) {
        let other = |engine: &str| others[&query.name][engine].as_f64();
        let cell = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.1}"));
        let ratio = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{:.2}", weft / v));
        println!(
            "| {} | {weft:.1} | {} | {} | {} | {} |",
            query.name,
            cell(other("duckdb")),
            cell(other("chdb")),
            ratio(other("duckdb")),
            ratio(other("chdb")),
        );
    }
    Ok(())
}

/// Step 2: trace by id, log search and the SQL suite over `weft <role> <data_dir>`.
fn measure(
    weft: &Path,
    args: &Args,
    samples: &[String],
    suite: &[SuiteQuery],
    role: &[&str],
    data_dir: &Path,
) -> anyhow::Result<Measurement> {
    let server = Server::start(weft, role, data_dir, "weft query listening")?;
    let base = format!("http://{}", server.http);
    let client = reqwest::blocking::Client::new();
    let counts = sql(
        &client,
        &base,
        "SELECT (SELECT count(*) FROM spans) AS spans, (SELECT count(*) FROM logs) AS logs",
    )?;

    println!(
        "# data: {} spans, {} log records",
        counts[0][0], counts[0][1]
    );

    let mut rng = fastrand::Rng::with_seed(7);
    let trace_latencies = time_each(args.lookups, 20, |_| {
        let id = &samples[rng.usize(0..samples.len())];
        let response = client.get(format!("{base}/api/v1/traces/{id}")).send()?;
        if !response.status().is_success() {
            bail!("trace {id}: {}", response.status());
        }
        let body: Value = response.json()?;
        if body["spans"].as_array().map_or(0, Vec::len) == 0 {
            bail!("trace {id} has no spans");
        }
        Ok(())
    })?;
    let searches = [
        "timeout AND database",
        "slow AND salesforce",
        "\"customer acc-4242\"",
        "orchestrate AND opportunities AND slow",
        "handled AND contacts AND acc-777",
        "error OR timeout",
    ];
    let search_latencies = time_each(searches.len() * 20, searches.len(), |i| {
        let q = searches[i % searches.len()];
        let response = client
            .get(format!("{base}/api/v1/logs"))
            .query(&[("q", q), ("limit", "20")])
            .send()?;
        if !response.status().is_success() {
            bail!("search {q}: {}", response.text()?);
        }
        Ok(())
    })?;
    let (weft_ms, suite_rows) = time_suite(&client, &base, args, suite)?;
    drop(server);
    Ok(Measurement {
        rows: (counts[0][0].clone(), counts[0][1].clone()),
        segments: (
            segments(&args.data_dir, "spans")?,
            segments(&args.data_dir, "logs")?,
        ),
        trace_ms: trace_latencies,
        search_ms: search_latencies,
        suite_ms: weft_ms,
        suite_rows,
    })
}

/// The median time of each query of the suite over `args.runs` runs (after
/// one untimed), and each query's rows, sorted (not every query orders them).
fn time_suite(
    client: &reqwest::blocking::Client,
    base: &str,
    args: &Args,
    suite: &[SuiteQuery],
) -> anyhow::Result<(Vec<f64>, Vec<Vec<String>>)> {
    let mut medians = Vec::new();
    let mut answers = Vec::new();
    for query in suite {
        let mut rows = Vec::new();
        let times = time_each(args.runs, 1, |_| {
            rows = sql(client, base, &query.weft)?;
            Ok(())
        })
        .with_context(|| format!("query {}", query.name))?;
        medians.push(percentile(&times, 0.5));
        let mut rows: Vec<String> = rows.iter().map(|row| format!("{row:?}")).collect();
        rows.sort();
        answers.push(rows);
    }
    Ok((medians, answers))
}

/// Segments in a table's catalog (0 when the catalog is in an object store).
fn segments(data_dir: &Path, table: &str) -> anyhow::Result<u64> {
    let path = data_dir.join(table).join("catalog.json");
    if !path.exists() {
        return Ok(0);
    }
    let catalog: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    Ok(catalog["segments"].as_array().map_or(0, Vec::len) as u64)
}

/// Moves a copy of the loaded segments to the object store at `url`, times
/// the first trace lookup, log search and SQL query of queriers with empty
/// caches, then measures step 2 over a querier of the object store, and
/// prints it all beside `local`.
fn compare_object_storage(
    weft: &Path,
    args: &Args,
    url: &str,
    samples: &[String],
    suite: &[SuiteQuery],
    local: &Measurement,
) -> anyhow::Result<()> {
    let scratch = |name: &str| -> anyhow::Result<PathBuf> {
        let dir = args.data_dir.with_extension(name);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        Ok(dir)
    };
    let copy = scratch("upload")?;
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&args.data_dir)
        .arg(&copy)
        .status()?;
    if !copied.success() {
        bail!(
            "cannot copy {} to {}",
            args.data_dir.display(),
            copy.display()
        );
    }
    let started = Instant::now();
    let server = Server::start(
        weft,
        &["serve", "--storage", url, "--data-dir"],
        &copy,
        "weft listening",
    )?;
    let upload = started.elapsed();
    server.stop()?;
    std::fs::remove_dir_all(&copy)?;
    eprintln!("# uploaded in {:.1} s", upload.as_secs_f64());

    let role = ["query", "--storage", url, "--data-dir"];
    let client = reqwest::blocking::Client::new();
    // Each first request on its own querier with an empty cache.
    let first = |request: &dyn Fn(&str) -> anyhow::Result<()>| -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::new();
        for _ in 0..3 {
            let cache = scratch("cache")?;
            let server = Server::start(weft, &role, &cache, "weft query listening")?;
            let base = format!("http://{}", server.http);
            let started = Instant::now();
            request(&base)?;
            times.push(started.elapsed().as_secs_f64() * 1e3);
            drop(server);
        }
        Ok(times)
    };
    let trace = first(&|base| {
        let response = client
            .get(format!("{base}/api/v1/traces/{}", samples[0]))
            .send()?;
        if !response.status().is_success() {
            bail!("trace lookup: {}", response.status());
        }
        Ok(())
    })?;
    let search = first(&|base| {
        let response = client
            .get(format!("{base}/api/v1/logs"))
            .query(&[("q", "timeout AND database"), ("limit", "20")])
            .send()?;
        if !response.status().is_success() {
            bail!("log search: {}", response.status());
        }
        Ok(())
    })?;
    let sql_first = first(&|base| sql(&client, base, &suite[0].weft).map(drop))?;
    let warm = measure(weft, args, samples, suite, &role, &scratch("cache")?)?;
    if warm.rows != local.rows {
        bail!(
            "the object store's rows differ: {:?} → {:?}",
            local.rows,
            warm.rows
        );
    }

    println!(
        "\n## Local disk against object storage ({url}; upload of the segments took {:.1} s)\n",
        upload.as_secs_f64()
    );
    println!("| | local disk | object store, cold cache | object store, warm cache | warm / local |\n|---|---|---|---|---|");
    let median = |v: &[f64]| percentile(v, 0.5);
    for (what, cold, local, warm) in [
        (
            "trace by id p50 (ms)",
            &trace,
            &local.trace_ms,
            &warm.trace_ms,
        ),
        (
            "log search p50 (ms)",
            &search,
            &local.search_ms,
            &warm.search_ms,
        ),
    ] {
        println!(
            "| {what} | {:.1} | {:.1} (first lookup) | {:.1} | {:.2} |",
            median(local),
            median(cold),
            median(warm),
            median(warm) / median(local)
        );
    }
    for (i, query) in suite.iter().enumerate() {
        let cold = if i == 0 {
            format!("{:.1} (first query)", median(&sql_first))
        } else {
            "–".to_string()
        };
        println!(
            "| {} (median ms) | {:.1} | {cold} | {:.1} | {:.2} |",
            query.name,
            local.suite_ms[i],
            warm.suite_ms[i],
            warm.suite_ms[i] / local.suite_ms[i]
        );
    }
    if args.ballista {
        compare_ballista(weft, args, url, suite, &warm, &scratch)?;
    }
    Ok(())
}

/// The SQL suite through a querier that sends it to a Ballista scheduler and
/// executor of the same object store, against `alone`, the querier of the
/// bucket with a warm cache, all on this machine: what distributing a
/// statement costs when there is nothing to spread it over.
fn compare_ballista(
    weft: &Path,
    args: &Args,
    url: &str,
    suite: &[SuiteQuery],
    alone: &Measurement,
    scratch: &dyn Fn(&str) -> anyhow::Result<PathBuf>,
) -> anyhow::Result<()> {
    let client = reqwest::blocking::Client::new();
    let scheduler = Server::start(
        weft,
        &[
            "ballista",
            "scheduler",
            "--storage",
            url,
            "--bind",
            "127.0.0.1:0",
            "--data-dir",
        ],
        &scratch("scheduler")?,
        "weft ballista scheduler listening",
    )?;
    let scheduler_addr = scheduler.field("scheduler=");
    let _executor = Server::start(
        weft,
        &[
            "ballista",
            "executor",
            "--storage",
            url,
            "--scheduler",
            &scheduler_addr,
            "--bind",
            "127.0.0.1:0",
            "--grpc-port",
            "0",
            "--data-dir",
        ],
        &scratch("executor")?,
        "weft ballista executor listening",
    )?;
    let querier = Server::start(
        weft,
        &[
            "query",
            "--storage",
            url,
            "--ballista-scheduler",
            &scheduler_addr,
            "--data-dir",
        ],
        &scratch("cache")?,
        "weft query listening",
    )?;
    let (cluster_ms, cluster_rows) =
        time_suite(&client, &format!("http://{}", querier.http), args, suite)?;

    println!(
        "\n## SQL on Ballista (one scheduler and one executor on this machine) against the querier alone\n"
    );
    println!("| query (median of {} runs, ms) | querier alone | on Ballista | Ballista / alone | same answer |\n|---|---|---|---|---|", args.runs);
    for (i, query) in suite.iter().enumerate() {
        println!(
            "| {} | {:.1} | {:.1} | {:.2} | {} |",
            query.name,
            alone.suite_ms[i],
            cluster_ms[i],
            cluster_ms[i] / alone.suite_ms[i],
            if alone.suite_rows[i] == cluster_rows[i] {
                "yes"
            } else if query.weft.contains("approx_") {
                // t-digests merged in another order estimate slightly differently.
                "approximate"
            } else {
                "no"
            }
        );
    }
    Ok(())
}

fn print_lookups(measured: &Measurement) {
    println!("\n## Lookups over HTTP\n");
    println!("| what | runs | p50 | p99 |\n|---|---|---|---|");
    for (what, latencies) in [
        (
            "trace by id (`GET /api/v1/traces/{id}`, spans + logs)",
            &measured.trace_ms,
        ),
        (
            "full-text log search (`GET /api/v1/logs?q=…&limit=20`)",
            &measured.search_ms,
        ),
    ] {
        println!(
            "| {what} | {} | {:.1} ms | {:.1} ms |",
            latencies.len(),
            percentile(latencies, 0.50),
            percentile(latencies, 0.99)
        );
    }
}

/// Runs `weft serve` with compaction on over the data directory until the
/// segment counts stop changing, then stops it. Returns how long it took.
fn compact(weft: &Path, data_dir: &Path) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let server = Server::start(
        weft,
        &["serve", "--compaction-interval", "50ms", "--data-dir"],
        data_dir,
        "weft listening",
    )?;
    let count = || -> anyhow::Result<(f64, f64)> {
        Ok((
            server.metric("weft_store_compactions_total{table=\"spans\"}")?,
            server.metric("weft_store_compactions_total{table=\"logs\"}")?,
        ))
    };
    // Done once no merge has been committed for a while: each round merges
    // one group and rounds come every 50 ms.
    let mut last = count()?;
    let mut quiet_since = Instant::now();
    while quiet_since.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(200));
        let now = count()?;
        if now != last {
            last = now;
            quiet_since = Instant::now();
        }
    }
    server.stop()?;
    eprintln!("# compaction: {} + {} merges", last.0, last.1);
    Ok(started.elapsed() - Duration::from_secs(3))
}

fn print_compaction(
    before: &Measurement,
    took: &Duration,
    after: &Measurement,
    suite: &[SuiteQuery],
) {
    println!(
        "\n## Before and after compaction (merging took {:.1} s)\n",
        took.as_secs_f64()
    );
    println!("| | before | after | after / before |\n|---|---|---|---|");
    let row = |what: &str, b: f64, a: f64| println!("| {what} | {b:.1} | {a:.1} | {:.2} |", a / b);
    row(
        "span segments",
        before.segments.0 as f64,
        after.segments.0 as f64,
    );
    row(
        "log segments",
        before.segments.1 as f64,
        after.segments.1 as f64,
    );
    for (what, b, a) in [
        ("trace by id", &before.trace_ms, &after.trace_ms),
        ("log search", &before.search_ms, &after.search_ms),
    ] {
        row(
            &format!("{what} p50 (ms)"),
            percentile(b, 0.5),
            percentile(a, 0.5),
        );
        row(
            &format!("{what} p99 (ms)"),
            percentile(b, 0.99),
            percentile(a, 0.99),
        );
    }
    for ((query, b), a) in suite.iter().zip(&before.suite_ms).zip(&after.suite_ms) {
        row(&format!("{} (median ms)", query.name), *b, *a);
    }
}

fn sql(
    client: &reqwest::blocking::Client,
    base: &str,
    query: &str,
) -> anyhow::Result<Vec<Vec<Value>>> {
    let response = client
        .post(format!("{base}/api/v1/sql"))
        .json(&json!({ "sql": query }))
        .send()?;
    let status = response.status();
    let body: Value = response.json()?;
    if !status.is_success() {
        bail!("{status}: {}", body["error"]);
    }
    Ok(serde_json::from_value(body["rows"].clone())?)
}

/// Runs `f` `warmup` times untimed, then `runs` times; milliseconds each.
fn time_each(
    runs: usize,
    warmup: usize,
    mut f: impl FnMut(usize) -> anyhow::Result<()>,
) -> anyhow::Result<Vec<f64>> {
    for i in 0..warmup {
        f(i)?;
    }
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let started = Instant::now();
        f(i)?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
    }
    Ok(times)
}

fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// A weft process, stopped with SIGTERM when dropped.
struct Server {
    child: Child,
    /// The line that said it was ready.
    ready_line: String,
    http: String,
    otlp_http: String,
    grpc: String,
}

impl Server {
    fn start(weft: &Path, role: &[&str], data_dir: &Path, ready: &str) -> anyhow::Result<Self> {
        let mut child = Command::new(weft)
            .args(role)
            .arg(data_dir)
            .args([
                "--otlp-grpc-addr",
                "127.0.0.1:0",
                "--otlp-http-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
            ])
            .env("WEFT_LOG", "warn,weft=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", weft.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        let ready = ready.to_string();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(line.clone());
                }
                eprintln!("[weft] {line}");
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .context("weft did not start")?;
        let mut server = Self {
            child,
            ready_line: line,
            http: String::new(),
            otlp_http: String::new(),
            grpc: String::new(),
        };
        server.http = server.field("http=");
        server.otlp_http = server.field("otlp_http=");
        server.grpc = format!("http://{}", server.field("otlp_grpc="));
        Ok(server)
    }

    /// The value of `key` (`http=`, `scheduler=`…) on its ready line.
    fn field(&self, key: &str) -> String {
        self.ready_line
            .split_whitespace()
            .find_map(|f| f.strip_prefix(key))
            .unwrap_or_default()
            .to_string()
    }

    /// A sample's value on the OTLP/HTTP port's `/metrics`.
    fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = reqwest::blocking::get(format!("http://{}/metrics", self.otlp_http))?.text()?;
        text.lines()
            .find_map(|line| line.strip_prefix(sample)?.strip_prefix(' '))
            .with_context(|| format!("no {sample} on /metrics"))?
            .parse()
            .context("a number")
    }

    fn stop(mut self) -> anyhow::Result<()> {
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = self.child.wait()?;
        if !status.success() {
            bail!("weft exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: as in `stop`; a no-op if it already exited.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// Loads `spans` spans (and their logs) through `weft serve`, then stops it
/// so everything is flushed. Returns a sample of trace ids.
fn load(
    weft: &Path,
    data_dir: &Path,
    spans: u64,
    serve_args: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut role: Vec<&str> = vec!["serve"];
    role.extend(serve_args.iter().map(String::as_str));
    role.push("--data-dir");
    let server = Server::start(weft, &role, data_dir, "weft listening")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let started = Instant::now();
    let sent = Arc::new(AtomicU64::new(0));
    let samples = runtime.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(server.grpc.clone())?
            .connect()
            .await?;
        let mut tasks = Vec::new();
        for worker in 0..4u64 {
            let channel = channel.clone();
            let sent = sent.clone();
            tasks.push(tokio::spawn(async move {
                let mut traces =
                    TraceServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20);
                let mut logs = LogsServiceClient::new(channel);
                let mut rng = fastrand::Rng::with_seed(worker);
                let mut samples = Vec::new();
                while sent.load(Ordering::Relaxed) < spans {
                    let batch = workload::batch(&mut rng, 100);
                    loop {
                        match traces.export(batch.traces.clone()).await {
                            Ok(_) => break,
                            Err(status) if retryable(&status) => {
                                tokio::time::sleep(Duration::from_millis(200)).await
                            }
                            Err(status) => anyhow::bail!("trace export: {status}"),
                        }
                    }
                    loop {
                        match logs.export(batch.logs.clone()).await {
                            Ok(_) => break,
                            Err(status) if retryable(&status) => {
                                tokio::time::sleep(Duration::from_millis(200)).await
                            }
                            Err(status) => anyhow::bail!("log export: {status}"),
                        }
                    }
                    let total = sent.fetch_add(batch.spans, Ordering::Relaxed) + batch.spans;
                    samples.extend(batch.sample_trace_ids);
                    if total / 1_000_000 != (total - batch.spans) / 1_000_000 {
                        eprintln!("# loaded {total} spans");
                    }
                }
                anyhow::Ok(samples)
            }));
        }
        let mut samples = Vec::new();
        for task in tasks {
            samples.extend(task.await??);
        }
        anyhow::Ok(samples)
    })?;
    server.stop()?;
    eprintln!(
        "# loaded {} spans (and as many log records) in {:.0?}",
        sent.load(Ordering::Relaxed),
        started.elapsed()
    );
    Ok(samples)
}

fn retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::ResourceExhausted | tonic::Code::Unavailable
    )
}
