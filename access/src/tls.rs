//! TLS on weft's listeners: a certificate and key from PEM files, reloaded
//! when the files change (certificates renewed by cert-manager, certbot or
//! an operator take effect without a restart), and optionally a CA whose
//! client certificates a listener requires (mTLS).
//!
//! [`TlsListener`] accepts TCP connections and runs each handshake in a task
//! of its own, so a slow or silent client never holds up the next one; the
//! finished connections serve axum (as an `axum::serve::Listener`) and tonic
//! (as an incoming stream) alike.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use arc_swap::ArcSwap;
use axum::serve::ListenerExt;
use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;

use crate::FileVersion;

/// Where a listener's certificate, key and (optional) client CA are.
#[derive(Clone, Debug, PartialEq)]
pub struct TlsFiles {
    /// PEM: the server certificate first, then its chain.
    pub cert_file: PathBuf,
    /// PEM: the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// PEM: CA certificates; when set, clients must present a certificate
    /// one of them issued.
    pub client_ca_file: Option<PathBuf>,
}

/// A TLS setup that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TlsError(pub String);

/// How long a client may take to finish its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes finished but not yet taken by the server.
const ACCEPT_QUEUE: usize = 256;

/// The current TLS configuration of a listener, kept in step with its files.
pub struct ServerTls {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    config: ArcSwap<ServerConfig>,
    loaded: Mutex<Vec<Option<FileVersion>>>,
}

impl ServerTls {
    /// Loads `files`; `alpn` lists the protocols offered, most preferred
    /// first (`h2` only for gRPC, `h2` and `http/1.1` for HTTP).
    pub fn load(files: TlsFiles, alpn: &[&[u8]]) -> Result<Arc<Self>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let loaded = file_versions(&files);
        let config = build_config(&files, &alpn)?;
        Ok(Arc::new(Self {
            files,
            alpn,
            config: ArcSwap::from_pointee(config),
            loaded: Mutex::new(loaded),
        }))
    }

    /// Rebuilds the configuration if any file changed since the last load.
    /// New connections get it; open ones keep theirs. Files that do not make
    /// a valid configuration (say, a certificate written before its key) are
    /// reported and the previous configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let versions = file_versions(&self.files);
        if *self.loaded.lock() == versions {
            return Ok(false);
        }
        *self.loaded.lock() = versions;
        let config = build_config(&self.files, &self.alpn)?;
        self.config.store(Arc::new(config));
        tracing::info!(cert = %self.files.cert_file.display(), "TLS certificate reloaded");
        Ok(true)
    }

    /// Checks the files every second until the returned task is dropped.
    pub fn watch(self: &Arc<Self>) -> crate::BackgroundTask {
        let this = self.clone();
        crate::BackgroundTask::reload_every(
            Duration::from_secs(1),
            "TLS configuration",
            move || this.reload_if_changed(),
        )
    }

    fn current(&self) -> Arc<ServerConfig> {
        self.config.load_full()
    }
}

fn file_versions(files: &TlsFiles) -> Vec<Option<FileVersion>> {
    [
        Some(&files.cert_file),
        Some(&files.key_file),
        files.client_ca_file.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|path| FileVersion::of(path))
    .collect()
}

/// The bytes of a PEM file; `what` names it in the error (`certificate file`).
pub fn read_pem(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| {
        TlsError(format!(
            "cannot read the TLS {what} {}: {e}",
            path.display()
        ))
    })
}

/// The certificates in a PEM file (`what` names it in errors), at least one.
pub fn read_certificates(
    path: &Path,
    what: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_pem(path, what)?;
    parse_certificates(&pem, &format!("the TLS {what} {}", path.display()))
}

/// The certificates in PEM text (`source` names it in errors), at least one.
pub fn parse_certificates(
    pem: &[u8],
    source: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = rustls_pemfile::certs(&mut &*pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError(format!("invalid PEM in {source}: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError(format!("no certificate in {source}")));
    }
    Ok(certs)
}

/// The private key (PKCS#8, PKCS#1 or SEC1) in PEM text.
pub fn parse_private_key(pem: &[u8], source: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    rustls_pemfile::private_key(&mut &*pem)
        .map_err(|e| TlsError(format!("invalid PEM in {source}: {e}")))?
        .ok_or_else(|| TlsError(format!("no private key in {source}")))
}

/// The private key in a PEM file.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_pem(path, "key file")?;
    parse_private_key(&pem, &format!("the TLS key file {}", path.display()))
}

/// A trust store of the CA certificates in a PEM file.
pub fn read_roots(path: &Path, what: &str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for ca in read_certificates(path, what)? {
        roots
            .add(ca)
            .map_err(|e| TlsError(format!("invalid CA certificate in {}: {e}", path.display())))?;
    }
    Ok(roots)
}

fn build_config(files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
    let chain = read_certificates(&files.cert_file, "certificate file")?;
    let key = read_private_key(&files.key_file)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(ca_file) => {
            let roots = read_roots(ca_file, "client CA file")?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| TlsError(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        TlsError(format!(
            "the certificate {} and key {} do not make a TLS identity: {e}",
            files.cert_file.display(),
            files.key_file.display()
        ))
    })?;
    config.alpn_protocols = alpn.to_vec();
    Ok(config)
}

/// One TLS connection, handshake done.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    local_addr: Option<SocketAddr>,
    remote_addr: SocketAddr,
}

