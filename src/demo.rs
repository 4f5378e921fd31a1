//! `weft demo`: the whole platform on one machine. weft itself runs in this
//! process; the mesh control plane, the four CRM services, their sidecars
//! and the gateway run as child processes of this same binary (as a user
//! would run them), started in dependency order and stopped in reverse; the
//! load generator runs here and reports on one progress line.
//!
//! `weft demo service <name>` runs one CRM service; the demo starts four.

use std::collections::{HashMap, VecDeque};
use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use parking_lot::Mutex;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::{mpsc, watch};
use weft_access::credentials::write_private_file;
use weft_demo::control::Control;
use weft_demo::load::{self, LoadOptions, LoadStats};
use weft_demo::telemetry::ServiceTelemetry;
use weft_demo::topology::{ProcessPlan, API_KEY};
use weft_demo::{CrmService, Fault, Ports, ServiceOptions, Topology};
use weft_mesh::tokens::{TokenFile, TokenScope};

use crate::config::{Config, HttpConfig, OtlpConfig};
use crate::serve::{self, ShutdownSignals};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct DemoArgs {
    #[command(subcommand)]
    command: Option<DemoCommand>,
    #[command(flatten)]
    run: RunArgs,
}

impl DemoArgs {
    /// `weft demo service` instruments itself with the OpenTelemetry SDK
    /// instead of weft's own log output.
    pub fn runs_a_service(&self) -> bool {
        matches!(self.command, Some(DemoCommand::Service(_)))
    }
}

#[derive(Debug, Subcommand)]
enum DemoCommand {
    /// Run one CRM service (what `weft demo` starts four of, each behind a sidecar).
    Service(ServiceArgs),
    /// Send the demo's load to its gateway from another process (more load, or a benchmark).
    Load(LoadArgs),
}

#[derive(Debug, Args)]
struct LoadArgs {
    /// The demo's gateway.
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    gateway: String,
    /// Requests per second, sent open-loop.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Stop after this long (after the warm-up) and print the measurement as JSON on stdout.
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Load sent first and left out of the measurement.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    warmup: Duration,
}

#[derive(Debug, Args)]
struct ServiceArgs {
    /// crm-mobile, crm-conductor, crm-salesforce or crm-database.
    service: CrmService,
    /// The app's listen address (its sidecar's --app).
    #[arg(long)]
    listen: SocketAddr,
    /// Where the service sends its spans and logs (OTLP/gRPC).
    #[arg(long, default_value = "http://127.0.0.1:4317")]
    otlp_endpoint: String,
    /// A service it calls and the base URL to call it at (its sidecar's
    /// outbound listener), e.g. crm-database=http://127.0.0.1:15003; repeatable.
    #[arg(long = "callee", value_parser = parse_callee)]
    callees: Vec<(CrmService, String)>,
    /// A fault to inject from the start (see `weft demo --help`); repeatable.
    #[arg(long = "fault")]
    faults: Vec<Fault>,
}

