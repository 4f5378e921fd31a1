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
//! With `certificates` in the configuration a second listener speaks HTTPS,
//! picking the certificate by SNI; `https://` services reach their targets
//! over verified TLS ([tls]), with a client certificate when they require one.
//!
//! Not here: a database-backed configuration (the YAML file, or `POST
//! /config`, is the source of truth).

mod admin;
pub mod config;
mod health;
mod http;
mod metrics;
mod plugins;
mod proxy;
mod router;
mod server;
mod tls;
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
    #[error("cannot start the proxy's worker threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

impl Gateway {
    /// Sets up telemetry and applies `config`; `config_path` is what reloads re-read.
    /// Call inside the tokio runtime.
    /// The proxy listeners are served on `workers` threads (see `weft_proxy::Workers`).
    pub fn new(
        config: GatewayConfig,
        config_path: Option<PathBuf>,
        workers: usize,
    ) -> Result<Self, GatewayError> {
        let telemetry = weft_proxy::Telemetry::start(&config.telemetry, "weft-gateway")?;
        let shared = Arc::new(Shared::new(
            telemetry,
            config.telemetry.clone(),
            config_path,
            workers.max(1),
        ));
        shared.apply(config)?;
        Ok(Self { shared })
    }

    /// Whether the configuration has certificates for an HTTPS listener.
    pub fn serves_https(&self) -> bool {
        !self.shared.runtime.load().certificates.is_empty()
    }

    /// Re-reads the configuration file; on error the running configuration stays.
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.shared.reload()
    }

    /// Serves the proxy (on the gateway's worker threads) and the Admin API
    /// until `shutdown` resolves, then drains connections for up to `grace`
    /// and flushes telemetry.
    pub async fn serve(
        self,
        proxy: tokio::net::TcpListener,
        proxy_tls: Option<tokio::net::TcpListener>,
        admin: weft_access::tls::Incoming,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
        grace: Duration,
    ) -> Result<(), GatewayError> {
        let workers = Arc::new(
            weft_proxy::Workers::start(self.shared.workers, "gateway")
                .map_err(GatewayError::Workers)?,
        );
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
        let mut proxies = Vec::new();
        let tls = crate::tls::proxy_server_config(self.shared.runtime.clone());
        self.shared
            .serving_https
            .store(proxy_tls.is_some(), std::sync::atomic::Ordering::Relaxed);
        for (listener, tls) in
            std::iter::once((proxy, None)).chain(proxy_tls.map(|listener| (listener, Some(tls))))
        {
            let mut stop = stop_rx.clone();
            proxies.push(tokio::spawn(server::serve_proxy(
                self.shared.clone(),
                workers.clone(),
                listener,
                tls,
                async move {
                    let _ = stop.wait_for(|stop| *stop).await;
                },
                grace,
            )));
        }
        shutdown.await;
        let _ = stop_tx.send(true);
        for proxy in proxies {
            let _ = proxy.await;
        }
        let _ = admin_task.await;
        if let Ok(workers) = Arc::try_unwrap(workers) {
            workers.stop().await;
        }
        // Swap in an empty runtime so health checkers stop, then flush telemetry.
        self.shared
            .runtime
            .store(Arc::new(server::Runtime::empty()));
        self.shared.telemetry.shutdown(Duration::from_secs(5)).await;
        Ok(())
    }
}
