//! `weft serve`, `weft collector` and `weft query`: bind the listeners, run
//! until SIGTERM or SIGINT, then refuse new exports, finish those in flight,
//! flush everything to Parquet (roles that write), stop the listeners and
//! return.

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_access::tls::{Incoming, ServerTls};
use weft_access::{Authenticator, BackgroundTask, Role as Access};
use weft_collector::{flight, grpc, http, Ingest, IngestMetrics, MetricsEndpoint, StoreCollector};
use weft_query::{QueryEngines, QueryError, SnapshotSource, TenantSources};
use weft_store::{StoreReader, TenantId, TenantStores};

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Collector plus the query API port.
    Serve,
    /// Only the OTLP receivers.
    Collector,
}

fn query_engines(config: &Config, sources: TenantSources) -> anyhow::Result<Arc<QueryEngines>> {
    let mut engines = QueryEngines::new(sources, config.query_config())
        .context("cannot start the query engine")?;
    if let (Some(scheduler), Some(storage)) =
        (&config.query.ballista_scheduler, &config.store.storage)
    {
        tracing::info!(scheduler, "SQL statements run on a Ballista cluster");
        engines = engines.with_cluster(weft_query::ClusterConfig {
            scheduler: scheduler.clone(),
            storage: storage.clone(),
        });
    }
    Ok(Arc::new(engines))
}

/// Loads the credentials and keeps them current until the returned guard
/// is dropped; warns when anyone could reach weft from the network.
fn authenticator(config: &Config) -> anyhow::Result<(Arc<Authenticator>, Option<BackgroundTask>)> {
    let auth = Authenticator::new(config.auth_config())?;
    for warning in config.exposure_warnings() {
        tracing::warn!("{warning}");
    }
    let watcher = auth.watch();
    Ok((auth, watcher))
}

/// A listener's TLS setup, kept in step with its files while the task lives.
pub(crate) type WatchedTls = (Arc<ServerTls>, BackgroundTask);

fn watched_tls(files: weft_access::tls::TlsFiles, what: &str) -> anyhow::Result<WatchedTls> {
    let tls = ServerTls::load(files, &[b"h2", b"http/1.1"])
        .with_context(|| format!("cannot set up TLS for {what}"))?;
    let watcher = tls.watch();
    Ok((tls, watcher))
}

/// Loads the TLS setup of one HTTP listener from `cert_file` and
/// `key_file` (both or neither).
pub(crate) fn listener_tls(
    cert_file: Option<&Path>,
    key_file: Option<&Path>,
    what: &str,
) -> anyhow::Result<Option<WatchedTls>> {
    match (cert_file, key_file) {
        (None, None) => Ok(None),
        (Some(cert_file), Some(key_file)) => {
            let files = weft_access::tls::TlsFiles {
                cert_file: cert_file.to_path_buf(),
                key_file: key_file.to_path_buf(),
                client_ca_file: None,
            };
            watched_tls(files, what).map(Some)
        }
        _ => anyhow::bail!("TLS for {what} needs both a certificate file and a key file"),
    }
}

/// Binds `addr` for `what`, behind `tls` when it is given.
pub(crate) async fn bind_incoming(
    addr: SocketAddr,
    what: &'static str,
    tls: Option<&Arc<ServerTls>>,
) -> anyhow::Result<Incoming> {
    Ok(Incoming::new(bind(addr, what).await?, tls, what)?)
}

/// The query API, UI and `extra` routes for readers of a tenant, plus
/// `/metrics` for admins.
fn api_router(
    engines: Arc<QueryEngines>,
    extra: axum::Router,
    metrics: Option<&MetricsEndpoint>,
    auth: &Arc<Authenticator>,
) -> axum::Router {
    let api = weft_query::api::router(engines)
        .merge(weft_ui::router())
        .merge(extra);
    let router = weft_access::http::require(api, auth.clone(), Access::Read);
    match metrics {
        Some(metrics) => router.merge(weft_access::http::require(
            metrics.router(),
            auth.clone(),
            Access::Admin,
        )),
        None => router,
    }
}

