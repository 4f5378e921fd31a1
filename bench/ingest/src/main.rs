//! `weft-bench-ingest`: how fast weft makes OTLP durable, against how fast the
//! same payloads can merely be decoded.
//!
//! It generates CRM-shaped OTLP payloads, measures decode-only throughput
//! (protobuf → structs, nothing else) on every core as the physical ceiling,
//! then starts `weft serve` on a fresh data directory and drives it over real
//! gRPC from concurrent clients, counting only acknowledged (fsync'd)
//! records. After a clean shutdown it compares the bytes on disk with the
//! OTLP bytes sent. `--compare-secure` runs the same load against a plain
//! weft and one with TLS and token authentication instead; `--scale-out`
//! runs it against `weft collector`s sharing a `file://` bucket: one on one
//! core, one on every core, and two on every core. Everything runs on the
//! same machine in the same run, so the ratios are meaningful even where
//! absolute numbers are not.

mod breakdown;
mod workload;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::{Buf, BufMut, Bytes};
use clap::Parser;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

use crate::workload::Payload;

#[derive(Debug, Parser)]
#[command(about = "OTLP ingest benchmark for weft: durable-ack throughput vs decode-only")]
struct Args {
    /// The weft binary to start [default: `weft` beside this benchmark's binary]
    #[arg(long)]
    weft: Option<PathBuf>,
    /// How long to measure, after the warm-up.
    #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Load before measuring starts.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Concurrent requests in flight.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// HTTP/2 connections the clients share.
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Spans per trace export request (a typical SDK batch is 512).
    #[arg(long, default_value_t = 500)]
    spans_per_request: usize,
    /// Distinct payloads generated (each send rewrites the ids). Enough that
    /// a segment (150k spans or 250k log records at most) holds none twice:
    /// a payload sent again repeats its times and attribute values, which
    /// compress and index as no real traffic does.
    #[arg(long, default_value_t = 1024)]
    payloads: usize,
    /// Instead of the load test, time each stage of the write path on one
    /// thread (decode, convert, WAL encode, sort, Parquet, index).
    #[arg(long)]
    breakdown: bool,
    /// Instead of the load test, write the first trace export request (500
    /// CRM spans, protobuf) to this file: the payload bench/otlp2parquet posts.
    #[arg(long)]
    write_payload: Option<PathBuf>,
    /// Run the load twice, against a plain weft and against one with TLS
    /// and token authentication, and compare the two.
    #[arg(long)]
    compare_secure: bool,
    /// Run the load against `weft collector --storage file://…`: one
    /// collector pinned to one core (the load generator on the others), one
    /// on every core, and two sharing every core, each against a bucket of
    /// its own.
    #[arg(long)]
    scale_out: bool,
}

/// How the load generator reaches weft: in the clear, or over TLS with a token.
#[derive(Clone)]
struct Security {
    tls: Arc<rustls::ClientConfig>,
    authorization: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
}

/// Sends pre-encoded protobuf bytes, ignores the response body.
#[derive(Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }
    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Self::Error> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = ();
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Self::Error> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// Payloads the decode-only ceiling cycles through (~24 MB of spans and logs).
const CACHED_PAYLOADS: usize = 64;

