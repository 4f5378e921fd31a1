//! Outbound listeners: the app's plain calls to one service, carried over
//! mTLS to a sidecar of that service that proves to be it.
//!
//! HTTP goes over one multiplexed HTTP/2 connection per endpoint, kept open
//! and replaced when it closes; a request that switches protocols (a
//! WebSocket) gets an HTTP/1.1 connection of its own, joined to the app's
//! after the `101`; TCP gets a tunnel per connection.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use weft_proxy::headers::remove_hop_by_hop;
use weft_proxy::{
    accept_until, message_response, method_name, upgrade, uri, PerWorker, Telemetry, Workers,
};

use super::{http1_connection, http2_connection, Body, Shared};
use crate::api::AppProtocol;
use crate::spiffe::SpiffeId;
use crate::tls::Wire;

/// Calls to one service.
pub(crate) struct Destination {
    pub(crate) service: String,
    /// `service` for span and access-log attributes.
    service_name: Arc<str>,
    /// `service` as the authority of the URIs sent to its sidecars (none if
    /// it is not one, which service-name checks rule out).
    authority: Option<http::uri::Authority>,
    next: AtomicUsize,
    /// Each worker's HTTP/2 connections, by endpoint: a connection's task
    /// runs on the worker that opened it.
    connections: PerWorker<Mutex<HashMap<SocketAddr, SendRequest<Body>>>>,
    /// Client configs by protocol, with the TLS generation they were built
    /// from (a renewed certificate means new ones).
    client_configs: Mutex<HashMap<Wire, (u64, Arc<ClientConfig>)>>,
}

/// Why an attempt failed before a response came back.
#[derive(Debug)]
enum AttemptError {
    /// Nothing was sent: safe to try elsewhere.
    Connect(String),
    /// The request may have reached the callee.
    Send(String),
}

pub(super) async fn serve(
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    destination: Arc<Destination>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    accept_until(
        listener,
        shutdown,
        grace,
        "outbound",
        |stream, client, watcher| {
            let (shared, destination) = (shared.clone(), destination.clone());
            let tcp = shared
                .config
                .load()
                .services
                .get(&destination.service)
                .is_some_and(|s| s.protocol == AppProtocol::Tcp);
            if tcp {
                workers.serve(stream, move |stream| tunnel(shared, destination, stream));
                return;
            }
            let client_ip: Arc<str> = Arc::from(client.ip().to_string());
            let service = hyper::service::service_fn(move |request| {
                handle(
                    shared.clone(),
                    destination.clone(),
                    client_ip.clone(),
                    request,
                )
            });
            let builder = builder.clone();
            workers.serve(stream, move |stream| async move {
                let connection = builder
                    .serve_connection_with_upgrades(TokioIo::new(stream), service)
                    .into_owned();
                if let Err(e) = watcher.watch(connection).await {
                    tracing::debug!(error = %e, %client, "outbound connection ended with an error");
                }
            });
        },
    )
    .await;
}

