//! `weft gateway`: the API gateway data plane, its Admin API, and the
//! signals that reload (SIGHUP) or stop (SIGTERM, SIGINT) it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use weft_gateway::{Gateway, GatewayConfig};

use crate::serve::{bind, bind_incoming, listener_tls, ShutdownSignals};

#[derive(Debug, Args)]
pub struct GatewayArgs {
    /// Declarative configuration (YAML): services, routes, upstreams, consumers, plugins.
    #[arg(long, short, env = "WEFT_GATEWAY_CONFIG")]
    config: PathBuf,
    /// Proxy listen address (HTTP/1.1 and HTTP/2 cleartext).
    #[arg(long, env = "WEFT_GATEWAY_PROXY_ADDR", default_value = "0.0.0.0:8000")]
    proxy_addr: SocketAddr,
    /// HTTPS proxy listen address, serving the configuration's `certificates`
    /// [default: 0.0.0.0:8443 when there are certificates, else none]
    #[arg(long, env = "WEFT_GATEWAY_PROXY_TLS_ADDR")]
    proxy_tls_addr: Option<SocketAddr>,
    /// Admin API and /metrics listen address; keep it private.
    #[arg(
        long,
        env = "WEFT_GATEWAY_ADMIN_ADDR",
        default_value = "127.0.0.1:8001"
    )]
    admin_addr: SocketAddr,
    /// PEM certificate (chain) for TLS on the Admin API; reloaded when it changes
    #[arg(
        long,
        env = "WEFT_GATEWAY_ADMIN_TLS_CERT_FILE",
        value_name = "FILE",
        requires = "admin_tls_key_file"
    )]
    admin_tls_cert_file: Option<PathBuf>,
    /// PEM private key for the Admin API's certificate
    #[arg(
        long,
        env = "WEFT_GATEWAY_ADMIN_TLS_KEY_FILE",
        value_name = "FILE",
        requires = "admin_tls_cert_file"
    )]
    admin_tls_key_file: Option<PathBuf>,
    /// OTLP/gRPC endpoint for the gateway's spans and access logs (overrides
    /// `telemetry.otlp_endpoint` in the file), e.g. http://127.0.0.1:4317.
    #[arg(long, env = "WEFT_GATEWAY_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Threads serving proxy connections, each with its own event loop (like
    /// nginx's worker processes) [default: one per core]
    #[arg(long, env = "WEFT_GATEWAY_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// How long in-flight requests may take to finish at shutdown.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    shutdown_grace: Duration,
}

pub async fn run(args: GatewayArgs) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot handle SIGHUP")?;
    let mut config = GatewayConfig::load(&args.config)
        .with_context(|| format!("invalid gateway configuration {}", args.config.display()))?;
    if let Some(endpoint) = args.otlp_endpoint {
        config.telemetry.otlp_endpoint = Some(endpoint);
    }
    let exporting = config.telemetry.otlp_endpoint.clone();
    let workers = args
        .workers
        .map_or_else(weft_proxy::default_worker_count, usize::from);
    let gateway = Gateway::new(config, Some(args.config.clone()), workers)?;
    let proxy = bind(args.proxy_addr, "the gateway proxy").await?;
    let proxy_tls_addr = match (args.proxy_tls_addr, gateway.serves_https()) {
        (addr, true) => Some(addr.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 8443)))),
        (Some(_), false) => anyhow::bail!(
            "--proxy-tls-addr needs certificates: add a `certificates` section to {}",
            args.config.display()
        ),
        (None, false) => None,
    };
    let proxy_tls = match proxy_tls_addr {
        Some(addr) => Some(bind(addr, "the gateway HTTPS proxy").await?),
        None => None,
    };
    let admin_tls = listener_tls(
        args.admin_tls_cert_file.as_deref(),
        args.admin_tls_key_file.as_deref(),
        "the gateway Admin API",
    )?;
    let admin = bind_incoming(
        args.admin_addr,
        "the gateway Admin API",
        admin_tls.as_ref().map(|(tls, _)| tls),
    )
    .await?;
    let proxy_tls_shown = match &proxy_tls {
        Some(listener) => listener.local_addr()?.to_string(),
        None => "-".to_string(),
    };
    tracing::info!(
        proxy = %proxy.local_addr()?,
        proxy_tls = %proxy_tls_shown,
        admin = %admin.local_addr()?,
        admin_tls = admin_tls.is_some(),
        workers,
        otlp = exporting.as_deref().unwrap_or("-"),
        config = %args.config.display(),
        "weft gateway listening"
    );
    let reloader = gateway.clone();
    let shutdown = async move {
        loop {
            tokio::select! {
                signal = signals.recv() => {
                    tracing::info!(signal, "shutting down: finishing in-flight requests");
                    return;
                }
                _ = hangups.recv() => match reloader.reload() {
                    Ok(()) => tracing::info!("SIGHUP: configuration reloaded"),
                    Err(e) => tracing::error!(error = %e, "SIGHUP: configuration rejected; the running one stays"),
                },
            }
        }
    };
    gateway
        .serve(proxy, proxy_tls, admin, shutdown, args.shutdown_grace)
        .await?;
    tracing::info!("gateway stopped");
    Ok(())
}