fn parse_callee(text: &str) -> Result<(CrmService, String), String> {
    let (service, url) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not service=url"))?;
    Ok((service.parse()?, url.to_string()))
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Where the demo keeps weft's data, the mesh CA and the generated configs.
    #[arg(long, env = "WEFT_DEMO_DIR", default_value = "weft-demo")]
    dir: PathBuf,
    /// Start with no data: delete what an earlier run left in --dir (by default it is kept and added to).
    #[arg(long)]
    fresh: bool,
    /// Requests per second the load generator sends through the gateway (0: no load).
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// A fault to inject, e.g. crm-database:latency=300ms:p=0.2, crm-salesforce:error=0.1,
    /// crm-database:latency=500ms:when=customer.tier=gold; repeatable. Change them while
    /// the demo runs with PUT/POST/DELETE /api/v1/demo/faults.
    #[arg(long = "fault")]
    faults: Vec<Fault>,
    /// Stop by itself after this long (default: run until Ctrl-C).
    #[arg(long, value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// The UI and query API (also serves /api/v1/demo); port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:16686")]
    http_addr: SocketAddr,
    /// weft's OTLP/gRPC receiver, where every process sends its telemetry.
    #[arg(long, default_value = "127.0.0.1:4317")]
    otlp_grpc_addr: SocketAddr,
    /// weft's OTLP/HTTP receiver.
    #[arg(long, default_value = "127.0.0.1:4318")]
    otlp_http_addr: SocketAddr,
    /// The gateway's proxy port: the CRM's public API.
    #[arg(long, default_value = "127.0.0.1:8000")]
    gateway_addr: SocketAddr,
    /// The gateway's Admin API.
    #[arg(long, default_value = "127.0.0.1:8001")]
    gateway_admin_addr: SocketAddr,
    /// The mesh control plane.
    #[arg(long, default_value = "127.0.0.1:5681")]
    control_plane_addr: SocketAddr,
}

pub async fn run(args: DemoArgs) -> anyhow::Result<()> {
    match args.command {
        Some(DemoCommand::Service(service)) => run_service(service).await,
        Some(DemoCommand::Load(load)) => run_load(load).await,
        None => run_demo(args.run).await,
    }
}

async fn run_service(args: ServiceArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let telemetry = ServiceTelemetry::install(args.service.name(), &args.otlp_endpoint)?;
    let options = ServiceOptions {
        service: args.service,
        listen: args.listen,
        callees: args.callees.into_iter().collect(),
        faults: args.faults,
    };
    let served = weft_demo::services::run(options, async move {
        signals.recv().await;
    })
    .await;
    telemetry.shutdown().await;
    Ok(served?)
}

fn validate_rate(rate: f64) -> anyhow::Result<()> {
    if !(0.0..=100_000.0).contains(&rate) {
        bail!("--rate {rate} must be between 0 and 100000 requests per second");
    }
    Ok(())
}

/// The load generator and its progress line, running until stopped.
struct RunningLoad {
    stats: Arc<LoadStats>,
    stop: watch::Sender<bool>,
    load: tokio::task::JoinHandle<()>,
    progress: tokio::task::JoinHandle<()>,
}

impl RunningLoad {
    /// Starts sending `rate` requests a second (none at 0) to `gateway`.
    fn start(gateway: String, rate: f64, stats: Arc<LoadStats>) -> Self {
        let (stop, stopped) = watch::channel(false);
        let mut load_stopped = stopped.clone();
        let load = tokio::spawn(load::run(
            LoadOptions {
                gateway,
                rate,
                // More requests waiting for answers than this are counted as skipped.
                max_in_flight: ((rate * 2.0) as usize).clamp(64, 20_000),
            },
            stats.clone(),
            async move {
                let _ = load_stopped.wait_for(|stop| *stop).await;
            },
        ));
        let progress = tokio::spawn(progress_line(stats.clone(), rate, stopped));
        Self {
            stats,
            stop,
            load,
            progress,
        }
    }

    /// Stops sending, waits (up to 10 s) for the answers still on their way,
    /// so their traces are whole, and ends the progress line.
    async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.load.await;
        self.stats.drained(Duration::from_secs(10)).await;
        let _ = self.progress.await;
    }
}

/// Completes after `duration`, or never.
async fn sleep_or_forever(duration: Option<Duration>) {
    match duration {
        Some(duration) => tokio::time::sleep(duration).await,
        None => std::future::pending().await,
    }
}