const TRACES_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
const LOGS_PATH: &str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    eprintln!(
        "generating {} payloads of {} spans…",
        args.payloads, args.spans_per_request
    );
    let (traces, logs) = workload::generate(args.payloads, args.spans_per_request, 42);
    if args.breakdown {
        return breakdown::run(&traces);
    }
    if let Some(path) = &args.write_payload {
        std::fs::write(path, &traces[0].bytes)?;
        return Ok(());
    }
    let traces = Arc::new(traces);
    let logs = Arc::new(logs);

    // A receiver decodes a request right after reading it off its socket,
    // while it is in cache; cycling through all of the payloads measures the
    // memory too (~10 % slower here), so the ceiling cycles through the first
    // 64, as it did before there were more.
    let cached = |payloads: &Arc<Vec<Payload>>| {
        Arc::new(payloads[..payloads.len().min(CACHED_PAYLOADS)].to_vec())
    };
    let decode = decode_only(
        &cached(&traces),
        &cached(&logs),
        cores,
        Duration::from_secs(5),
    );
    eprintln!(
        "decode-only on {cores} threads: {:.0} spans/s, {:.0} logs/s",
        decode.0, decode.1
    );

    let weft_binary = match &args.weft {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("weft"),
    };
    if args.compare_secure {
        return compare_secure(&args, &weft_binary, &traces, &logs);
    }
    if args.scale_out {
        return scale_out(&args, &weft_binary, cores, &traces, &logs);
    }
    let data_dir = tempfile::tempdir()?;
    let load = run_load(&args, &weft_binary, data_dir.path(), None, &traces, &logs)?;
    let spans_disk = dir_bytes(&data_dir.path().join("spans").join("segments"))?;
    let spans_index = dir_bytes(&data_dir.path().join("spans").join("index"))?;
    let logs_disk = dir_bytes(&data_dir.path().join("logs").join("segments"))?;
    let logs_index = dir_bytes(&data_dir.path().join("logs").join("index"))?;

    let seconds = args.duration.as_secs_f64();
    let spans_per_s = load.spans as f64 / seconds;
    let logs_per_s = load.logs as f64 / seconds;
    let mut latencies = load.latencies_us.clone();
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p) as usize).min(latencies.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };

    println!("| measure | value |");
    println!("|---|---|");
    println!("| machine | {cores} cores |");
    println!(
        "| load | {} clients, {} connections, {} spans/request, {} s after {} s warm-up |",
        args.clients,
        args.connections,
        args.spans_per_request,
        args.duration.as_secs(),
        args.warmup.as_secs()
    );
    println!("| spans/s acknowledged (durable) | {spans_per_s:.0} |");
    println!("| logs/s acknowledged (durable) | {logs_per_s:.0} |");
    println!(
        "| decode-only spans/s ({cores} threads, same payloads) | {:.0} |",
        decode.0
    );
    println!(
        "| weft / decode-only (spans) | {:.2} |",
        spans_per_s / decode.0
    );
    println!(
        "| ack latency p50 / p99 | {:.1} ms / {:.1} ms |",
        pct(0.50),
        pct(0.99)
    );
    println!("| refused (retryable) requests | {} |", load.refused);
    println!(
        "| spans: Parquet bytes / OTLP bytes | {:.3} (1/{:.1}) |",
        spans_disk as f64 / load.trace_bytes_total as f64,
        load.trace_bytes_total as f64 / spans_disk.max(1) as f64
    );
    println!(
        "| spans: Parquet + index bytes / OTLP bytes | {:.3} |",
        (spans_disk + spans_index) as f64 / load.trace_bytes_total as f64
    );
    println!(
        "| spans: bytes on disk per span (Parquet / +index) | {:.1} / {:.1} (OTLP: {:.1}) |",
        spans_disk as f64 / load.spans_total as f64,
        (spans_disk + spans_index) as f64 / load.spans_total as f64,
        load.trace_bytes_total as f64 / load.spans_total as f64
    );
    println!(
        "| logs: Parquet bytes / OTLP bytes | {:.3} (+index: {:.3}) |",
        logs_disk as f64 / load.log_bytes_total.max(1) as f64,
        (logs_disk + logs_index) as f64 / load.log_bytes_total.max(1) as f64
    );
    Ok(())
}

/// Starts weft on `data_dir` (with TLS and auth when `secure`), drives the
/// load, and stops weft cleanly.
fn run_load(
    args: &Args,
    weft_binary: &Path,
    data_dir: &Path,
    secure: Option<&SecureSetup>,
    traces: &Arc<Vec<Payload>>,
    logs: &Arc<Vec<Payload>>,
) -> anyhow::Result<Load> {
    let extra_args = secure.map(SecureSetup::weft_args).unwrap_or_default();
    let weft = start_weft(weft_binary, "serve", data_dir, &extra_args, None)?;
    let security = secure.map(|s| s.security.clone());
    drive_and_stop(args, vec![weft], security, traces, logs)
}

