//! The proxy listener and the configuration it serves.
//!
//! A configuration is compiled into a [`Runtime`] (routes with their plugin
//! stacks, upstreams with their health checkers) and swapped in atomically:
//! a request keeps the runtime it started with, so a reload never cuts one
//! short, and the old runtime (and its health checkers) goes away with its
//! last request.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::header::{HOST, USER_AGENT};
use http::StatusCode;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tower::Layer;
use weft_proxy::{method_name, PerWorker, Telemetry, Workers};

use crate::config::{ConfigError, GatewayConfig, TelemetryConfig, UpstreamProtocol};
use crate::health::HealthCheckers;
use crate::http::{
    gateway_response, AnsweredBy, Body, ClientConnection, ProxyRequest, ProxyResponse, ProxyService,
};
use crate::metrics::Metrics;
use crate::plugins::{self, AuthenticatedConsumer, Consumers};
use crate::proxy::{Forwarder, RequestSpan, UpstreamClient};
use crate::router::{Route, RouteTable};
use crate::tls::{Certificates, UpstreamTls};
use crate::upstream::Upstream;

/// One compiled configuration.
pub(crate) struct Runtime {
    pub(crate) config: GatewayConfig,
    pub(crate) routes: RouteTable,
    /// Declared upstreams, and one per service with a plain `host:port` URL
    /// (named after the service).
    pub(crate) upstreams: BTreeMap<String, Arc<Upstream>>,
    /// What the HTTPS proxy listener serves.
    pub(crate) certificates: Certificates,
    _health: HealthCheckers,
}

impl Runtime {
    /// An empty runtime, before the first configuration.
    pub(crate) fn empty() -> Self {
        Self {
            config: GatewayConfig::default(),
            routes: RouteTable::default(),
            upstreams: BTreeMap::new(),
            certificates: Certificates::default(),
            _health: HealthCheckers::default(),
        }
    }

    /// Compiles `config`; target health carries over from `previous`.
    fn build(
        config: GatewayConfig,
        shared: &Shared,
        previous: &Runtime,
    ) -> Result<Self, ConfigError> {
        let invalid = |at: String, reason: String| ConfigError::Invalid {
            at,
            reason,
            line: None,
        };
        let consumers = Arc::new(
            Consumers::new(&config.consumers).map_err(|r| invalid("consumers".into(), r))?,
        );
        let certificates =
            Certificates::load(&config.certificates).map_err(|(at, reason)| invalid(at, reason))?;
        let mut health = HealthCheckers::default();
        let mut upstreams = BTreeMap::new();
        for (i, declared) in config.upstreams.iter().enumerate() {
            let upstream = Arc::new(Upstream::new(
                declared,
                previous.upstreams.get(&declared.name).map(|u| &**u),
            ));
            health.watch(&upstream).map_err(|e| {
                invalid(format!("upstreams[{i}].healthchecks.active"), e.to_string())
            })?;
            upstreams.insert(declared.name.clone(), upstream);
        }
        let mut routes = Vec::new();
        for (i, service) in config.services.iter().enumerate() {
            let uri: http::Uri = service
                .url
                .parse()
                .map_err(|e| invalid(format!("services[{i}].url"), format!("{e}")))?;
            let host = uri.host().unwrap_or_default();
            let https = uri.scheme_str() == Some("https");
            let upstream = match (upstreams.get(host), uri.port_u16()) {
                (Some(declared), None) => declared.clone(),
                _ => {
                    let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
                    let upstream =
                        Arc::new(Upstream::single(&service.name, format!("{host}:{port}")));
                    upstreams.insert(service.name.clone(), upstream.clone());
                    upstream
                }
            };
            let (protocol, tls) = if https {
                let tls = UpstreamTls::of_service(service);
                (UpstreamProtocol::Https, Some(tls))
            } else {
                (service.protocol, None)
            };
            let clients = shared
                .client(service.connect_timeout, protocol, tls)
                .map_err(|e| invalid(format!("services[{i}]"), e.to_string()))?;
            let forwarder = Arc::new(Forwarder::new(
                service,
                upstream,
                clients,
                https,
                shared.telemetry.clone(),
            ));
            let proxy = ProxyService::new(tower::service_fn(move |request: ProxyRequest| {
                let forwarder = forwarder.clone();
                async move { Ok::<_, Infallible>(forwarder.forward(request).await) }
            }));
            for (j, route) in service.routes.iter().enumerate() {
                let at = format!("services[{i}].routes[{j}]");
                let layers = plugins::route_layers(
                    [&config.plugins, &service.plugins, &route.plugins],
                    &consumers,
                )
                .map_err(|r| invalid(format!("{at}.plugins"), r))?;
                let stack = layers
                    .into_iter()
                    .rev()
                    .fold(proxy.clone(), |next, (_, layer)| layer.layer(next));
                routes.push(Route::new(&service.name, route, stack).map_err(|r| invalid(at, r))?);
            }
        }
        Ok(Self {
            config,
            routes: RouteTable::new(routes),
            upstreams,
            certificates,
            _health: health,
        })
    }
}