impl TlsConnection {
    pub fn remote_addr(&self) -> SocketAddr {
        self.remote_addr
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// tonic finds the peer address (`Request::remote_addr`) through this.
impl tonic::transport::server::Connected for TlsConnection {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        tonic::transport::server::TcpConnectInfo {
            local_addr: self.local_addr,
            remote_addr: Some(self.remote_addr),
        }
    }
}

/// Accepts TCP connections and hands out those that finished a TLS handshake.
pub struct TlsListener {
    accepted: mpsc::Receiver<TlsConnection>,
    local_addr: SocketAddr,
    accept_loop: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Starts accepting on `listener` with `tls`'s current configuration
    /// for each new connection.
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>, what: &'static str) -> io::Result<Self> {
        let local_addr = listener.local_addr()?;
        let (sender, accepted) = mpsc::channel(ACCEPT_QUEUE);
        let accept_loop = tokio::spawn(async move {
            loop {
                let (tcp, remote_addr) = match listener.accept().await {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!(listener = what, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let sender = sender.clone();
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            let _ = sender
                                .send(TlsConnection {
                                    stream,
                                    local_addr: Some(local_addr),
                                    remote_addr,
                                })
                                .await;
                        }
                        // A scanner, a plain-text client or a certificate we
                        // refuse: the client learns it from the handshake.
                        Ok(Err(e)) => {
                            tracing::debug!(listener = what, peer = %remote_addr, error = %e, "TLS handshake failed")
                        }
                        Err(_) => {
                            tracing::debug!(listener = what, peer = %remote_addr, "TLS handshake timed out")
                        }
                    }
                });
            }
        });
        Ok(Self {
            accepted,
            local_addr,
            accept_loop,
        })
    }

    /// The connections as a stream, for tonic's `serve_with_incoming`.
    pub fn into_stream(self) -> impl futures::Stream<Item = io::Result<TlsConnection>> {
        futures::stream::unfold(self, |mut listener| async move {
            let connection = listener.accepted.recv().await?;
            Some((Ok(connection), listener))
        })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accept_loop.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.accepted.recv().await {
            Some(connection) => {
                let peer = connection.remote_addr;
                (connection, peer)
            }
            // The accept loop only ends when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local_addr)
    }
}

/// A bound listener, with TLS or without: what every weft server accepts on.
pub enum Incoming {
    Plain(TcpListener),
    Tls(TlsListener),
}

impl Incoming {
    /// `listener`, behind `tls` when it is given.
    pub fn new(
        listener: TcpListener,
        tls: Option<&Arc<ServerTls>>,
        what: &'static str,
    ) -> io::Result<Self> {
        Ok(match tls {
            None => Incoming::Plain(listener),
            Some(tls) => Incoming::Tls(TlsListener::new(listener, tls.clone(), what)?),
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Incoming::Plain(listener) => listener.local_addr(),
            Incoming::Tls(listener) => Ok(listener.local_addr),
        }
    }

    /// Serves `router` until `shutdown`, with each request's peer address
    /// as `ConnectInfo<SocketAddr>`.
    pub async fn serve(
        self,
        router: axum::Router,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        match self {
            Incoming::Plain(listener) => {
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Incoming::Tls(listener) => {
                // `tap_io` is what gives a custom listener's address to ConnectInfo.
                axum::serve(listener.tap_io(|_| {}), service)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
        }
    }
}

/// Accepts any server certificate: for a client told not to verify (the
/// gateway's `tls_verify: false`) and for tests that look at what the server
/// does with theirs. The handshake's signatures are still checked, so the
/// connection is encrypted to whoever holds the key — only who that is goes
/// unchecked.
#[derive(Debug)]
pub struct AnyServerCertificate(Arc<CryptoProvider>);

impl AnyServerCertificate {
    pub fn new(provider: Arc<CryptoProvider>) -> Self {
        Self(provider)
    }
}

impl ServerCertVerifier for AnyServerCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