async fn run_load(args: LoadArgs) -> anyhow::Result<()> {
    validate_rate(args.rate)?;
    if args.rate == 0.0 {
        bail!("--rate must be more than 0");
    }
    let mut signals = ShutdownSignals::install()?;
    let stats = Arc::new(LoadStats::default());
    let load = RunningLoad::start(
        args.gateway.trim_end_matches('/').to_string(),
        args.rate,
        stats.clone(),
    );
    let measured = async {
        tokio::time::sleep(args.warmup).await;
        stats.start_measuring();
        sleep_or_forever(args.duration).await;
    };
    tokio::select! {
        signal = signals.recv() => tracing::info!(signal, "stopping the load"),
        () = measured => {}
    }
    // Answers still on their way are not measured.
    let report = stats.measured(args.rate);
    load.stop().await;
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Ports the demo has chosen, held open until the process that listens on
/// them starts, so nothing else takes them in between.
struct Reservations {
    held: HashMap<SocketAddr, TcpListener>,
    /// Where internal ports are picked from: below the kernel's ephemeral
    /// range, whose ports are also what outgoing connections get, so one
    /// could take a port between its release and the child's bind.
    internal_range: (u16, u16),
}

impl Reservations {
    fn new() -> Self {
        let ephemeral_from = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
            .unwrap_or(32_768);
        Self {
            held: HashMap::new(),
            internal_range: (
                ephemeral_from.saturating_sub(12_000).max(10_000),
                ephemeral_from,
            ),
        }
    }

    /// A user-facing address: the given one if it is free (port 0: one the
    /// demo picks), a clear error when it is taken.
    fn claim(&mut self, addr: SocketAddr, flag: &str, what: &str) -> anyhow::Result<SocketAddr> {
        if addr.port() == 0 {
            return self.internal(addr.ip());
        }
        match TcpListener::bind(addr) {
            Ok(listener) => {
                self.held.insert(addr, listener);
                Ok(addr)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
                "{addr} ({what}) is already in use: stop what listens there, or choose another address with {flag}"
            ),
            Err(e) => Err(e).with_context(|| format!("cannot listen on {addr} ({what}, {flag})")),
        }
    }

    /// A free port for an internal listener, from `internal_range`.
    fn internal(&mut self, ip: IpAddr) -> anyhow::Result<SocketAddr> {
        let (low, high) = self.internal_range;
        if low < high {
            // A random start, so two demos starting together rarely race for one port.
            let span = high - low;
            let start = fastrand::u16(0..span);
            for offset in 0..span {
                let addr = SocketAddr::new(ip, low + (start + offset) % span);
                if let Ok(listener) = TcpListener::bind(addr) {
                    self.held.insert(addr, listener);
                    return Ok(addr);
                }
            }
        }
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).context("no free port")?;
        let addr = listener.local_addr()?;
        self.held.insert(addr, listener);
        Ok(addr)
    }

    /// Lets the process that uses `addrs` bind them.
    fn release(&mut self, addrs: &[SocketAddr]) {
        for addr in addrs {
            self.held.remove(addr);
        }
    }
}

