//! The inbound listener: mTLS in, policies checked, plain text to the app.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{header, HeaderValue, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use opentelemetry::trace::SpanContext;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use weft_proxy::headers::remove_hop_by_hop;
use weft_proxy::{accept_until, message_response, method_name, upgrade, uri, Telemetry, Workers};

use super::{Body, Shared};
use crate::api::AppProtocol;
use crate::policy::{AuthorizationInput, Denial, DestinationInput, RequestInput, SourceInput};
use crate::spiffe::SpiffeId;
use crate::tls::peer_identity;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

const X_FORWARDED_CLIENT_CERT: &str = "x-forwarded-client-cert";

pub(super) async fn serve(
    shared: Arc<Shared>,
    workers: Arc<Workers>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    accept_until(
        listener,
        shutdown,
        grace,
        "inbound",
        |stream, remote, watcher| {
            let shared = shared.clone();
            workers.serve(stream, move |stream| {
                serve_connection(shared, stream, remote, watcher)
            });
        },
    )
    .await;
}

/// The mTLS handshake, the caller's identity, then HTTP or a TCP tunnel.
async fn serve_connection(
    shared: Arc<Shared>,
    stream: TcpStream,
    remote: SocketAddr,
    watcher: Watcher,
) {
    let tcp = shared.app_protocol == AppProtocol::Tcp;
    let acceptor = TlsAcceptor::from(shared.tls.load().server_config(tcp));
    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            shared.metrics.handshake_failed();
            tracing::info!(%remote, error = %e, "inbound mTLS handshake refused");
            return;
        }
        Err(_) => {
            shared.metrics.handshake_failed();
            return;
        }
    };
    let mesh = shared.config.load().mesh.clone();
    let peer = match peer_identity(stream.get_ref().1) {
        Some(peer) if peer.trust_domain() == mesh => peer,
        other => {
            shared.metrics.handshake_failed();
            tracing::info!(%remote, peer = ?other, "inbound client has no identity of this mesh");
            return;
        }
    };
    if tcp {
        tunnel(shared, peer, remote, stream).await;
        return;
    }
    let caller = Arc::new(Caller::new(&shared, peer, remote));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let service =
        hyper::service::service_fn(move |request| handle(shared.clone(), caller.clone(), request));
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(connection.into_owned()).await {
        tracing::debug!(error = %e, %remote, "inbound connection ended with an error");
    }
}

/// Who calls over one inbound connection, written out once for all of its
/// requests (each used to format the caller's SPIFFE id up to four times).
struct Caller {
    id: SpiffeId,
    /// `id` as text, for spans and access logs.
    id_text: Arc<str>,
    service: Arc<str>,
    /// `network.peer.address`.
    address: Arc<str>,
    /// `X-Forwarded-Client-Cert` for the app: this sidecar's id and the caller's.
    forwarded_cert: Option<HeaderValue>,
}