/// What makes two services' connections interchangeable: connect timeout,
/// protocol and TLS settings.
type ClientKey = (Duration, UpstreamProtocol, Option<UpstreamTls>);

/// What the proxy, the admin API and reloads share.
pub(crate) struct Shared {
    pub(crate) runtime: Arc<ArcSwap<Runtime>>,
    pub(crate) telemetry: Arc<Telemetry>,
    /// The settings `telemetry` was started with; a reload cannot change them.
    started_telemetry: TelemetryConfig,
    pub(crate) metrics: Metrics,
    /// How many workers serve the proxy listeners (`weft_proxy::Workers`).
    pub(crate) workers: usize,
    /// Connection pools, one per worker, kept across reloads.
    clients: Mutex<HashMap<ClientKey, Arc<PerWorker<UpstreamClient>>>>,
    /// One reload at a time.
    reloading: Mutex<()>,
    /// Set once the HTTPS listener is open: from then on a configuration
    /// needs certificates.
    pub(crate) serving_https: std::sync::atomic::AtomicBool,
    pub(crate) config_path: Option<std::path::PathBuf>,
}

impl Shared {
    pub(crate) fn new(
        telemetry: Telemetry,
        started_telemetry: TelemetryConfig,
        config_path: Option<std::path::PathBuf>,
        workers: usize,
    ) -> Self {
        let runtime = Arc::new(ArcSwap::from_pointee(Runtime::empty()));
        let telemetry = Arc::new(telemetry);
        Self {
            metrics: Metrics::new(runtime.clone(), telemetry.counters().clone()),
            runtime,
            telemetry,
            started_telemetry,
            workers,
            clients: Mutex::new(HashMap::new()),
            reloading: Mutex::new(()),
            serving_https: std::sync::atomic::AtomicBool::new(false),
            config_path,
        }
    }

