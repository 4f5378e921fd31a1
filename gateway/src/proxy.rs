//! The innermost service of every route: picks a target, forwards the
//! request with a CLIENT span per attempt, retries what is safe to retry,
//! and streams the answer back. Upgrades (WebSocket) become a tunnel.

use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{header, HeaderName, HeaderValue, Method, StatusCode, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use opentelemetry::trace::SpanContext;
use tokio::time::{Instant, Sleep};

use crate::config::ServiceConfig;
use weft_proxy::headers::remove_hop_by_hop;
use weft_proxy::{method_name, PerWorker, Telemetry};
use weft_proxy::{upgrade, uri};

use crate::http::{
    gateway_response, AnsweredBy, Body, ClientConnection, ProxyRequest, ProxyResponse,
};
use crate::router::Matched;
use crate::upstream::{Outcome, Upstream};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub(crate) type UpstreamClient = Client<HttpsConnector<HttpConnector>, Body>;

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// The request's SERVER span, in its extensions.
#[derive(Clone)]
pub(crate) struct RequestSpan(pub(crate) SpanContext);

/// A service ready to forward to.
pub(crate) struct Forwarder {
    pub(crate) name: String,
    /// The service URL's path, prepended to what is forwarded.
    base_path: String,
    pub(crate) upstream: Arc<Upstream>,
    /// Each worker's connection pool to the targets.
    clients: Arc<PerWorker<UpstreamClient>>,
    /// `http` or `https`, to the targets.
    scheme: Scheme,
    read_timeout: Duration,
    write_timeout: Duration,
    retries: u32,
    telemetry: Arc<Telemetry>,
}

/// Why an attempt got no response.
enum Failure {
    Timeout,
    Connect(String),
    TooLarge,
    Other(String),
}

impl Forwarder {
    pub(crate) fn new(
        config: &ServiceConfig,
        upstream: Arc<Upstream>,
        clients: Arc<PerWorker<UpstreamClient>>,
        https: bool,
        telemetry: Arc<Telemetry>,
    ) -> Self {
        let base_path = config
            .url
            .parse::<Uri>()
            .map(|u| u.path().trim_end_matches('/').to_string())
            .unwrap_or_default();
        Self {
            name: config.name.clone(),
            base_path,
            upstream,
            clients,
            scheme: if https { Scheme::HTTPS } else { Scheme::HTTP },
            read_timeout: config.read_timeout,
            write_timeout: config.write_timeout,
            retries: config.retries,
            telemetry,
        }
    }

    pub(crate) async fn forward(self: Arc<Self>, mut request: ProxyRequest) -> ProxyResponse {
        let matched = request.extensions_mut().remove::<Arc<Matched>>();
        let parent = request
            .extensions()
            .get::<RequestSpan>()
            .map_or_else(SpanContext::empty_context, |s| s.0.clone());
        let client = request.extensions().get::<ClientConnection>().cloned();
        let client_scheme = client.as_ref().map_or("http", |c| c.scheme);
        let stripped = matched
            .as_deref()
            .filter(|m| m.route.strip_path)
            .map_or(0, |m| m.consumed);
        let Some(path) = upstream_path(&self.base_path, request.uri(), stripped) else {
            return gateway_response(
                StatusCode::BAD_REQUEST,
                "the request path cannot be forwarded",
            );
        };
        let preserve_host = matched.as_ref().is_some_and(|m| m.route.preserve_host);
        let upgrade = upgrade::requested_protocol(request.headers());
        let client_upgrade = upgrade.is_some().then(|| hyper::upgrade::on(&mut request));

        let (mut parts, body) = request.into_parts();
        let mut headers = std::mem::take(&mut parts.headers);
        let forwarded_for = client.as_ref().map(|client| {
            match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
                Some(earlier) => HeaderValue::try_from(format!("{earlier}, {}", client.ip_str()))
                    .unwrap_or_else(|_| client.ip.clone()),
                None => client.ip.clone(),
            }
        });
        let hash_key: Option<Vec<u8>> = self.upstream.hashes().then(|| {
            self.upstream
                .hash_on_header()
                .and_then(|h| headers.get(h))
                .or(client.as_ref().map(|c| &c.ip))
                .map(|v| v.as_bytes().to_vec())
                .unwrap_or_default()
        });
        remove_hop_by_hop(&mut headers);
        if let Some(protocol) = &upgrade {
            upgrade::ask_again(&mut headers, protocol);
        }
        if let (Some(client), Some(forwarded_for)) = (client, forwarded_for) {
            headers.insert(&X_FORWARDED_FOR, forwarded_for);
            headers.insert(&X_REAL_IP, client.ip);
        }
        headers.insert(&X_FORWARDED_PROTO, HeaderValue::from_static(client_scheme));
        let host = if preserve_host {
            headers.get(header::HOST).cloned()
        } else {
            headers.remove(header::HOST)
        };
        if let Some(host) = host {
            headers.insert(&X_FORWARDED_HOST, host);
        }

        let has_body = !body.is_end_stream();
        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::PUT
                | Method::DELETE
                | Method::TRACE
        );
        let retryable = idempotent && !has_body && upgrade.is_none();
        let attempts = if retryable { 1 + self.retries } else { 1 };

        let mut body = Some(body);
        let mut tried = Vec::new();
        let mut answer = None;
        for attempt in 0..attempts {
            let Some((index, target, in_flight)) = self.upstream.pick(hash_key.as_deref(), &tried)
            else {
                break;
            };
            tried.push(index);
            let Some(uri) =
                uri::absolute(self.scheme.clone(), target.authority.clone(), path.clone())
            else {
                return gateway_response(
                    StatusCode::BAD_REQUEST,
                    "the request path cannot be forwarded",
                );
            };
            let span =
                self.telemetry
                    .client_span(&parent, method_name(&parts.method), |attributes| {
                        let (host, port) = target
                            .address
                            .rsplit_once(':')
                            .unwrap_or((&target.address, ""));
                        attributes
                            .str("http.request.method", &method_name(&parts.method))
                            .str("server.address", host)
                            // Without the query, which may carry credentials (`?apikey=`).
                            .str(
                                "url.full",
                                &format!("{}://{}{}", self.scheme, target.address, uri.path()),
                            )
                            .str("peer.service", &self.name);
                        if let Ok(port) = port.parse::<i64>() {
                            attributes.int("server.port", port);
                        }
                        if attempt > 0 {
                            attributes.int("http.request.resend_count", i64::from(attempt));
                        }
                    });
            let last = attempt + 1 == attempts;
            // The last attempt takes the headers; earlier ones leave them for a retry.
            let mut outgoing_headers = if last {
                std::mem::take(&mut headers)
            } else {
                headers.clone()
            };
            self.telemetry.inject(span.context(), &mut outgoing_headers);
            let body = match body.take() {
                Some(b) if has_body => Body::new(IdleTimeout::new(b, self.write_timeout)),
                _ => Body::empty(),
            };
            let mut outgoing = http::Request::new(body);
            *outgoing.method_mut() = parts.method.clone();
            *outgoing.uri_mut() = uri;
            *outgoing.headers_mut() = outgoing_headers;

            let result =
                match tokio::time::timeout(self.read_timeout, self.clients.get().request(outgoing))
                    .await
                {
                    Err(_) => Err(Failure::Timeout),
                    Ok(Ok(response)) => Ok(response),
                    Ok(Err(e)) => Err(classify(&e)),
                };
            match result {
                Ok(mut response) => {
                    let status = response.status();
                    self.upstream
                        .report(&target, Outcome::Status(status.as_u16()));
                    span.end(Some(status.as_u16()), None);
                    if status == StatusCode::SWITCHING_PROTOCOLS {
                        if let Some(client_upgrade) = client_upgrade {
                            let upstream_upgrade = hyper::upgrade::on(&mut response);
                            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, in_flight));
                            let (mut parts, _) = response.into_parts();
                            parts.extensions.insert(AnsweredBy(target.address.clone()));
                            return http::Response::from_parts(parts, Body::empty());
                        }
                    }
                    let (mut parts, incoming) = response.into_parts();
                    remove_hop_by_hop(&mut parts.headers);
                    parts.extensions.insert(AnsweredBy(target.address.clone()));
                    let body = HeldBody {
                        inner: IdleTimeout::new(incoming, self.read_timeout),
                        _in_flight: in_flight,
                    };
                    let response = http::Response::from_parts(parts, Body::new(body));
                    if matches!(status.as_u16(), 502..=504) && !last {
                        // Kept in case no other target is left to try.
                        answer = Some(response);
                        continue;
                    }
                    return response;
                }
                Err(failure) => {
                    let (status, message, error) = match &failure {
                        Failure::Timeout => (
                            StatusCode::GATEWAY_TIMEOUT,
                            "The upstream server is timing out",
                            "timeout".to_string(),
                        ),
                        Failure::Connect(e) => (
                            StatusCode::BAD_GATEWAY,
                            "An invalid response was received from the upstream server",
                            format!("connect: {e}"),
                        ),
                        Failure::TooLarge => (
                            StatusCode::PAYLOAD_TOO_LARGE,
                            crate::plugins::TOO_LARGE,
                            "request too large".to_string(),
                        ),
                        Failure::Other(e) => (
                            StatusCode::BAD_GATEWAY,
                            "An invalid response was received from the upstream server",
                            e.clone(),
                        ),
                    };
                    if !matches!(failure, Failure::TooLarge) {
                        self.upstream.report(&target, Outcome::Failed);
                    }
                    span.end(None, Some(error));
                    let connect_failed = matches!(failure, Failure::Connect(_));
                    let mut response = gateway_response(status, message);
                    response
                        .extensions_mut()
                        .insert(AnsweredBy(target.address.clone()));
                    if last || !(retryable || (connect_failed && !has_body)) {
                        return response;
                    }
                    answer = Some(response);
                }
            }
        }
        // Out of targets: the last failed attempt's answer, if there was one.
        answer.unwrap_or_else(|| {
            gateway_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "failure to get a healthy target from the upstream",
            )
        })
    }
}