/// `weft query`: the query API alone, over a data directory that a separate
/// `weft collector` writes (it never takes the directory's lock), or over the
/// object store that any number of collectors write.
pub async fn run_query(config: Config) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    let (auth, _watcher) = authenticator(&config)?;
    let root = config.data_dir.clone();
    let storage = config.object_storage()?;
    let live = Arc::new(config.live_reader()?);
    let engines = query_engines(
        &config,
        Box::new(move |tenant: &TenantId| {
            let dir = tenant.data_dir(&root);
            let reader = match &storage {
                Some(storage) => {
                    StoreReader::with_storage(dir, storage).with_live(tenant, live.clone())
                }
                None => StoreReader::new(dir),
            };
            Ok(Arc::new(reader) as Arc<dyn SnapshotSource>)
        }),
    )?;
    let api_tls = config
        .tls_files()
        .map(|(_, api)| watched_tls(api, "the HTTP API"))
        .transpose()?;
    let listener =
        bind_incoming(config.http.addr, "HTTP API", api_tls.as_ref().map(|t| &t.0)).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let mut server = tokio::spawn(serve_http(
        listener,
        api_router(engines, axum::Router::new(), None, &auth),
        async move {
            let mut stopped = stopped;
            let _ = stopped.wait_for(|s| *s).await;
        },
        "HTTP API",
    ));
    tracing::info!(http = %addr, data_dir = %config.data_dir.display(), "weft query listening");
    tokio::select! {
        signal = signals.recv() => tracing::info!(signal, "shutting down"),
        result = &mut server => return result.context("server task panicked")?,
    }
    let _ = stop.send(true);
    if tokio::time::timeout(config.shutdown_grace, &mut server)
        .await
        .is_err()
    {
        server.abort();
    }
    Ok(())
}

pub async fn run(config: Config, role: Role) -> anyhow::Result<()> {
    let mut signals = ShutdownSignals::install()?;
    run_until(config, role, axum::Router::new(), async move {
        signals.recv().await
    })
    .await
}