    fn client(
        &self,
        connect_timeout: Duration,
        protocol: UpstreamProtocol,
        tls: Option<UpstreamTls>,
    ) -> Result<Arc<PerWorker<UpstreamClient>>, weft_access::tls::TlsError> {
        let key = (connect_timeout, protocol, tls);
        if let Some(clients) = self.clients.lock().get(&key) {
            return Ok(clients.clone());
        }
        let connector = crate::tls::connector(key.2.as_ref(), connect_timeout)?;
        // A pool per worker: a pooled connection's task runs where it was
        // opened, so sharing one pool would send requests across threads.
        let clients = Arc::new(PerWorker::new(self.workers, |_| {
            Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(60))
                .http2_only(protocol == UpstreamProtocol::H2c)
                .build(connector.clone())
        }));
        Ok(self.clients.lock().entry(key).or_insert(clients).clone())
    }

    /// Compiles and swaps in `config`; on error the running one stays.
    pub(crate) fn apply(&self, config: GatewayConfig) -> Result<(), ConfigError> {
        let _one_at_a_time = self.reloading.lock();
        let previous = self.runtime.load_full();
        if config.telemetry != self.started_telemetry {
            tracing::warn!("telemetry settings changed; they take effect at the next restart");
        }
        let result = if config.certificates.is_empty()
            && self
                .serving_https
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            Err(ConfigError::Invalid {
                at: "certificates".to_string(),
                reason: "the HTTPS listener is open and would fail every handshake without a certificate (restart without it to close it)".to_string(),
                line: None,
            })
        } else {
            Runtime::build(config, self, &previous)
        };
        self.metrics.reloaded(result.is_ok());
        let runtime = result?;
        tracing::info!(
            services = runtime.config.services.len(),
            routes = runtime
                .config
                .services
                .iter()
                .map(|s| s.routes.len())
                .sum::<usize>(),
            upstreams = runtime.config.upstreams.len(),
            "configuration applied"
        );
        self.runtime.store(Arc::new(runtime));
        Ok(())
    }

    /// Re-reads the configuration file and applies it.
    pub(crate) fn reload(&self) -> Result<(), ConfigError> {
        let Some(path) = &self.config_path else {
            return Ok(());
        };
        match GatewayConfig::load(path) {
            Ok(config) => self.apply(config),
            Err(e) => {
                self.metrics.reloaded(false);
                Err(e)
            }
        }
    }
}

/// Answers one request: route it, run its stack, trace and count it.
async fn handle(
    shared: Arc<Shared>,
    client: ClientConnection,
    request: http::Request<Incoming>,
) -> Result<ProxyResponse, Infallible> {
    let started = Instant::now();
    let runtime = shared.runtime.load_full();
    let mut request = request.map(Body::new);
    let method = request.method().clone();
    let mut span =
        shared
            .telemetry
            .server_span(request.headers(), method_name(&method), |attributes| {
                let headers = request.headers();
                attributes
                    .str("http.request.method", &method_name(&method))
                    .str("url.path", request.uri().path())
                    .str("url.scheme", client.scheme)
                    .str("client.address", client.ip_str())
                    .str(
                        "network.protocol.version",
                        protocol_version(request.version()),
                    );
                if let Some(host) = headers.get(HOST).and_then(|h| h.to_str().ok()) {
                    attributes.str("server.address", host);
                }
                if let Some(agent) = headers.get(USER_AGENT).and_then(|h| h.to_str().ok()) {
                    attributes.str("user_agent.original", agent);
                }
            });
    // Kept for the access log, which is written after the request is gone.
    let path = shared
        .telemetry
        .logs_access()
        .then(|| request.uri().path().to_string());
    let client_ip = client.ip.clone();
    request.extensions_mut().insert(client);
    let (response, route) = match runtime.routes.find(&request) {
        None => (
            gateway_response(StatusCode::NOT_FOUND, "no Route matched with those values"),
            None,
        ),
        Some(matched) => {
            if span.is_recording() {
                span.set_name(format!("{method} {}", matched.template));
                span.add_attributes(|attributes| {
                    attributes
                        .str("http.route", &matched.template)
                        .str("weft.gateway.route", &matched.route.name)
                        .str("weft.gateway.service", &matched.route.service);
                });
            }
            let route = matched.route.clone();
            if route.wants_https(&request) {
                let response = https_required(route.https_redirect_status_code, &request);
                (response, Some(route))
            } else {
                let stack = route.stack.clone();
                request
                    .extensions_mut()
                    .insert(RequestSpan(span.context().clone()));
                request.extensions_mut().insert(Arc::new(matched));
                (plugins::forward(stack, request).await, Some(route))
            }
        }
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    let names = route.as_deref().map(|r| (&r.service, &r.name));
    shared.metrics.observe(names, status, elapsed);
    let (service, route) = names.map_or(("", ""), |(s, r)| (&**s, &**r));
    shared.telemetry.access_log(span.context(), status, |log| {
        let path = path.as_deref().unwrap_or_default();
        let target = response.extensions().get::<AnsweredBy>().map(|a| &a.0);
        let millis = Telemetry::access_log_millis(elapsed);
        let client_ip = client_ip.to_str().unwrap_or_default();
        let _ = write!(
            log.body(),
            "{client_ip} \"{method} {path}\" {status} {millis:.1}ms upstream={}",
            target.map_or("-", |t| t.as_str())
        );
        let attributes = log.attributes();
        attributes
            .str("http.request.method", &method_name(&method))
            .str("url.path", path)
            .int("http.response.status_code", i64::from(status))
            .str("client.address", client_ip)
            .double("duration_ms", millis)
            .str("weft.gateway.route", route)
            .str("weft.gateway.service", service);
        if let Some(target) = target {
            attributes.str("weft.gateway.upstream_target", target);
        }
        if let Some(consumer) = response.extensions().get::<AuthenticatedConsumer>() {
            attributes.str("enduser.id", &consumer.0.username);
        }
    });
    span.end(Some(status), None);
    Ok(response)
}

/// Kong's answer to plain HTTP on a route that allows only HTTPS: 426
/// Upgrade Required, or a redirect to the same URL over HTTPS with
/// `status` (301, 302, 307, 308).
fn https_required(status: u16, request: &ProxyRequest) -> ProxyResponse {
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .map(crate::router::without_port)
        .filter(|host| !host.is_empty());
    let location = host.and_then(|host| {
        let target = request.uri().path_and_query().map_or("/", |p| p.as_str());
        http::HeaderValue::try_from(format!("https://{host}{target}")).ok()
    });
    match (StatusCode::from_u16(status), location) {
        (Ok(status), Some(location)) if status.is_redirection() => {
            let mut response = gateway_response(status, "Please use HTTPS protocol");
            response
                .headers_mut()
                .insert(http::header::LOCATION, location);
            response
        }
        _ => {
            let mut response =
                gateway_response(StatusCode::UPGRADE_REQUIRED, "Please use HTTPS protocol");
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONNECTION,
                http::HeaderValue::from_static("Upgrade"),
            );
            headers.insert(
                http::header::UPGRADE,
                http::HeaderValue::from_static("TLS/1.2, HTTP/1.1"),
            );
            response
        }
    }
}