/// The path and query sent upstream: the service URL's path (`base_path`,
/// without a trailing `/`), then the request's path without its first
/// `stripped` bytes (the part a stripping route matched), then the query.
/// None when that is not a valid path.
fn upstream_path(base_path: &str, request: &Uri, stripped: usize) -> Option<PathAndQuery> {
    let path = request.path();
    let rest = path.get(stripped..).unwrap_or(path);
    if base_path.is_empty() && rest.len() == path.len() && path.starts_with('/') {
        // Forwarded as it came (the common case): no copy, no re-parse.
        return Some(uri::path_and_query(request));
    }
    let query = request.query();
    let mut forwarded =
        String::with_capacity(1 + base_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1));
    let starts_with_slash = if base_path.is_empty() {
        rest.starts_with('/')
    } else {
        base_path.starts_with('/')
    };
    if !starts_with_slash {
        forwarded.push('/');
    }
    forwarded.push_str(base_path);
    // Kong's default path handling: `/v1` and `accounts` (a route `/api/`
    // stripped from `/api/accounts`) join as `/v1/accounts`.
    if !base_path.is_empty() && !rest.is_empty() && !rest.starts_with('/') {
        forwarded.push('/');
    }
    forwarded.push_str(rest);
    if let Some(query) = query {
        forwarded.push('?');
        forwarded.push_str(query);
    }
    PathAndQuery::try_from(forwarded).ok()
}

