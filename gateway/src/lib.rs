//! weft's API gateway: the data plane a platform team puts in front of its
//! services, configured like Kong (services, routes, upstreams, consumers and
//! plugins in one declarative YAML file) and tracing every request.
//!
//! A request is matched to a [route](router), runs through that route's
//! stack of [plugins] (each a tower layer: auth, rate limits, CORS,
//! transforms…), and reaches the [proxy](proxy) service, which balances it
//! over the service's [upstream] targets with retries and timeouts. Each
//! request gets a SERVER span, each upstream attempt a CLIENT span, and each
//! answer an access-log record, exported over OTLP (`weft_proxy::Telemetry`) without
//! ever blocking the proxy. The [admin] API shows the configuration and
//! target health, replaces the configuration, and serves `/metrics`.
//!
//! Not here: TLS termination and TLS to upstreams (issue 10), a database-backed
//! configuration (the YAML file, or `POST /config`, is the source of truth).

mod admin;
pub mod config;
mod health;
mod http;
mod metrics;
mod plugins;
mod proxy;
mod router;
mod server;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use crate::config::{ConfigError, GatewayConfig};
use crate::server::Shared;
pub use weft_proxy::TelemetryError;

/// A running gateway's configuration and shared state.
#[derive(Clone)]
pub struct Gateway {
    shared: Arc<Shared>,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Telemetry(#[from] TelemetryError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Gateway {
    /// Sets up telemetry and applies `config`; `config_path` is what reloads re-read.
    /// Call inside the tokio runtime.
    pub fn new(config: GatewayConfig, config_path: Option<PathBuf>) -> Result<Self, GatewayError> {
        let telemetry = weft_proxy::Telemetry::start(&config.telemetry, "weft-gateway")?;
        let shared = Arc::new(Shared::new(
            telemetry,
            config.telemetry.clone(),
            config_path,
        ));
        shared.apply(config)?;
        Ok(Self { shared })
    }

    /// Re-reads the configuration file; on error the running configuration stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.shared.reload()
    }

    /// Serves the proxy and the Admin API until `shutdown` resolves, then
    /// drains connections for up to `grace` and flushes telemetry.
    pub async fn serve(
        self,
        proxy: tokio::net::TcpListener,
        admin: weft_access::tls::Incoming,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) {
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let admin_router = admin::router(self.shared.clone());
        let mut admin_stop = stop_rx.clone();
        let admin_task = tokio::spawn(async move {
            let serve = admin.serve(admin_router, async move {
                let _ = admin_stop.wait_for(|stop| *stop).await;
            });
            if let Err(e) = serve.await {
                tracing::warn!(error = %e, "admin API stopped");
            }
        });
        let mut proxy_stop = stop_rx;
        let proxy_task = tokio::spawn(server::serve_proxy(
            self.shared.clone(),
            proxy,
            async move {
                let _ = proxy_stop.wait_for(|stop| *stop).await;
            },
            grace,
        ));
        shutdown.await;
        let _ = stop_tx.send(true);
        let _ = proxy_task.await;
        let _ = admin_task.await;
        // Swap in an empty runtime so health checkers stop, then flush telemetry.
        self.shared
            .runtime
            .store(Arc::new(server::Runtime::empty()));
        self.shared.telemetry.shutdown(Duration::from_secs(5)).await;
    }
}