fn protocol_version(version: http::Version) -> &'static str {
    match version {
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => "1.1",
    }
}

/// How long a client may take to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts proxy connections (HTTP/1.1, and HTTP/2 with prior knowledge;
/// with `tls`, a TLS handshake first and HTTP/2 or HTTP/1.1 by ALPN) and
/// serves each on one of `workers`, until `shutdown`; then lets open
/// connections finish for up to `grace`.
pub(crate) async fn serve_proxy(
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    listener: tokio::net::TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let what = if acceptor.is_some() {
        "https proxy"
    } else {
        "proxy"
    };
    weft_proxy::accept_until(
        listener,
        shutdown,
        grace,
        what,
        |stream, client, watcher| {
            let shared = shared.clone();
            let builder = builder.clone();
            let acceptor = acceptor.clone();
            // The handshake runs in the connection's task, so a slow client
            // never holds up the accept loop.
            workers.serve(stream, move |stream| async move {
                let scheme = if acceptor.is_some() { "https" } else { "http" };
                let connection = ClientConnection::new(client, scheme);
                let service = hyper::service::service_fn(move |request| {
                    handle(shared.clone(), connection.clone(), request)
                });
                let served = match acceptor {
                    None => {
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                    Some(acceptor) => {
                        let stream =
                            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                                .await
                            {
                                Ok(Ok(stream)) => stream,
                                Ok(Err(e)) => {
                                    tracing::debug!(error = %e, %client, "TLS handshake failed");
                                    return;
                                }
                                Err(_) => {
                                    tracing::debug!(%client, "TLS handshake timed out");
                                    return;
                                }
                            };
                        let connection =
                            builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                        watcher.watch(connection.into_owned()).await
                    }
                };
                if let Err(e) = served {
                    tracing::debug!(error = %e, %client, "proxy connection ended with an error");
                }
            });
        },
    )
    .await;
}
