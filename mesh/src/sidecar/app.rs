//! The inbound listener's connections to the app, one set per worker:
//! HTTP/1.1 connections reused one request at a time, or one multiplexed
//! HTTP/2 connection (h2c) for an app that speaks it.
//!
//! Not hyper-util's pooled client: a worker's requests only ever use the
//! worker's own connections, so the shared pool's locking, keying by origin,
//! per-request connector and idle-return machinery were a twentieth of the
//! inbound sidecar's CPU time under load (BENCHMARKS.md, *Mesh hop against
//! an nginx TLS pair*).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use parking_lot::Mutex;
use tokio::net::TcpStream;

use super::{http1_connection, http2_connection, Body};
use crate::api::AppProtocol;

/// How long an HTTP/1.1 connection may sit unused before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a request did not get the app's response.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AppError {
    #[error("cannot connect to the app: {0}")]
    Connect(std::io::Error),
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// One worker's connections to the app.
pub(crate) struct AppConnections {
    app: SocketAddr,
    protocol: AppProtocol,
    /// HTTP/1.1 connections, busy or idle.
    http1: Mutex<Vec<Http1Connection>>,
    /// The HTTP/2 connection, once opened (held across the opening, so
    /// requests that arrive meanwhile wait for it rather than open more).
    http2: tokio::sync::Mutex<Option<http2::SendRequest<Body>>>,
}

struct Http1Connection {
    sender: http1::SendRequest<Body>,
    last_used: Instant,
}

impl AppConnections {
    pub(crate) fn new(app: SocketAddr, protocol: AppProtocol) -> Self {
        Self {
            app,
            protocol,
            http1: Mutex::new(Vec::new()),
            http2: tokio::sync::Mutex::new(None),
        }
    }

    /// Sends `request` (whose URI is in origin form for HTTP/1.1, absolute
    /// for HTTP/2) and returns the app's response. A request that asks to
    /// switch protocols gets its HTTP/1.1 connection handed over after a
    /// `101` (`hyper::upgrade::on` on the response).
    pub(crate) async fn send(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, AppError> {
        match self.protocol {
            AppProtocol::Http2 => self.send_http2(request).await,
            _ => self.send_http1(request).await,
        }
    }

    async fn send_http1(
        &self,
        mut request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, AppError> {
        // A connection the app closed between the check and the send hands
        // the request back unsent; it is tried on the next one (a few times,
        // then on a new connection).
        for _ in 0..4 {
            let sent = {
                let now = Instant::now();
                let mut connections = self.http1.lock();
                let idle_too_long =
                    |c: &Http1Connection| c.sender.is_ready() && now - c.last_used > IDLE_TIMEOUT;
                connections.retain(|c| !c.sender.is_closed() && !idle_too_long(c));
                match connections.iter_mut().find(|c| c.sender.is_ready()) {
                    Some(idle) => {
                        idle.last_used = now;
                        idle.sender.try_send_request(request)
                    }
                    None => break,
                }
            };
            match sent.await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(e.into_error().into()),
                },
            }
        }
        let mut sender = http1_connection(self.connect().await?, self.app, "app").await?;
        let response = sender.send_request(request);
        self.http1.lock().push(Http1Connection {
            sender,
            last_used: Instant::now(),
        });
        Ok(response.await?)
    }