/// Drives the load against `wefts` (clients spread evenly over them), then
/// stops them cleanly.
fn drive_and_stop(
    args: &Args,
    wefts: Vec<RunningWeft>,
    security: Option<Security>,
    traces: &Arc<Vec<Payload>>,
    logs: &Arc<Vec<Payload>>,
) -> anyhow::Result<Load> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addrs: Vec<String> = wefts.iter().map(|w| w.grpc.clone()).collect();
    let load = runtime.block_on(drive(args, &addrs, security, traces.clone(), logs.clone()));
    // Close the client connections, so weft's graceful shutdown has nothing to wait for.
    drop(runtime);
    for mut weft in wefts {
        // SAFETY: kill(2) on the pid of the child we started and have not reaped.
        unsafe { libc::kill(weft.child.id() as i32, libc::SIGTERM) };
        let status = weft.child.wait()?;
        if !status.success() {
            bail!("weft exited with {status}");
        }
    }
    load
}

/// One collector on one core, one on every core, and two on every core, each
/// over a `file://` bucket of its own: what a collector makes durable per
/// core, and whether a second one adds to it or only splits it.
fn scale_out(
    args: &Args,
    weft_binary: &Path,
    cores: usize,
    traces: &Arc<Vec<Payload>>,
    logs: &Arc<Vec<Payload>>,
) -> anyhow::Result<()> {
    let seconds = args.duration.as_secs_f64();
    let all_cores: Vec<usize> = (0..cores).collect();
    // (setup, collectors, the collectors' cores, the load generator's cores)
    let mut setups = vec![
        ("one collector, all cores", 1, None, None),
        ("two collectors, all cores", 2, None, None),
    ];
    if cores >= 2 {
        setups.insert(
            0,
            (
                "one collector on core 0, load on the others",
                1,
                Some(vec![0]),
                Some(all_cores[1..].to_vec()),
            ),
        );
    }
    println!("| setup ({cores} cores, `weft collector --storage file://…`) | spans/s | logs/s | records/s per collector core | refused (retryable) |");
    println!("|---|---|---|---|---|");
    for (setup, collectors, collector_cores, load_cores) in setups {
        let bucket = tempfile::tempdir()?;
        let url = format!("file://{}", bucket.path().display());
        let mut dirs = Vec::new();
        let mut wefts = Vec::new();
        for _ in 0..collectors {
            let dir = tempfile::tempdir()?;
            let extra = ["--storage".to_string(), url.clone()];
            wefts.push(start_weft(
                weft_binary,
                "collector",
                dir.path(),
                &extra,
                collector_cores.as_deref(),
            )?);
            dirs.push(dir);
        }
        // The load generator's runtime runs on this thread.
        pin_current_thread(load_cores.as_deref().unwrap_or(&all_cores))?;
        let load = drive_and_stop(args, wefts, None, traces, logs);
        pin_current_thread(&all_cores)?;
        let load = load?;
        let used_cores = collector_cores.map_or(cores, |c| c.len());
        let spans = load.spans as f64 / seconds;
        let records = (load.spans + load.logs) as f64 / seconds;
        println!(
            "| {setup} | {spans:.0} | {:.0} | {:.0} | {} |",
            load.logs as f64 / seconds,
            records / used_cores as f64,
            load.refused
        );
    }
    Ok(())
}

/// Restricts the calling thread (and what it starts later) to `cores`.
fn pin_current_thread(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it,
    // and sched_setaffinity reads exactly size_of::<cpu_set_t>() bytes.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// A self-signed certificate for localhost and an ingest token, in a
/// directory of their own.
struct SecureSetup {
    dir: tempfile::TempDir,
    security: Security,
}

impl SecureSetup {
    fn new(weft_binary: &Path, data_dir: &Path) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let key = rcgen::KeyPair::generate()?;
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
        std::fs::write(dir.path().join("tls.crt"), cert.pem())?;
        std::fs::write(dir.path().join("tls.key"), key.serialize_pem())?;
        let output = Command::new(weft_binary)
            .args(["token", "create", "--role", "ingest", "--data-dir"])
            .arg(data_dir)
            .output()?;
        if !output.status.success() {
            bail!(
                "weft token create: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let token = String::from_utf8(output.stdout)?.trim().to_string();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Self {
            dir,
            security: Security {
                tls: Arc::new(tls),
                authorization: format!("Bearer {token}").parse()?,
            },
        })
    }

    fn weft_args(&self) -> Vec<String> {
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--auth".to_string(),
            "--tls-cert-file".to_string(),
            file("tls.crt"),
            "--tls-key-file".to_string(),
            file("tls.key"),
        ]
    }
}