async fn run_demo(args: RunArgs) -> anyhow::Result<()> {
    validate_rate(args.rate)?;
    let mut signals = ShutdownSignals::install()?;
    let mut reserved = Reservations::new();
    let ports = Ports {
        http: reserved.claim(args.http_addr, "--http-addr", "the UI and query API")?,
        otlp_grpc: reserved.claim(args.otlp_grpc_addr, "--otlp-grpc-addr", "OTLP/gRPC")?,
        otlp_http: reserved.claim(args.otlp_http_addr, "--otlp-http-addr", "OTLP/HTTP")?,
        gateway: reserved.claim(args.gateway_addr, "--gateway-addr", "the gateway")?,
        gateway_admin: reserved.claim(
            args.gateway_admin_addr,
            "--gateway-admin-addr",
            "the gateway Admin API",
        )?,
        control_plane: reserved.claim(
            args.control_plane_addr,
            "--control-plane-addr",
            "the mesh control plane",
        )?,
    };
    let loopback = IpAddr::from([127, 0, 0, 1]);
    let mut shortage = None;
    let topology = Topology::new(ports, &args.dir, || {
        reserved.internal(loopback).unwrap_or_else(|e| {
            shortage = Some(e);
            SocketAddr::new(loopback, 0)
        })
    });
    if let Some(e) = shortage {
        return Err(e.context("cannot find free ports for the demo's services"));
    }
    prepare_dir(&topology, &args)?;

    let load_stats = Arc::new(LoadStats::default());
    let control = Control::new(
        topology.clone(),
        args.rate,
        load_stats.clone(),
        args.faults.clone(),
    );
    let config = Config {
        data_dir: topology.data_dir(),
        otlp: OtlpConfig {
            grpc_addr: ports.otlp_grpc,
            http_addr: ports.otlp_http,
            ..OtlpConfig::default()
        },
        http: HttpConfig { addr: ports.http },
        ..Config::default()
    };
    let (stop_weft, weft_stopped) = tokio::sync::oneshot::channel::<()>();
    reserved.release(&[ports.http, ports.otlp_grpc, ports.otlp_http]);
    let mut weft = tokio::spawn(serve::run_until(
        config,
        serve::Role::Serve,
        control.router(),
        async move {
            let _ = weft_stopped.await;
            "the demo is stopping"
        },
    ));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()?;

    let mut children = Children::default();
    let started = async {
        wait_ready(
            &client,
            &format!("http://{}/api/v1/services", ports.http),
            "weft",
            || weft.is_finished().then(|| "weft stopped".to_string()),
        )
        .await?;
        for plan in topology.processes(&args.faults) {
            reserved.release(&plan.listens);
            let child = children.spawn(&plan)?;
            wait_ready(&client, &plan.ready_url, &plan.name, || child.failure()).await?;
        }
        anyhow::Ok(())
    };
    let outcome = tokio::select! {
        started = started => started.map(|()| None),
        signal = signals.recv() => Ok(Some(signal)),
    };
    let outcome = match outcome {
        Ok(None) => {
            print_banner(&topology, &args);
            supervise(
                &args,
                &topology,
                &load_stats,
                &mut children,
                &mut signals,
                &mut weft,
            )
            .await
        }
        Ok(Some(signal)) => {
            tracing::info!(signal, "stopped while starting");
            Ok(())
        }
        Err(e) => Err(e),
    };
    children.stop_all().await;
    let _ = stop_weft.send(());
    match (&mut weft).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "weft stopped with an error"),
        Err(e) => tracing::error!(error = %e, "weft panicked"),
    }
    if outcome.is_ok() {
        eprintln!(
            "weft demo stopped; the data stays in {} (--fresh starts empty)",
            args.dir.display()
        );
    }
    outcome
}

/// Runs the load and the progress line until a signal, the duration, or a
/// process that dies.
async fn supervise(
    args: &RunArgs,
    topology: &Topology,
    stats: &Arc<LoadStats>,
    children: &mut Children,
    signals: &mut ShutdownSignals,
    weft: &mut tokio::task::JoinHandle<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let load = RunningLoad::start(topology.gateway_url(), args.rate, stats.clone());
    let outcome = tokio::select! {
        signal = signals.recv() => {
            tracing::info!(signal, "stopping the demo");
            Ok(())
        }
        () = sleep_or_forever(args.duration) => Ok(()),
        (name, status) = children.next_exit() => Err(anyhow::anyhow!("{name} exited unexpectedly ({status}); stopping the demo")),
        result = &mut *weft => Err(match result {
            Ok(Ok(())) => anyhow::anyhow!("weft stopped unexpectedly"),
            Ok(Err(e)) => e.context("weft failed"),
            Err(e) => anyhow::anyhow!("weft panicked: {e}"),
        }),
    };
    load.stop().await;
    outcome
}