/// Runs until `shutdown` completes (its value names the reason in the log).
/// `extra` routes are served on the API port beside the query API and the UI.
pub async fn run_until(
    config: Config,
    role: Role,
    extra: axum::Router,
    shutdown: impl Future<Output = &'static str>,
) -> anyhow::Result<()> {
    let (auth, _watcher) = authenticator(&config)?;
    let store_config = weft_store::StoreConfig {
        storage: config.object_storage()?,
        ..config.store_config()
    };
    let stores = Arc::new(TenantStores::open(store_config).with_context(|| {
        format!(
            "cannot open the data directory {}",
            config.data_dir.display()
        )
    })?);
    let mut registry = Registry::default();
    let ingest_metrics = IngestMetrics::register(&mut registry);
    StoreCollector::register(&mut registry, stores.clone());
    let metrics = MetricsEndpoint::new(registry);
    let ingest = Arc::new(Ingest::new(
        stores.clone(),
        config.ingest_limits(),
        config.quotas(),
        ingest_metrics,
    ));

    let tls_files = config.tls_files();
    let otlp_tls = tls_files
        .as_ref()
        .map(|(otlp, _)| watched_tls(otlp.clone(), "the OTLP receivers"))
        .transpose()?;
    let otlp_server_tls = otlp_tls.as_ref().map(|t| &t.0);
    let grpc_listener = bind_incoming(config.otlp.grpc_addr, "OTLP/gRPC", otlp_server_tls).await?;
    let http_listener = bind_incoming(config.otlp.http_addr, "OTLP/HTTP", otlp_server_tls).await?;
    let (api_listener, _api_tls) = match role {
        Role::Serve => {
            let api_tls = tls_files
                .map(|(_, api)| watched_tls(api, "the HTTP API"))
                .transpose()?;
            let listener =
                bind_incoming(config.http.addr, "HTTP API", api_tls.as_ref().map(|t| &t.0)).await?;
            (Some(listener), api_tls)
        }
        Role::Collector => (None, None),
    };
    let grpc_addr = grpc_listener.local_addr()?;
    let http_addr = http_listener.local_addr()?;
    let api_addr = api_listener
        .as_ref()
        .map(Incoming::local_addr)
        .transpose()?;

    let (stop, stopped) = watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let mut servers = tokio::task::JoinSet::new();
    {
        let mut routes = grpc::routes(
            ingest.clone(),
            weft_access::grpc::Interceptor::new(auth.clone(), Access::Ingest),
        );
        if config.store.storage.is_some() {
            routes = routes.add_service(flight::service(
                stores.clone(),
                weft_access::grpc::Interceptor::new(auth.clone(), Access::Read),
            ));
        }
        let admit = grpc::AdmitLayer::new(ingest.clone());
        let shutdown = until_stopped();
        servers.spawn(async move {
            let server = tonic::transport::Server::builder()
                .layer(admit)
                .layer(tower::util::MapResponseLayer::new(
                    grpc::otlp_status_codes::<tonic::body::Body>,
                ))
                .add_routes(routes);
            match grpc_listener {
                Incoming::Plain(listener) => {
                    server
                        .serve_with_incoming_shutdown(
                            tokio_stream::wrappers::TcpListenerStream::new(listener),
                            shutdown,
                        )
                        .await
                }
                Incoming::Tls(listener) => {
                    server
                        .serve_with_incoming_shutdown(listener.into_stream(), shutdown)
                        .await
                }
            }
            .context("OTLP/gRPC server failed")
        });
    }
    let otlp_http =
        weft_access::http::require(http::router(ingest.clone()), auth.clone(), Access::Ingest)
            .merge(weft_access::http::require(
                metrics.router(),
                auth.clone(),
                Access::Admin,
            ));
    servers.spawn(serve_http(
        http_listener,
        otlp_http,
        until_stopped(),
        "OTLP/HTTP",
    ));
    if let Some(listener) = api_listener {
        let tenant_stores = stores.clone();
        let engines = query_engines(
            &config,
            Box::new(move |tenant: &TenantId| {
                let store = tenant_stores
                    .get(tenant)
                    .map_err(|e| QueryError::Internal(e.to_string()))?;
                Ok(store as Arc<dyn SnapshotSource>)
            }),
        )?;
        let api = api_router(engines, extra, Some(&metrics), &auth);
        servers.spawn(serve_http(listener, api, until_stopped(), "HTTP API"));
    }
    if config.store.storage.is_some() {
        let url = config.advertise_url(grpc_addr);
        let advertised = {
            let (stores, url) = (stores.clone(), url.clone());
            tokio::task::spawn_blocking(move || stores.advertise_live(&url)).await?
        };
        advertised.with_context(|| format!("cannot name {url} in the catalogs as where this collector serves its unflushed rows"))?;
        tracing::info!(%url, "queriers elsewhere read the unflushed rows here (Arrow Flight)");
    }
    tracing::info!(
        tls = otlp_tls.is_some(),
        otlp_grpc = %grpc_addr,
        otlp_http = %http_addr,
        http = %api_addr.map_or_else(|| "-".to_string(), |a| a.to_string()),
        data_dir = %config.data_dir.display(),
        "weft listening"
    );

    let failure = tokio::select! {
        signal = shutdown => {
            tracing::info!(signal, "shutting down: finishing in-flight requests, then flushing to Parquet");
            None
        }
        Some(result) = servers.join_next() => Some(result.context("server task panicked").and_then(|r| r).err().unwrap_or_else(|| anyhow::anyhow!("a server stopped unexpectedly"))),
    };
    // The listeners stay up through the final flush: new exports are refused
    // (retryably) while those admitted are stored, and queriers elsewhere keep
    // reading the unflushed rows over Flight until the flush has committed
    // them, so they never miss a row while this collector stops.
    if tokio::time::timeout(config.shutdown_grace, ingest.close())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?config.shutdown_grace, "exports still being stored after the shutdown grace period; flushing what is acknowledged");
    }
    let flushed = stores.shutdown().await;
    let _ = stop.send(true);
    let drained = tokio::time::timeout(config.shutdown_grace, async {
        while let Some(result) = servers.join_next().await {
            if let Err(e) = result.context("server task panicked").and_then(|r| r) {
                tracing::error!(error = %format!("{e:#}"), "server stopped with an error");
            }
        }
    })
    .await;
    if drained.is_err() {
        // Idle keep-alive connections would otherwise hold shutdown open forever.
        tracing::warn!(grace = ?config.shutdown_grace, "connections still open after the shutdown grace period; closing them");
        servers.shutdown().await;
    }
    flushed.context(
        "final flush failed; the data stays in the WAL and is replayed at the next start",
    )?;
    tracing::info!("all data flushed; bye");
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(crate) async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for {what} on {addr}"))
}

async fn serve_http(
    listener: Incoming,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    what: &'static str,
) -> anyhow::Result<()> {
    // The peer address lets authentication throttle sources that keep failing.
    listener
        .serve(router, shutdown)
        .await
        .with_context(|| format!("{what} server failed"))
}

/// SIGTERM and SIGINT, listened for from start-up on, so a signal that
/// arrives while weft is still starting is not the default "terminate now".
pub(crate) struct ShutdownSignals {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl ShutdownSignals {
    pub(crate) fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            terminate: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            interrupt: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    pub(crate) async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        }
    }
}
