//! mTLS between sidecars with rustls: a sidecar presents its workload
//! certificate on both sides of every connection, accepts only clients whose
//! certificate the mesh CA signed, and connects only to a server whose
//! certificate names the SPIFFE id of the service it meant to reach.
//!
//! A [`MeshTls`] is immutable; certificate rotation builds a new one and
//! swaps it in, so new handshakes use the new certificate while open
//! connections carry on.

use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore, ServerConfig,
    SignatureScheme,
};

use crate::spiffe::SpiffeId;

/// What a connection between two sidecars carries, agreed by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Wire {
    /// HTTP between sidecars: HTTP/2, whatever the apps speak, so one
    /// connection carries many requests.
    Http2,
    /// One HTTP/1.1 request that switches protocols (a WebSocket): an
    /// upgrade cannot share a multiplexed HTTP/2 connection, so it gets a
    /// connection of its own, as Linkerd does it.
    Http1Upgrade,
    /// A plain TCP stream tunnelled between sidecars.
    Tcp,
}

impl Wire {
    fn alpn(self) -> &'static [u8] {
        match self {
            Wire::Http2 => b"h2",
            Wire::Http1Upgrade => b"http/1.1",
            Wire::Tcp => b"weft-tcp",
        }
    }
}

/// Why a certificate or key could not be used.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the workload certificate: {0}")]
pub struct TlsError(String);

/// This sidecar's identity and the trust it places in the mesh CA.
pub(crate) struct MeshTls {
    pub(crate) identity: SpiffeId,
    pub(crate) not_after: SystemTime,
    /// Counts rotations; client configs built from an older one are rebuilt.
    pub(crate) generation: u64,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    server_http: Arc<ServerConfig>,
    server_tcp: Arc<ServerConfig>,
}

impl MeshTls {
    pub(crate) fn new(
        identity: SpiffeId,
        certificate_pem: &str,
        key_der: Vec<u8>,
        ca_pem: &str,
        generation: u64,
    ) -> Result<Self, TlsError> {
        let error = |e: &dyn std::fmt::Display| TlsError(e.to_string());
        let chain: Vec<CertificateDer<'static>> =
            rustls_pemfile::certs(&mut certificate_pem.as_bytes())
                .collect::<Result<_, _>>()
                .map_err(|e| error(&e))?;
        let leaf = chain
            .first()
            .ok_or_else(|| TlsError("no certificate in the answer".to_string()))?;
        if SpiffeId::of_certificate(leaf).as_ref() != Some(&identity) {
            return Err(TlsError(format!(
                "the certificate does not name {identity}"
            )));
        }
        let not_after = crate::ca::not_after_of(certificate_pem)
            .ok_or_else(|| TlsError("unreadable validity".to_string()))?;
        let mut roots = RootCertStore::empty();
        for ca in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
            roots
                .add(ca.map_err(|e| error(&e))?)
                .map_err(|e| error(&e))?;
        }
        let roots = Arc::new(roots);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(key_der.into());
        let server = |wires: &[Wire]| -> Result<Arc<ServerConfig>, TlsError> {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                    .build()
                    .map_err(|e| error(&e))?;
            let mut config = ServerConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| error(&e))?
                .with_client_cert_verifier(verifier)
                .with_single_cert(chain.clone(), key.clone_key())
                .map_err(|e| error(&e))?;
            config.alpn_protocols = wires.iter().map(|w| w.alpn().to_vec()).collect();
            Ok(Arc::new(config))
        };
        Ok(Self {
            server_http: server(&[Wire::Http2, Wire::Http1Upgrade])?,
            server_tcp: server(&[Wire::Tcp])?,
            identity,
            not_after,
            generation,
            chain,
            key,
            roots,
            provider,
        })
    }

    /// What the inbound listener accepts with: HTTP/2 or a TCP tunnel.
    pub(crate) fn server_config(&self, tcp: bool) -> Arc<ServerConfig> {
        if tcp {
            self.server_tcp.clone()
        } else {
            self.server_http.clone()
        }
    }

    /// A client config that presents this sidecar's certificate and accepts
    /// only a server proving to be `expected`.
    pub(crate) fn client_config(
        &self,
        expected: SpiffeId,
        wire: Wire,
    ) -> Result<Arc<ClientConfig>, TlsError> {
        let verifier = SpiffeVerifier {
            expected,
            roots: self.roots.clone(),
            provider: self.provider.clone(),
        };
        let mut config = ClientConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_auth_cert(self.chain.clone(), self.key.clone_key())
            .map_err(|e| TlsError(e.to_string()))?;
        config.alpn_protocols = vec![wire.alpn().to_vec()];
        Ok(Arc::new(config))
    }
}

/// The identity a verified client presented.
pub(crate) fn peer_identity(connection: &rustls::ServerConnection) -> Option<SpiffeId> {
    connection
        .peer_certificates()?
        .first()
        .and_then(|der| SpiffeId::of_certificate(der))
}

/// Chain to the mesh CA, then the SPIFFE id of the service meant (host
/// names play no part in the mesh).
#[derive(Debug)]
struct SpiffeVerifier {
    expected: SpiffeId,
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
}

#[derive(Debug, thiserror::Error)]
#[error("the peer is {found}, not {expected}")]
struct WrongPeer {
    expected: String,
    found: String,
}

impl ServerCertVerifier for SpiffeVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let cert = rustls::server::ParsedCertificate::try_from(end_entity)?;
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &cert,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        match SpiffeId::of_certificate(end_entity) {
            Some(found) if found == self.expected => Ok(ServerCertVerified::assertion()),
            found => Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(WrongPeer {
                    expected: self.expected.to_string(),
                    found: found
                        .map_or_else(|| "without a SPIFFE id".to_string(), |id| id.to_string()),
                })),
            ))),
        }
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
            &self.provider.signature_verification_algorithms,
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
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