/// The same load against a plain weft and one with TLS and authentication,
/// one after the other in the same run.
fn compare_secure(
    args: &Args,
    weft_binary: &Path,
    traces: &Arc<Vec<Payload>>,
    logs: &Arc<Vec<Payload>>,
) -> anyhow::Result<()> {
    let plain_dir = tempfile::tempdir()?;
    let plain = run_load(args, weft_binary, plain_dir.path(), None, traces, logs)?;
    let secure_dir = tempfile::tempdir()?;
    let setup = SecureSetup::new(weft_binary, secure_dir.path())?;
    let secure = run_load(
        args,
        weft_binary,
        secure_dir.path(),
        Some(&setup),
        traces,
        logs,
    )?;
    let seconds = args.duration.as_secs_f64();
    let rate = |load: &Load| load.spans as f64 / seconds;
    println!("| measure | plain | TLS + token auth |");
    println!("|---|---|---|");
    println!(
        "| load | {} clients, {} connections, {} spans/request, {} s after {} s warm-up | same |",
        args.clients,
        args.connections,
        args.spans_per_request,
        args.duration.as_secs(),
        args.warmup.as_secs()
    );
    println!(
        "| spans/s acknowledged | {:.0} | {:.0} |",
        rate(&plain),
        rate(&secure)
    );
    println!(
        "| logs/s acknowledged | {:.0} | {:.0} |",
        plain.logs as f64 / seconds,
        secure.logs as f64 / seconds
    );
    println!(
        "| refused (retryable) requests | {} | {} |",
        plain.refused, secure.refused
    );
    println!(
        "| TLS + auth / plain (spans/s) | | {:.2} |",
        rate(&secure) / rate(&plain)
    );
    Ok(())
}

/// Decodes the payloads on `threads` threads for `duration`; returns spans/s and logs/s.
fn decode_only(
    traces: &Arc<Vec<Payload>>,
    logs: &Arc<Vec<Payload>>,
    threads: usize,
    duration: Duration,
) -> (f64, f64) {
    let spans = Arc::new(AtomicU64::new(0));
    let log_records = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for t in 0..threads {
            let (spans, log_records) = (spans.clone(), log_records.clone());
            scope.spawn(move || {
                let mut i = t;
                while started.elapsed() < duration {
                    let trace = &traces[i % traces.len()];
                    let decoded = ExportTraceServiceRequest::decode(trace.bytes.as_slice())
                        .expect("valid payload");
                    std::hint::black_box(&decoded);
                    spans.fetch_add(trace.records, Ordering::Relaxed);
                    let log = &logs[i % logs.len()];
                    let decoded = ExportLogsServiceRequest::decode(log.bytes.as_slice())
                        .expect("valid payload");
                    std::hint::black_box(&decoded);
                    log_records.fetch_add(log.records, Ordering::Relaxed);
                    i += threads;
                }
            });
        }
    });
    let seconds = started.elapsed().as_secs_f64();
    (
        spans.load(Ordering::Relaxed) as f64 / seconds,
        log_records.load(Ordering::Relaxed) as f64 / seconds,
    )
}

struct RunningWeft {
    child: std::process::Child,
    grpc: String,
}