async fn handle(
    shared: Arc<Shared>,
    destination: Arc<Destination>,
    client_ip: Arc<str>,
    mut request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let started = Instant::now();
    let snapshot = shared.config.load_full();
    let telemetry = shared.telemetry.load_full();
    let to = destination.service.as_str();
    let switch = upgrade::requested_protocol(request.headers());
    let mut app_upgrade = switch.is_some().then(|| hyper::upgrade::on(&mut request));
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let parent = telemetry.extract(request.headers());
    let expected = SpiffeId::new(&snapshot.mesh, to);
    let span = telemetry.client_span(&parent, format!("{method} {to}"), |attributes| {
        attributes
            .str("http.request.method", &method_name(&method))
            .str("url.path", &path)
            .str("server.address", &destination.service_name)
            .str("peer.service", &destination.service_name)
            .str("weft.mesh.peer_identity", &expected.to_string());
    });
    let endpoints = snapshot.endpoints(to, shared.zone.as_deref());
    let (connect_timeout, request_timeout) = snapshot.policies.timeouts(to);
    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &switch {
        upgrade::ask_again(&mut parts.headers, protocol);
    }
    telemetry.inject(span.context(), &mut parts.headers);
    let path_and_query = uri::path_and_query(&parts.uri);
    let replayable = is_idempotent(&method) && hyper::body::Body::is_end_stream(&body);
    let attempts = if replayable {
        1 + snapshot.policies.retries(to)
    } else {
        1
    };
    let mut body = Some(Body::new(body));
    let mut answer = None;
    let mut endpoint_used = None;
    if endpoints.is_empty() {
        answer = Some(message_response::<Body>(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no sidecar of {to} is registered with the control plane"),
        ));
    }
    let first = destination.next.fetch_add(1, Ordering::Relaxed);
    for attempt in 0..attempts as usize {
        let Some(endpoint) = endpoints.pick(first, attempt) else {
            break;
        };
        endpoint_used = Some(endpoint);
        let last = attempt + 1 == attempts as usize;
        let mut request = http::Request::new(body.take().unwrap_or_else(Body::empty));
        *request.method_mut() = method.clone();
        // The last attempt takes the headers; earlier ones leave them for a retry.
        *request.headers_mut() = if last {
            std::mem::take(&mut parts.headers)
        } else {
            parts.headers.clone()
        };
        *request.version_mut() = if switch.is_some() {
            http::Version::HTTP_11
        } else {
            http::Version::HTTP_2
        };
        let target = uri::absolute(
            http::uri::Scheme::HTTP,
            destination.authority.clone(),
            path_and_query.clone(),
        );
        *request.uri_mut() = match target {
            Some(uri) => uri,
            None => {
                answer = Some(message_response::<Body>(
                    StatusCode::BAD_REQUEST,
                    "invalid request target",
                ));
                break;
            }
        };
        let attempt = async {
            if switch.is_some() {
                destination
                    .send_switching(&shared, &expected, endpoint, connect_timeout, request)
                    .await
            } else {
                destination
                    .send(&shared, &expected, endpoint, connect_timeout, request)
                    .await
            }
        };
        let outcome = tokio::time::timeout(request_timeout, attempt).await;
        match outcome {
            Ok(Ok(mut response)) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
                if let Some(app_upgrade) = app_upgrade.take() {
                    let callee_upgrade = hyper::upgrade::on(&mut response);
                    tokio::spawn(upgrade::join(app_upgrade, callee_upgrade));
                }
                answer = Some(response);
                break;
            }
            Ok(Ok(response)) => {
                let retryable = matches!(response.status().as_u16(), 502..=504);
                answer = Some(response);
                if !retryable || last {
                    break;
                }
            }
            Ok(Err(AttemptError::Connect(e))) => {
                tracing::warn!(%to, %endpoint, error = %e, "cannot reach the callee's sidecar");
                answer = Some(message_response::<Body>(
                    StatusCode::BAD_GATEWAY,
                    &format!("cannot reach {to}: {e}"),
                ));
            }
            Ok(Err(AttemptError::Send(e))) => {
                answer = Some(message_response::<Body>(
                    StatusCode::BAD_GATEWAY,
                    &format!("{to} did not answer: {e}"),
                ));
                if !replayable {
                    break;
                }
            }
            Err(_) => {
                answer = Some(message_response::<Body>(
                    StatusCode::GATEWAY_TIMEOUT,
                    &format!(
                        "{to} did not answer within {}",
                        humantime::format_duration(request_timeout)
                    ),
                ));
            }
        }
    }
    let response = answer.unwrap_or_else(|| {
        message_response::<Body>(StatusCode::BAD_GATEWAY, &format!("cannot reach {to}"))
    });
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    shared.metrics.observe("outbound", to, status, elapsed);
    telemetry.access_log(span.context(), status, |log| {
        let millis = Telemetry::access_log_millis(elapsed);
        let _ = write!(
            log.body(),
            "outbound {to} \"{method} {path}\" {status} {millis:.1}ms"
        );
        let attributes = log.attributes();
        attributes
            .str("http.request.method", &method_name(&method))
            .str("url.path", &path)
            .int("http.response.status_code", i64::from(status))
            .str("peer.service", &destination.service_name)
            .str("weft.mesh.direction", "outbound")
            .str("client.address", &client_ip)
            .double("duration_ms", millis);
        if let Some(endpoint) = endpoint_used {
            attributes.str("server.socket.address", &endpoint.to_string());
        }
    });
    span.end(Some(status), None);
    Ok(response)
}

fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

impl Destination {
    /// `workers`: how many workers send to it.
    pub(crate) fn new(service: String, workers: usize) -> Self {
        Self {
            service_name: Arc::from(service.as_str()),
            authority: service.parse().ok(),
            service,
            next: AtomicUsize::new(0),
            connections: PerWorker::new(workers, |_| Mutex::new(HashMap::new())),
            client_configs: Mutex::new(HashMap::new()),
        }
    }

    fn client_config(
        &self,
        shared: &Shared,
        expected: &SpiffeId,
        wire: Wire,
    ) -> Result<Arc<ClientConfig>, String> {
        let tls = shared.tls.load();
        let mut configs = self.client_configs.lock();
        if let Some((generation, config)) = configs.get(&wire) {
            if *generation == tls.generation {
                return Ok(config.clone());
            }
        }
        let config = tls
            .client_config(expected.clone(), wire)
            .map_err(|e| e.to_string())?;
        configs.insert(wire, (tls.generation, config.clone()));
        Ok(config)
    }

