//! `weft mesh control-plane` and `weft mesh sidecar`: the service mesh's
//! two processes, and the signals that stop them (SIGTERM, SIGINT).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use weft_mesh::{AppProtocol, ControlPlane, MeshConfig, Sidecar, SidecarOptions};

use crate::serve::{bind_incoming, listener_tls, ShutdownSignals};

#[derive(Debug, Args)]
pub struct MeshArgs {
    #[command(subcommand)]
    command: MeshCommand,
}

#[derive(Debug, Subcommand)]
enum MeshCommand {
    /// Run the control plane: the mesh CA, the sidecar registry and the policies (port 5681).
    ControlPlane(ControlPlaneArgs),
    /// Run a sidecar beside one service: mTLS inbound in front of the app, outbound listeners for its calls.
    Sidecar(SidecarArgs),
}

#[derive(Debug, Args)]
struct ControlPlaneArgs {
    /// Mesh name, CA, certificate lifetime and policies (YAML); watched for
    /// policy changes. Without it: mesh `default`, a generated CA, no policies.
    #[arg(long, short, env = "WEFT_MESH_CONFIG")]
    config: Option<PathBuf>,
    /// API listen address (sidecars, `/dataplanes`, `/policies`, `/metrics`).
    #[arg(long, env = "WEFT_MESH_ADDR", default_value = "127.0.0.1:5681")]
    addr: SocketAddr,
    /// Where a generated CA is kept (overrides `state_dir` in the file).
    #[arg(long, env = "WEFT_MESH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// PEM certificate (chain) for TLS on the API; sidecars then use an
    /// https:// --control-plane and --control-plane-ca. Reloaded when it changes.
    #[arg(
        long,
        env = "WEFT_MESH_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "tls_key_file"
    )]
    tls_cert_file: Option<PathBuf>,
    /// PEM private key for the API's certificate
    #[arg(
        long,
        env = "WEFT_MESH_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "tls_cert_file"
    )]
    tls_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct SidecarArgs {
    /// The service this sidecar stands beside; its identity is spiffe://<mesh>/<service>.
    #[arg(long, env = "WEFT_SIDECAR_SERVICE")]
    service: String,
    /// mTLS listener other sidecars call.
    #[arg(long, env = "WEFT_SIDECAR_INBOUND")]
    inbound: SocketAddr,
    /// The app's own address (plain text, on loopback).
    #[arg(long, env = "WEFT_SIDECAR_APP")]
    app: SocketAddr,
    /// What the app speaks: http, http2 (h2c, e.g. gRPC) or tcp.
    #[arg(long, default_value = "http", env = "WEFT_SIDECAR_APP_PROTOCOL")]
    app_protocol: AppProtocol,
    /// Plain listeners for the app's calls: service=host:port, comma-separated.
    #[arg(long, value_delimiter = ',', value_parser = parse_outbound, env = "WEFT_SIDECAR_OUTBOUND")]
    outbound: Vec<(String, SocketAddr)>,
    /// Control plane URL.
    #[arg(
        long,
        default_value = "http://127.0.0.1:5681",
        env = "WEFT_SIDECAR_CONTROL_PLANE"
    )]
    control_plane: String,
    /// PEM CA certificate(s) that issued an https:// control plane's certificate.
    #[arg(long, env = "WEFT_SIDECAR_CONTROL_PLANE_CA", value_name = "FILE")]
    control_plane_ca: Option<PathBuf>,
    /// Where other sidecars reach the inbound listener (default: --inbound).
    #[arg(long, env = "WEFT_SIDECAR_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// Admin API and /metrics (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:0", env = "WEFT_SIDECAR_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// How long in-flight requests may take to finish at shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

fn parse_outbound(text: &str) -> Result<(String, SocketAddr), String> {
    let (service, addr) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not service=host:port"))?;
    let addr = addr
        .parse()
        .map_err(|e| format!("{text:?}: {addr:?} is not host:port ({e})"))?;
    Ok((service.to_string(), addr))
}

pub async fn run(args: MeshArgs) -> anyhow::Result<()> {
    match args.command {
        MeshCommand::ControlPlane(args) => control_plane(args).await,
        MeshCommand::Sidecar(args) => sidecar(args).await,
    }
}

async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let mut config = match &args.config {
        Some(path) => MeshConfig::load(path)
            .with_context(|| format!("invalid mesh configuration {}", path.display()))?,
        None => MeshConfig::default(),
    };
    if let Some(dir) = args.state_dir {
        config.state_dir = dir;
    }
    let mesh = config.mesh.clone();
    let control_plane = ControlPlane::new(config, args.config.clone())?;
    let tls = listener_tls(
        args.tls_cert_file.as_deref(),
        args.tls_key_file.as_deref(),
        "the mesh control plane",
    )?;
    let listener = bind_incoming(
        args.addr,
        "the mesh control plane",
        tls.as_ref().map(|(tls, _)| tls),
    )
    .await?;
    tracing::info!(addr = %listener.local_addr()?, tls = tls.is_some(), %mesh, "weft mesh control-plane listening");
    let shutdown = async move {
        let signal = signals.recv().await;
        tracing::info!(signal, "shutting down");
    };
    control_plane.serve(listener, shutdown).await?;
    tracing::info!("control plane stopped");
    Ok(())
}

async fn sidecar(args: SidecarArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let options = SidecarOptions {
        service: args.service,
        control_plane: args.control_plane,
        control_plane_ca: args
            .control_plane_ca
            .map(|path| {
                std::fs::read(&path)
                    .with_context(|| format!("cannot read --control-plane-ca {}", path.display()))
            })
            .transpose()?,
        inbound: args.inbound,
        advertise: args.advertise,
        app: args.app,
        app_protocol: args.app_protocol,
        outbound: args.outbound,
        admin: args.admin_addr,
    };
    let sidecar = tokio::select! {
        started = Sidecar::start(options) => started?,
        signal = signals.recv() => {
            tracing::info!(signal, "stopped before the control plane answered");
            return Ok(());
        }
    };
    let outbound: Vec<String> = sidecar
        .outbound_addrs()
        .into_iter()
        .map(|(service, addr)| format!("{service}={addr}"))
        .collect();
    tracing::info!(
        identity = %sidecar.spiffe_id(),
        inbound = %sidecar.inbound_addr()?,
        admin = %sidecar.admin_addr()?,
        outbound = %outbound.join(","),
        "weft mesh sidecar listening"
    );
    let shutdown = async move {
        let signal = signals.recv().await;
        tracing::info!(signal, "shutting down: finishing in-flight requests");
    };
    sidecar.run(shutdown, args.shutdown_grace).await;
    tracing::info!("sidecar stopped");
    Ok(())
}