    async fn send_http2(
        &self,
        request: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, AppError> {
        let mut open = self.http2.lock().await;
        let mut sender = match open.as_ref().filter(|s| !s.is_closed()) {
            Some(sender) => sender.clone(),
            None => {
                let sender = http2_connection(self.connect().await?, self.app, "app").await?;
                *open = Some(sender.clone());
                sender
            }
        };
        drop(open);
        sender.ready().await?;
        Ok(sender.send_request(request).await?)
    }

    async fn connect(&self) -> Result<TcpStream, AppError> {
        let stream = TcpStream::connect(self.app)
            .await
            .map_err(AppError::Connect)?;
        // Without TCP_NODELAY a request body written after its head waits
        // for the head's delayed ACK: 40 ms on Linux.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use http_body_util::BodyExt;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;

    use super::*;

    /// An app answering each request with its connection's number and the
    /// request's path, in `protocol`; it counts connections. The body of
    /// `/slow` ends only once `finish_slow` is notified.
    async fn app(protocol: AppProtocol) -> (SocketAddr, Arc<AtomicUsize>) {
        let (addr, connections, _) = app_with_slow_path(protocol).await;
        (addr, connections)
    }

    async fn app_with_slow_path(
        protocol: AppProtocol,
    ) -> (SocketAddr, Arc<AtomicUsize>, Arc<tokio::sync::Notify>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let finish_slow = Arc::new(tokio::sync::Notify::new());
        let (counted, finish) = (connections.clone(), finish_slow.clone());
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let number = counted.fetch_add(1, Ordering::SeqCst);
                let finish = finish.clone();
                let service =
                    hyper::service::service_fn(move |request: http::Request<Incoming>| {
                        let text = format!("{number} {}", request.uri().path());
                        let body = if request.uri().path() == "/slow" {
                            let finish = finish.clone();
                            Body::from_stream(futures::stream::once(async move {
                                finish.notified().await;
                                Ok::<_, Infallible>(bytes::Bytes::from(text))
                            }))
                        } else {
                            Body::from(text)
                        };
                        async move { Ok::<_, Infallible>(http::Response::new(body)) }
                    });
                let io = TokioIo::new(stream);
                tokio::spawn(async move {
                    let _ = match protocol {
                        AppProtocol::Http2 => {
                            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .serve_connection(io, service)
                                .await
                        }
                        _ => {
                            hyper::server::conn::http1::Builder::new()
                                .serve_connection(io, service)
                                .await
                        }
                    };
                });
            }
        });
        (addr, connections, finish_slow)
    }

    fn request(app: SocketAddr, protocol: AppProtocol, path: &str) -> http::Request<Body> {
        let uri = match protocol {
            AppProtocol::Http2 => format!("http://{app}{path}"),
            _ => path.to_string(),
        };
        http::Request::builder()
            .uri(uri)
            .header(http::header::HOST, "app")
            .body(Body::empty())
            .unwrap()
    }

    async fn text(response: http::Response<Incoming>) -> String {
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Lets the connections' tasks run: one that delivered a whole response
    /// then marks itself ready for the next request.
    async fn settle() {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test]
    async fn http1_connections_are_reused_one_request_at_a_time() {
        let (addr, opened, finish_slow) = app_with_slow_path(AppProtocol::Http).await;
        let connections = AppConnections::new(addr, AppProtocol::Http);
        for path in ["/a", "/b", "/c"] {
            let response = connections
                .send(request(addr, AppProtocol::Http, path))
                .await
                .unwrap();
            assert_eq!(text(response).await, format!("0 {path}"));
            settle().await;
        }
        assert_eq!(opened.load(Ordering::SeqCst), 1);

        // A connection whose response is still being read is busy: a request
        // meanwhile opens another, and both stay for reuse.
        let busy = connections
            .send(request(addr, AppProtocol::Http, "/slow"))
            .await
            .unwrap();
        let meanwhile = connections
            .send(request(addr, AppProtocol::Http, "/y"))
            .await
            .unwrap();
        assert_eq!(text(meanwhile).await, "1 /y");
        finish_slow.notify_one();
        assert_eq!(text(busy).await, "0 /slow");
        assert_eq!(opened.load(Ordering::SeqCst), 2);
        settle().await;
        for _ in 0..4 {
            let response = connections
                .send(request(addr, AppProtocol::Http, "/z"))
                .await
                .unwrap();
            text(response).await;
            settle().await;
        }
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_app_closed_is_replaced() {
        let (addr, opened) = app(AppProtocol::Http).await;
        let connections = AppConnections::new(addr, AppProtocol::Http);
        let mut closing = request(addr, AppProtocol::Http, "/bye");
        closing
            .headers_mut()
            .insert(http::header::CONNECTION, "close".parse().unwrap());
        let response = connections.send(closing).await.unwrap();
        assert_eq!(text(response).await, "0 /bye");
        settle().await;
        let response = connections
            .send(request(addr, AppProtocol::Http, "/again"))
            .await
            .unwrap();
        assert_eq!(text(response).await, "1 /again");
        assert_eq!(opened.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn http2_requests_share_one_connection() {
        let (addr, opened) = app(AppProtocol::Http2).await;
        let connections = AppConnections::new(addr, AppProtocol::Http2);
        let (first, second) = tokio::join!(
            connections.send(request(addr, AppProtocol::Http2, "/x")),
            connections.send(request(addr, AppProtocol::Http2, "/y"))
        );
        let mut answers = [text(first.unwrap()).await, text(second.unwrap()).await];
        answers.sort();
        assert_eq!(answers[0].split(' ').nth(1), Some("/x"));
        assert_eq!(answers[1].split(' ').nth(1), Some("/y"));
        assert_eq!(opened.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_app_that_is_not_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let connections = AppConnections::new(addr, AppProtocol::Http);
        let error = connections
            .send(request(addr, AppProtocol::Http, "/"))
            .await
            .unwrap_err();
        assert!(matches!(error, AppError::Connect(_)), "{error}");
    }
}
