//! `weft mesh control-plane` and `weft mesh sidecar`: the service mesh's
//! two processes, and the signals that stop them (SIGTERM, SIGINT); `weft
//! mesh token` manages the tokens sidecars present to the control plane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use weft_mesh::tokens::{TokenFile, TokenScope};
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
    /// Create, list and revoke the tokens sidecars (and admins) present to the control plane.
    Token(TokenArgs),
}

/// Which control plane: the one run with the same --config/--state-dir,
/// whose state dir holds `tokens.toml`.
#[derive(Debug, Clone, Args)]
struct MeshStateLocation {
    /// The control plane's mesh.yaml (for its state_dir)
    #[arg(long, short, env = "WEFT_MESH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// The control plane's state dir (overrides the file's)
    #[arg(long, env = "WEFT_MESH_STATE_DIR", value_name = "DIR")]
    state_dir: Option<PathBuf>,
}

impl MeshStateLocation {
    /// The control plane's configuration with the flags applied.
    fn config(&self) -> anyhow::Result<MeshConfig> {
        let mut config = match &self.config {
            Some(path) => MeshConfig::load(path)
                .with_context(|| format!("invalid mesh configuration {}", path.display()))?,
            None => MeshConfig::default(),
        };
        if let Some(dir) = &self.state_dir {
            config.state_dir = dir.clone();
        }
        Ok(config)
    }

    fn tokens_file(&self) -> anyhow::Result<PathBuf> {
        Ok(TokenFile::path_in(&self.config()?.state_dir))
    }
}

#[derive(Debug, Args)]
struct TokenArgs {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (only this once; the control plane keeps its hash)
    Create {
        /// A dataplane token: sidecars of this service only
        #[arg(long, required_unless_present = "admin", conflicts_with = "admin")]
        service: Option<String>,
        /// An admin token: may change policies over the API
        #[arg(long)]
        admin: bool,
        /// What the token is for
        #[arg(long, default_value = "")]
        name: String,
        /// How long it is valid, e.g. 720h [default: until revoked]
        #[arg(long, value_parser = humantime::parse_duration)]
        valid_for: Option<Duration>,
        #[command(flatten)]
        location: MeshStateLocation,
    },
    /// List the tokens (ids, services, expiry; never the tokens themselves)
    List {
        #[command(flatten)]
        location: MeshStateLocation,
    },
    /// Revoke a token by its id; the control plane refuses it within a second
    Revoke {
        id: String,
        #[command(flatten)]
        location: MeshStateLocation,
    },
}

#[derive(Debug, Args)]
struct ControlPlaneArgs {
    /// Mesh name, CA, certificate lifetime, authentication and policies
    /// (YAML); watched for policy changes. Without it: mesh `default`, a
    /// generated CA, no policies.
    #[arg(long, short, env = "WEFT_MESH_CONFIG")]
    config: Option<PathBuf>,
    /// API listen address (sidecars, `/dataplanes`, `/policies`, `/metrics`).
    #[arg(long, env = "WEFT_MESH_ADDR", default_value = "127.0.0.1:5681")]
    addr: SocketAddr,
    /// Where a generated CA and the tokens are kept (overrides `state_dir` in the file).
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
    /// A file holding this service's dataplane token (`weft mesh token create --service …`).
    #[arg(long, env = "WEFT_SIDECAR_TOKEN_FILE", value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The dataplane token itself; better from the environment or
    /// --token-file, since a flag shows in `ps`.
    #[arg(
        long,
        env = "WEFT_SIDECAR_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// Where other sidecars reach the inbound listener (default: --inbound).
    #[arg(long, env = "WEFT_SIDECAR_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// The zone this instance runs in (e.g. eu-west-1a): calls go to sidecars
    /// of the same zone while there are any, to other zones when they fail.
    #[arg(long, env = "WEFT_SIDECAR_ZONE")]
    zone: Option<String>,
    /// Admin API and /metrics (port 0: any free port, printed at start).
    #[arg(long, default_value = "127.0.0.1:0", env = "WEFT_SIDECAR_ADMIN_ADDR")]
    admin_addr: SocketAddr,
    /// Threads serving the inbound and outbound connections, each with its
    /// own event loop [default: one per core]
    #[arg(long, env = "WEFT_SIDECAR_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
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
        MeshCommand::Token(args) => token(args),
    }
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    match args.command {
        TokenCommand::Create {
            service,
            admin: _,
            name,
            valid_for,
            location,
        } => {
            let path = location.tokens_file()?;
            let mut file = TokenFile::load(&path)?;
            let scope = service.map_or(TokenScope::Admin, TokenScope::Dataplane);
            let (entry, token) = file.create(scope.clone(), &name, valid_for)?;
            file.save(&path)?;
            let until = entry.expires.as_deref().unwrap_or("revoked");
            eprintln!(
                "created token {} ({scope}, valid until {until}) in {}; it is shown only now:",
                entry.id,
                path.display()
            );
            println!("{token}");
        }
        TokenCommand::List { location } => {
            let file = TokenFile::load(&location.tokens_file()?)?;
            println!(
                "{:<10} {:<10} {:<24} {:<22} {:<22} NAME",
                "ID", "KIND", "SERVICE", "CREATED", "EXPIRES"
            );
            for t in &file.tokens {
                let kind = format!("{:?}", t.kind).to_lowercase();
                println!(
                    "{:<10} {:<10} {:<24} {:<22} {:<22} {}",
                    t.id,
                    kind,
                    t.service.as_deref().unwrap_or("-"),
                    t.created,
                    t.expires.as_deref().unwrap_or("-"),
                    t.name
                );
            }
        }
        TokenCommand::Revoke { id, location } => {
            let path = location.tokens_file()?;
            let mut file = TokenFile::load(&path)?;
            if !file.revoke(&id) {
                anyhow::bail!("no token with id {id} in {}", path.display());
            }
            file.save(&path)?;
            eprintln!("revoked token {id}");
        }
    }
    Ok(())
}

async fn control_plane(args: ControlPlaneArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let config = MeshStateLocation {
        config: args.config.clone(),
        state_dir: args.state_dir.clone(),
    }
    .config()?;
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
    if tls.is_none() && !args.addr.ip().is_loopback() {
        tracing::warn!(addr = %args.addr, "the control plane listens beyond loopback without TLS: sidecars' tokens travel in clear text and the API can be tampered with on the way (--tls-cert-file/--tls-key-file)");
    }
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
        token: match (args.token, args.token_file) {
            (Some(token), _) => Some(token),
            (None, Some(path)) => Some(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("cannot read --token-file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        },
        inbound: args.inbound,
        advertise: args.advertise,
        zone: args.zone,
        app: args.app,
        app_protocol: args.app_protocol,
        outbound: args.outbound,
        admin: args.admin_addr,
        workers: args
            .workers
            .map_or_else(weft_proxy::default_worker_count, usize::from),
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