impl Caller {
    fn new(shared: &Shared, id: SpiffeId, remote: SocketAddr) -> Self {
        let own = shared.tls.load().identity.to_string();
        Self {
            id_text: Arc::from(id.to_string()),
            service: Arc::from(id.service()),
            address: Arc::from(remote.ip().to_string()),
            forwarded_cert: HeaderValue::try_from(format!("By={own};URI={id}")).ok(),
            id,
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    caller: Arc<Caller>,
    request: http::Request<hyper::body::Incoming>,
) -> Result<http::Response<Body>, Infallible> {
    let peer = &caller.id;
    let started = Instant::now();
    let snapshot = shared.config.load_full();
    let telemetry = shared.telemetry.load_full();
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let span = telemetry.server_span(
        request.headers(),
        format!("{method} {}", shared.service),
        |attributes| {
            attributes
                .str("http.request.method", &method_name(&method))
                .str("url.path", &path)
                .str("server.address", &shared.service)
                .str("peer.service", &caller.service)
                .str("weft.mesh.peer_identity", &caller.id_text)
                .str("network.peer.address", &caller.address);
        },
    );
    let decision = snapshot
        .policies
        .permit(peer.service(), &shared.service)
        .and_then(|()| {
            if !snapshot.policies.authorizes(&shared.service) {
                return Ok(());
            }
            let headers: BTreeMap<&str, &str> = request
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
                .collect();
            snapshot.policies.authorize(&AuthorizationInput {
                request: RequestInput {
                    method: method.as_str(),
                    path: &path,
                    headers,
                },
                source: SourceInput {
                    service: peer.service(),
                    spiffe_id: &caller.id_text,
                },
                destination: DestinationInput {
                    service: &shared.service,
                },
            })
        });
    let (response, denial) = match decision {
        Ok(()) => (
            forward_to_app(&shared, &telemetry, span.context(), &caller, request).await,
            None,
        ),
        Err(denial) => {
            shared.metrics.denied(denial.kind, peer.service());
            tracing::warn!(
                from = %peer, to = %shared.service, %method, %path,
                kind = denial.kind, rule = %denial.rule, "request denied"
            );
            (
                message_response::<Body>(StatusCode::FORBIDDEN, &denial.message),
                Some(denial),
            )
        }
    };
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    shared
        .metrics
        .observe("inbound", peer.service(), status, elapsed);
    access_log(
        &telemetry,
        span.context(),
        &caller,
        &method,
        &path,
        status,
        elapsed,
        denial,
    );
    span.end(Some(status), None);
    Ok(response)
}

#[allow(clippy::too_many_arguments)]
fn access_log(
    telemetry: &Telemetry,
    cx: &SpanContext,
    caller: &Caller,
    method: &http::Method,
    path: &str,
    status: u16,
    elapsed: Duration,
    denial: Option<Denial>,
) {
    telemetry.access_log(cx, status, |log| {
        let millis = Telemetry::access_log_millis(elapsed);
        let peer = &caller.id_text;
        let _ = write!(
            log.body(),
            "inbound {peer} \"{method} {path}\" {status} {millis:.1}ms"
        );
        if let Some(denial) = &denial {
            let _ = write!(
                log.body(),
                " denied by {} rule {}",
                denial.kind,
                denial.rule
            );
        }
        let attributes = log.attributes();
        attributes
            .str("http.request.method", &method_name(method))
            .str("url.path", path)
            .int("http.response.status_code", i64::from(status))
            .str("peer.service", &caller.service)
            .str("weft.mesh.peer_identity", &caller.id_text)
            .str("weft.mesh.direction", "inbound")
            .double("duration_ms", millis);
        if let Some(denial) = &denial {
            attributes
                .str("weft.mesh.policy", denial.kind)
                .str("weft.mesh.rule", &denial.rule);
        }
    });
}

async fn forward_to_app(
    shared: &Shared,
    telemetry: &Telemetry,
    cx: &SpanContext,
    caller: &Caller,
    mut request: http::Request<hyper::body::Incoming>,
) -> http::Response<Body> {
    // A protocol switch (a WebSocket) needs HTTP/1.1 to the app.
    let switch = upgrade::requested_protocol(request.headers())
        .filter(|_| shared.app_protocol == AppProtocol::Http);
    let caller_upgrade = switch.is_some().then(|| hyper::upgrade::on(&mut request));
    let (mut parts, body) = request.into_parts();
    remove_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = &switch {
        upgrade::ask_again(&mut parts.headers, protocol);
    }
    telemetry.inject(cx, &mut parts.headers);
    // Envoy's header: who called, as the mesh proved it. Whatever the caller
    // put there is replaced.
    match &caller.forwarded_cert {
        Some(value) => parts.headers.insert(X_FORWARDED_CLIENT_CERT, value.clone()),
        None => parts.headers.remove(X_FORWARDED_CLIENT_CERT),
    };
    // HTTP/2 names the app in `:authority`; HTTP/1.1 sends the path alone.
    let http2 = shared.app_protocol == AppProtocol::Http2;
    let path_and_query = uri::path_and_query(&parts.uri);
    let target = if http2 {
        uri::absolute(
            http::uri::Scheme::HTTP,
            Some(shared.app_authority.clone()),
            path_and_query,
        )
    } else {
        Some(http::Uri::from(path_and_query))
    };
    parts.uri = match target {
        Some(uri) => uri,
        None => return message_response::<Body>(StatusCode::BAD_REQUEST, "invalid request target"),
    };
    parts.version = if http2 {
        http::Version::HTTP_2
    } else {
        http::Version::HTTP_11
    };
    // HTTP/2 carried the authority as a pseudo-header; HTTP/1.1 needs Host.
    if !parts.headers.contains_key(header::HOST) {
        if let Ok(host) = HeaderValue::try_from(shared.service.as_str()) {
            parts.headers.insert(header::HOST, host);
        }
    }
    let request = http::Request::from_parts(parts, Body::new(body));
    match shared.app_connections.get().send(request).await {
        Ok(mut response) if response.status() == StatusCode::SWITCHING_PROTOCOLS => {
            if let Some(caller_upgrade) = caller_upgrade {
                let app_upgrade = hyper::upgrade::on(&mut response);
                tokio::spawn(upgrade::join(caller_upgrade, app_upgrade));
            }
            let (parts, body) = response.into_parts();
            http::Response::from_parts(parts, Body::new(body))
        }
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            http::Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            tracing::warn!(app = %shared.app, error = %e, "the app did not answer");
            message_response::<Body>(
                StatusCode::BAD_GATEWAY,
                &format!("{} did not answer", shared.service),
            )
        }
    }
}

/// A TCP connection through the mesh: permissions decide per connection.
async fn tunnel(
    shared: Arc<Shared>,
    peer: SpiffeId,
    remote: SocketAddr,
    mut stream: tokio_rustls::server::TlsStream<TcpStream>,
) {
    let policies = shared.config.load_full();
    if let Err(denial) = policies.policies.permit(peer.service(), &shared.service) {
        shared.metrics.denied(denial.kind, peer.service());
        shared
            .metrics
            .connection("inbound", peer.service(), "denied");
        tracing::warn!(from = %peer, to = %shared.service, %remote, rule = %denial.rule, "TCP connection denied");
        let telemetry = shared.telemetry.load();
        telemetry.access_log(&SpanContext::empty_context(), 403, |log| {
            let _ = write!(
                log.body(),
                "inbound {peer} TCP denied by traffic_permission rule {}",
                denial.rule
            );
            log.attributes()
                .str("peer.service", peer.service())
                .str("weft.mesh.policy", denial.kind)
                .str("weft.mesh.rule", &denial.rule);
        });
        return;
    }
    let mut app = match TcpStream::connect(shared.app).await {
        Ok(app) => app,
        Err(e) => {
            shared
                .metrics
                .connection("inbound", peer.service(), "app_unreachable");
            tracing::warn!(app = %shared.app, error = %e, "cannot connect to the app");
            return;
        }
    };
    let _ = app.set_nodelay(true);
    shared
        .metrics
        .connection("inbound", peer.service(), "opened");
    if let Err(e) = tokio::io::copy_bidirectional(&mut stream, &mut app).await {
        tracing::debug!(error = %e, "inbound TCP tunnel ended with an error");
    }
}