/// A report every 2 s (what `/api/v1/demo` shows): redrawn in place on a
/// terminal, printed as a line every 10 s otherwise.
async fn progress_line(stats: Arc<LoadStats>, rate: f64, mut stopped: watch::Receiver<bool>) {
    let terminal = std::io::stderr().is_terminal();
    let mut last = Instant::now();
    for tick in 1u64.. {
        tokio::select! {
            _ = stopped.wait_for(|stop| *stop) => break,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
        let report = stats.report(rate, last.elapsed());
        last = Instant::now();
        if rate == 0.0 {
            continue;
        }
        if terminal {
            eprint!("\r\x1b[2K{report}");
        } else if tick % 5 == 0 {
            eprintln!("{report}");
        }
    }
    if terminal {
        eprintln!();
    }
}

fn prepare_dir(topology: &Topology, args: &RunArgs) -> anyhow::Result<()> {
    let data = topology.data_dir();
    if args.fresh {
        for dir in [
            data.clone(),
            topology.mesh_state_dir(),
            topology.config_dir(),
        ] {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot delete {}", dir.display()))
                }
            }
        }
    } else if data.exists() {
        tracing::info!(dir = %args.dir.display(), "keeping the data of the earlier run (--fresh starts empty)");
    }
    std::fs::create_dir_all(topology.config_dir())
        .with_context(|| format!("cannot create {}", topology.config_dir().display()))?;
    write(&topology.mesh_config_path(), &topology.mesh_config())?;
    write(&topology.gateway_config_path(), &topology.gateway_config())?;
    write_mesh_tokens(topology)
}

/// A fresh dataplane token for each sidecar (the tokens of an earlier run
/// are replaced: the demo owns its mesh).
fn write_mesh_tokens(topology: &Topology) -> anyhow::Result<()> {
    let mut tokens = TokenFile::default();
    for member in topology.mesh_members() {
        let (_, token) =
            tokens.create(TokenScope::Dataplane(member.to_string()), "weft demo", None)?;
        write_private_file(&topology.token_path(member), token.as_bytes())
            .with_context(|| format!("cannot write {}", topology.token_path(member).display()))?;
    }
    tokens.save(&TokenFile::path_in(&topology.mesh_state_dir()))?;
    Ok(())
}