/// Starts `weft <role>` on `data_dir`, on `cores` only when given.
fn start_weft(
    binary: &Path,
    role: &str,
    data_dir: &Path,
    extra_args: &[String],
    cores: Option<&[usize]>,
) -> anyhow::Result<RunningWeft> {
    let mut command = Command::new(binary);
    if let Some(cores) = cores {
        let cores = cores.to_vec();
        // SAFETY: between fork and exec, only the async-signal-safe
        // sched_setaffinity runs (through pin_current_thread, which allocates nothing).
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                pin_current_thread(&cores)
            });
        }
    }
    let mut child = command
        .args([
            role,
            "--otlp-grpc-addr",
            "127.0.0.1:0",
            "--otlp-http-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra_args)
        .env("WEFT_LOG", "warn,weft=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))?;
    let stderr = child.stderr.take().expect("piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("weft listening") {
                let _ = tx.send(line.clone());
            }
            eprintln!("[weft] {line}");
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .context("weft did not start")?;
    let grpc = line
        .split_whitespace()
        .find_map(|f| f.strip_prefix("otlp_grpc="))
        .context("no otlp_grpc address logged")?;
    Ok(RunningWeft {
        child,
        grpc: grpc.to_string(),
    })
}

#[derive(Default)]
struct Load {
    spans: u64,
    logs: u64,
    spans_total: u64,
    trace_bytes_total: u64,
    log_bytes_total: u64,
    refused: u64,
    latencies_us: Vec<u32>,
}

/// An HTTP/2 connection to weft's OTLP/gRPC address, over TLS when `security` says so.
async fn connect(
    addr: &str,
    security: Option<&Security>,
) -> anyhow::Result<tonic::transport::Channel> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?;
    let Some(security) = security else {
        return Ok(endpoint.connect().await?);
    };
    let (addr, tls) = (addr.to_string(), security.tls.clone());
    Ok(endpoint
        .connect_with_connector(tower::service_fn(move |_| {
            let (addr, tls) = (addr.clone(), tls.clone());
            async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                let name = rustls::pki_types::ServerName::try_from("localhost")
                    .map_err(std::io::Error::other)?;
                let stream = tokio_rustls::TlsConnector::from(tls)
                    .connect(name, tcp)
                    .await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
            }
        }))
        .await?)
}

async fn drive(
    args: &Args,
    addrs: &[String],
    security: Option<Security>,
    traces: Arc<Vec<Payload>>,
    logs: Arc<Vec<Payload>>,
) -> anyhow::Result<Load> {
    // Client i uses channel i mod n: consecutive clients go to different weft
    // processes, as behind a load balancer.
    let mut channels = Vec::new();
    for _ in 0..args.connections {
        for addr in addrs {
            channels.push(connect(addr, security.as_ref()).await?);
        }
    }
    let authorization = security.map(|s| s.authorization);
    let load = Arc::new(Mutex::new(Load::default()));
    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let sends = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for client in 0..args.clients {
        let mut grpc = tonic::client::Grpc::new(channels[client % channels.len()].clone());
        let (authorization, traces, logs, load, measuring, stop, sends) = (
            authorization.clone(),
            traces.clone(),
            logs.clone(),
            load.clone(),
            measuring.clone(),
            stop.clone(),
            sends.clone(),
        );
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let send = sends.fetch_add(1, Ordering::Relaxed);
                let i = send as usize % traces.len();
                // Logs ride along with every other trace request, as SDKs batch them separately.
                let (payload, path, is_trace) = if send % 2 == 0 {
                    (&traces[i], TRACES_PATH, true)
                } else {
                    (&logs[i], LOGS_PATH, false)
                };
                let body = Bytes::from(payload.instance(send / 2));
                let bytes = body.len() as u64;
                grpc.ready().await?;
                let started = Instant::now();
                let mut request = tonic::Request::new(body);
                if let Some(authorization) = &authorization {
                    request
                        .metadata_mut()
                        .insert("authorization", authorization.clone());
                }
                let result = grpc
                    .unary(
                        request,
                        http::uri::PathAndQuery::from_static(path),
                        RawCodec,
                    )
                    .await;
                let elapsed = started.elapsed();
                let refused = {
                    let mut load = load.lock().expect("not poisoned");
                    match result {
                        Ok(_) => {
                            if is_trace {
                                load.spans_total += payload.records;
                                load.trace_bytes_total += bytes;
                            } else {
                                load.log_bytes_total += bytes;
                            }
                            if measuring.load(Ordering::Relaxed) {
                                load.latencies_us.push(elapsed.as_micros() as u32);
                                if is_trace {
                                    load.spans += payload.records;
                                } else {
                                    load.logs += payload.records;
                                }
                            }
                            false
                        }
                        Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                            load.refused += 1;
                            true
                        }
                        Err(status) => return Err(anyhow::anyhow!("export failed: {status}")),
                    }
                };
                if refused {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok::<(), anyhow::Error>(())
        }));
    }
    tokio::time::sleep(args.warmup).await;
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    measuring.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await??;
    }
    let load = std::mem::take(&mut *load.lock().expect("not poisoned"));
    Ok(load)
}

fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_bytes(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}