    async fn connect_tls(
        &self,
        shared: &Shared,
        expected: &SpiffeId,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        wire: Wire,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
        let config = self.client_config(shared, expected, wire)?;
        let connect = async {
            let stream = TcpStream::connect(endpoint)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            TlsConnector::from(config)
                .connect(ServerName::IpAddress(endpoint.ip().into()), stream)
                .await
                .map_err(|e| format!("mTLS handshake failed: {e}"))
        };
        tokio::time::timeout(connect_timeout, connect)
            .await
            .map_err(|_| {
                format!(
                    "no connection within {}",
                    humantime::format_duration(connect_timeout)
                )
            })?
    }

    /// The open HTTP/2 connection to `endpoint`, or a new one.
    async fn sender(
        &self,
        shared: &Shared,
        expected: &SpiffeId,
        endpoint: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<SendRequest<Body>, String> {
        if let Some(sender) = self.connections.get().lock().get(&endpoint) {
            if !sender.is_closed() {
                return Ok(sender.clone());
            }
        }
        let stream = self
            .connect_tls(shared, expected, endpoint, connect_timeout, Wire::Http2)
            .await?;
        let sender = http2_connection(stream, endpoint, "mesh")
            .await
            .map_err(|e| e.to_string())?;
        self.connections
            .get()
            .lock()
            .insert(endpoint, sender.clone());
        Ok(sender)
    }

    async fn send(
        &self,
        shared: &Shared,
        expected: &SpiffeId,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, AttemptError> {
        let mut sender = self
            .sender(shared, expected, endpoint, connect_timeout)
            .await
            .map_err(AttemptError::Connect)?;
        if sender.ready().await.is_err() {
            self.connections.get().lock().remove(&endpoint);
            return Err(AttemptError::Connect("the connection closed".to_string()));
        }
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| AttemptError::Send(e.to_string()))?;
        let (mut parts, body) = response.into_parts();
        remove_hop_by_hop(&mut parts.headers);
        Ok(http::Response::from_parts(parts, Body::new(body)))
    }

    /// A request that asks to switch protocols, on an HTTP/1.1 connection
    /// of its own that becomes the switched protocol's after a `101`.
    async fn send_switching(
        &self,
        shared: &Shared,
        expected: &SpiffeId,
        endpoint: SocketAddr,
        connect_timeout: Duration,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, AttemptError> {
        let stream = self
            .connect_tls(
                shared,
                expected,
                endpoint,
                connect_timeout,
                Wire::Http1Upgrade,
            )
            .await
            .map_err(AttemptError::Connect)?;
        let mut sender = http1_connection(stream, endpoint, "mesh upgrade")
            .await
            .map_err(|e| AttemptError::Connect(e.to_string()))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| AttemptError::Send(e.to_string()))?;
        let (mut parts, body) = response.into_parts();
        // A 101 keeps `Connection` and `Upgrade`: the app's client needs them.
        if parts.status != StatusCode::SWITCHING_PROTOCOLS {
            remove_hop_by_hop(&mut parts.headers);
        }
        Ok(http::Response::from_parts(parts, Body::new(body)))
    }
}

/// A TCP connection from the app, tunnelled to a sidecar of the service.
async fn tunnel(shared: Arc<Shared>, destination: Arc<Destination>, mut app: TcpStream) {
    let snapshot = shared.config.load_full();
    let to = destination.service.as_str();
    let expected = SpiffeId::new(&snapshot.mesh, to);
    let endpoints = snapshot.endpoints(to, shared.zone.as_deref());
    let (connect_timeout, _) = snapshot.policies.timeouts(to);
    let first = destination.next.fetch_add(1, Ordering::Relaxed);
    for attempt in 0..endpoints.len() {
        let Some(endpoint) = endpoints.pick(first, attempt) else {
            break;
        };
        match destination
            .connect_tls(&shared, &expected, endpoint, connect_timeout, Wire::Tcp)
            .await
        {
            Ok(mut stream) => {
                shared.metrics.connection("outbound", to, "opened");
                if let Err(e) = tokio::io::copy_bidirectional(&mut app, &mut stream).await {
                    tracing::debug!(error = %e, "outbound TCP tunnel ended with an error");
                }
                return;
            }
            Err(e) => tracing::warn!(%to, %endpoint, error = %e, "cannot open a TCP tunnel"),
        }
    }
    shared.metrics.connection("outbound", to, "unreachable");
}