fn write(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

fn print_banner(topology: &Topology, args: &RunArgs) {
    let ports = &topology.ports;
    println!(
        "\nweft demo is running: the CRM behind the gateway, inside the mesh, {rate} requests/s{faults}\n\
         \n  UI          http://{ui}  (traces, logs, service map, analysis)\
         \n  CRM API     curl -H 'apikey: {API_KEY}' {gateway}/api/accounts/42\
         \n  faults      curl -X POST {ui}/api/v1/demo/faults -d '{{\"fault\":\"crm-database:latency=300ms:p=0.2\"}}'\
         \n              curl -X DELETE {ui}/api/v1/demo/faults\
         \n  mesh        http://{cp}/dataplanes\
         \n  gateway     http://{admin}/status\
         \n  data        {dir}\n\
         \nCtrl-C stops everything.\n",
        rate = args.rate,
        faults = if args.faults.is_empty() {
            String::new()
        } else {
            format!(
                ", faults: {}",
                args.faults.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )
        },
        ui = ports.http,
        gateway = topology.gateway_url(),
        cp = ports.control_plane,
        admin = ports.gateway_admin,
        dir = args.dir.display(),
    );
    tracing::info!(
        ui = %ports.http,
        gateway = %ports.gateway,
        otlp_grpc = %ports.otlp_grpc,
        control_plane = %ports.control_plane,
        "weft demo running"
    );
}

/// Polls `url` until it answers 2xx; `failed` says whether the process behind it died.
async fn wait_ready(
    client: &reqwest::Client,
    url: &str,
    name: &str,
    failed: impl Fn() -> Option<String>,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(failure) = failed() {
            bail!("{name} did not start: {failure}");
        }
        if let Ok(response) = client.get(url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("{name} did not become ready within 60 s ({url} does not answer)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The demo's child processes: their stderr forwarded with a prefix, their
/// exits reported, stopped in reverse start order.
struct Children {
    started: Vec<Arc<Child>>,
    exit_tx: mpsc::UnboundedSender<(String, ExitStatus)>,
    exits: mpsc::UnboundedReceiver<(String, ExitStatus)>,
}

impl Default for Children {
    fn default() -> Self {
        let (exit_tx, exits) = mpsc::unbounded_channel();
        Self {
            started: Vec::new(),
            exit_tx,
            exits,
        }
    }
}

struct Child {
    name: String,
    pid: u32,
    exited: watch::Receiver<Option<ExitStatus>>,
    /// The last lines it logged, for the error when it fails to start.
    recent: Mutex<VecDeque<String>>,
}

impl Child {
    fn failure(&self) -> Option<String> {
        let status = (*self.exited.borrow())?;
        let recent: Vec<String> = self.recent.lock().iter().cloned().collect();
        Some(format!(
            "it exited ({status}); its last lines:\n{}",
            recent.join("\n")
        ))
    }
}

impl Children {
    fn spawn(&mut self, plan: &ProcessPlan) -> anyhow::Result<Arc<Child>> {
        let exe = std::env::current_exe().context("cannot find the weft binary to start")?;
        let mut command = tokio::process::Command::new(exe);
        command
            .args(&plan.args)
            .env(
                "WEFT_LOG",
                std::env::var("WEFT_LOG").unwrap_or_else(|_| "warn".to_string()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: Ctrl-C reaches only the demo, which
            // stops the children in order (callers before callees).
            .process_group(0)
            .kill_on_drop(true);
        // SAFETY: prctl(2) is async-signal-safe and touches only the child.
        // If the demo dies without stopping its children, they get SIGTERM.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut process = command
            .spawn()
            .with_context(|| format!("cannot start {}", plan.name))?;
        let pid = process.id().context("the child has no pid")?;
        let (exit_tx, exited) = watch::channel(None);
        let child = Arc::new(Child {
            name: plan.name.clone(),
            pid,
            exited,
            recent: Mutex::new(VecDeque::new()),
        });
        if let Some(stderr) = process.stderr.take() {
            let child = child.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    eprintln!("[{}] {line}", child.name);
                    let mut recent = child.recent.lock();
                    if recent.len() == 20 {
                        recent.pop_front();
                    }
                    recent.push_back(line);
                }
            });
        }
        let exits = self.exit_tx.clone();
        let name = plan.name.clone();
        tokio::spawn(async move {
            let status = process.wait().await;
            if let Ok(status) = status {
                let _ = exit_tx.send(Some(status));
                let _ = exits.send((name, status));
            }
        });
        self.started.push(child.clone());
        Ok(child)
    }

    /// The next child to exit.
    async fn next_exit(&mut self) -> (String, ExitStatus) {
        match self.exits.recv().await {
            Some(exit) => exit,
            // Never: `self` holds a sender.
            None => std::future::pending().await,
        }
    }

    /// SIGTERM to each, the last started first, so nobody loses a callee
    /// while requests are still flowing; SIGKILL after a grace period.
    async fn stop_all(&mut self) {
        for child in self.started.drain(..).rev() {
            let mut exited = child.exited.clone();
            if exited.borrow().is_some() {
                continue;
            }
            // SAFETY: kill(2) on our own child's pid, which its waiter task has not reaped yet.
            unsafe { libc::kill(child.pid as i32, libc::SIGTERM) };
            let stopped =
                tokio::time::timeout(Duration::from_secs(15), exited.wait_for(Option::is_some))
                    .await
                    .is_ok();
            if !stopped {
                tracing::warn!(process = %child.name, "did not stop within 15 s; killing it");
                // SAFETY: as above.
                unsafe { libc::kill(child.pid as i32, libc::SIGKILL) };
                let _ = exited.wait_for(Option::is_some).await;
            }
        }
    }
}