fn classify(error: &hyper_util::client::legacy::Error) -> Failure {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return Failure::TooLarge;
        }
        if e.is::<BodyTimeout>() {
            return Failure::Timeout;
        }
        source = e.source();
    }
    if error.is_connect() {
        Failure::Connect(
            std::error::Error::source(error)
                .map(|e| e.to_string())
                .unwrap_or_default(),
        )
    } else {
        Failure::Other(error.to_string())
    }
}

/// Joins the client's and the target's upgraded connections; the target
/// counts the connection as in flight until it ends.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    in_flight: crate::upstream::InFlight,
) {
    upgrade::join(client, upstream).await;
    drop(in_flight);
}

/// No body chunk for longer than the timeout.
#[derive(Debug, thiserror::Error)]
#[error("no data for {0:?}")]
struct BodyTimeout(Duration);

/// A body whose every chunk must come within `timeout` of the previous one.
struct IdleTimeout<B> {
    inner: B,
    timeout: Duration,
    /// Set the first time the body has to wait: most bodies on the proxy's
    /// hot path are already buffered and never need a timer.
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame came since the timer was last set.
    progressed: bool,
}

impl<B> IdleTimeout<B> {
    fn new(inner: B, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            sleep: None,
            progressed: false,
        }
    }
}

impl<B> HttpBody for IdleTimeout<B>
where
    B: HttpBody<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.progressed = true;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                // The idle time counts from when the body starts waiting.
                let sleep = match &mut this.sleep {
                    Some(sleep) => {
                        if this.progressed {
                            sleep.as_mut().reset(Instant::now() + this.timeout);
                        }
                        sleep
                    }
                    None => this
                        .sleep
                        .insert(Box::pin(tokio::time::sleep(this.timeout))),
                };
                this.progressed = false;
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyTimeout(this.timeout))))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A response body that keeps its target counted as busy until it is done.
struct HeldBody<B> {
    inner: B,
    _in_flight: crate::upstream::InFlight,
}

impl<B: HttpBody + Unpin> HttpBody for HeldBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_upstream_path_joins_the_service_path_and_what_the_route_left() {
        let cases = [
            // (service path, request, bytes stripped, sent upstream)
            ("", "/accounts/7?sort=name", 0, "/accounts/7?sort=name"),
            ("", "/", 1, "/"),
            ("", "/accounts", 1, "/accounts"),
            ("", "/api/accounts?x=1", 4, "/accounts?x=1"),
            ("", "/api", 4, "/"),
            ("", "/api/", 5, "/"),
            ("/v1", "/api/accounts", 4, "/v1/accounts"),
            ("/v1", "/api", 4, "/v1"),
            ("/v1", "/api/accounts?q", 0, "/v1/api/accounts?q"),
            ("/v1", "/api/accounts", 5, "/v1/accounts"),
            ("/v1", "/v2x/y", 3, "/v1/x/y"),
        ];
        for (base, request, stripped, expected) in cases {
            let uri: Uri = request.parse().unwrap();
            let sent = upstream_path(base, &uri, stripped).unwrap();
            assert_eq!(
                sent.as_str(),
                expected,
                "{base:?} + {request:?} - {stripped}"
            );
        }
    }
}
