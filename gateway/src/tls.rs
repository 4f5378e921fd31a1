//! TLS at both ends of the gateway.
//!
//! Clients: the HTTPS proxy listener serves the certificate the client's SNI
//! names, from the configuration's `certificates` (exact names, then
//! `*.domain`, then the default), looked up in the running configuration at
//! each handshake, so a reload changes certificates without a restart.
//!
//! Targets: `https` services and probes connect through one connector per
//! distinct TLS setting, verifying the target's certificate against the
//! system's CAs (read once) or a CA file, and its name (the target's host, or
//! `tls_server_name`); HTTP/2 or HTTP/1.1 by ALPN.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_rustls::{FixedServerNameResolver, HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use weft_access::tls::{
    parse_certificates, parse_private_key, read_certificates, read_pem, read_private_key,
    read_roots, AnyServerCertificate, TlsError,
};
use weft_access::FileVersion;

use crate::config::{CertificateConfig, ServiceConfig};
use crate::server::Runtime;

/// The proxy listener's certificates by server name.
#[derive(Default)]
pub(crate) struct Certificates {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// `*.example.com` under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl Certificates {
    /// Loads every certificate; an error names the entry (`certificates[1]`).
    pub(crate) fn load(configs: &[CertificateConfig]) -> Result<Self, (String, String)> {
        let mut certificates = Self::default();
        let (mut first, mut unnamed) = (None, None);
        for (i, config) in configs.iter().enumerate() {
            let at = format!("certificates[{i}]");
            let key = Arc::new(certified_key(config).map_err(|e| (at, e.0))?);
            for sni in &config.snis {
                let sni = sni.to_ascii_lowercase();
                match sni.strip_prefix("*.") {
                    Some(domain) => certificates
                        .wildcard
                        .insert(domain.to_string(), key.clone()),
                    None => certificates.exact.insert(sni, key.clone()),
                };
            }
            if config.snis.is_empty() {
                unnamed = Some(key.clone());
            }
            first.get_or_insert(key);
        }
        // What a client without SNI, or with a name no certificate lists,
        // gets (nginx's default server): the one without snis, else the first.
        certificates.default = unnamed.or(first);
        Ok(certificates)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.default.is_none()
    }

    fn resolve(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        let by_name = server_name.and_then(|name| {
            let name = name.to_ascii_lowercase();
            self.exact.get(&name).or_else(|| {
                let (_, domain) = name.split_once('.')?;
                self.wildcard.get(domain)
            })
        });
        by_name.or(self.default.as_ref()).cloned()
    }
}

fn certified_key(config: &CertificateConfig) -> Result<CertifiedKey, TlsError> {
    let (cert_pem, cert_source) = pem(&config.cert, &config.cert_file, "certificate")?;
    let (key_pem, key_source) = pem(&config.key, &config.key_file, "key")?;
    let chain = parse_certificates(&cert_pem, &cert_source)?;
    let key = parse_private_key(&key_pem, &key_source)?;
    let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| TlsError(format!("{key_source}: {e}")))?;
    let certified = CertifiedKey::new(chain, signing_key);
    certified.keys_match().map_err(|e| {
        TlsError(format!(
            "{cert_source} and {key_source} do not belong together: {e}"
        ))
    })?;
    Ok(certified)
}

/// The PEM text of an inline value or a file, and a name for it in errors.
fn pem(
    inline: &Option<String>,
    file: &Option<PathBuf>,
    what: &str,
) -> Result<(Vec<u8>, String), TlsError> {
    match (inline, file) {
        (Some(text), _) => Ok((text.as_bytes().to_vec(), format!("the inline {what}"))),
        (None, Some(path)) => Ok((
            read_pem(path, &format!("{what} file"))?,
            format!("the {what} file {}", path.display()),
        )),
        (None, None) => Err(TlsError(format!("no {what}"))),
    }
}

/// Picks, at each handshake, the certificate of the running configuration.
pub(crate) struct SniResolver(pub(crate) Arc<ArcSwap<Runtime>>);

impl fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SniResolver")
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.load().certificates.resolve(hello.server_name())
    }
}

/// The HTTPS proxy listener's TLS: certificates by SNI, HTTP/2 or HTTP/1.1
/// by ALPN.
pub(crate) fn proxy_server_config(runtime: Arc<ArcSwap<Runtime>>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver(runtime)));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// How to reach targets over TLS; connectors are pooled per distinct value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct UpstreamTls {
    pub(crate) verify: bool,
    /// A CA file, with its version so a changed file makes a new connector
    /// at the next reload.
    pub(crate) ca_file: Option<(PathBuf, Option<FileVersion>)>,
    pub(crate) server_name: Option<String>,
    /// The client certificate and key files presented to targets, with
    /// their versions like `ca_file`.
    pub(crate) client_identity: Option<[(PathBuf, Option<FileVersion>); 2]>,
}

impl UpstreamTls {
    pub(crate) fn new(verify: bool, ca_file: Option<&PathBuf>, server_name: Option<&str>) -> Self {
        Self {
            verify,
            ca_file: ca_file.map(|path| versioned(path)),
            server_name: server_name.map(str::to_string),
            client_identity: None,
        }
    }

    /// The TLS settings of an `https://` service.
    pub(crate) fn of_service(service: &ServiceConfig) -> Self {
        Self::new(
            service.tls_verify,
            service.tls_ca_file.as_ref(),
            service.tls_server_name.as_deref(),
        )
        .with_client_identity(
            service.tls_client_cert_file.as_ref(),
            service.tls_client_key_file.as_ref(),
        )
    }

    /// Presents the certificate in `cert_file` with the key in `key_file`
    /// (when both are given).
    pub(crate) fn with_client_identity(
        mut self,
        cert_file: Option<&PathBuf>,
        key_file: Option<&PathBuf>,
    ) -> Self {
        self.client_identity = cert_file
            .zip(key_file)
            .map(|(cert, key)| [versioned(cert), versioned(key)]);
        self
    }

    /// The client certificate chain and key to present, if any.
    fn client_identity(
        &self,
    ) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>, TlsError> {
        let Some([(cert, _), (key, _)]) = &self.client_identity else {
            return Ok(None);
        };
        let chain = read_certificates(cert, "client certificate file")?;
        Ok(Some((chain, read_private_key(key)?)))
    }
}

/// A file with its version, so that a changed file makes a new connector.
fn versioned(path: &Path) -> (PathBuf, Option<FileVersion>) {
    (path.to_path_buf(), FileVersion::of(path))
}

/// A connector for `http://` and, with `tls`, `https://` targets.
pub(crate) fn connector(
    tls: Option<&UpstreamTls>,
    connect_timeout: Duration,
) -> Result<HttpsConnector<HttpConnector>, TlsError> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    let config = match tls {
        Some(tls) => client_config(tls)?,
        // Never used: an http:// target is not wrapped.
        None => ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError(e.to_string()))?
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    let builder = HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_or_http();
    let builder = match tls.and_then(|tls| tls.server_name.as_deref()) {
        Some(name) => {
            let name = ServerName::try_from(name.to_string())
                .map_err(|e| TlsError(format!("{name:?}: {e}")))?;
            builder.with_server_name_resolver(FixedServerNameResolver::new(name))
        }
        None => builder,
    };
    Ok(builder.enable_all_versions().wrap_connector(http))
}

fn client_config(tls: &UpstreamTls) -> Result<ClientConfig, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError(e.to_string()))?;
    let builder = if !tls.verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServerCertificate::new(provider())))
    } else {
        let roots = match &tls.ca_file {
            Some((path, _)) => Arc::new(read_roots(path, "CA file")?),
            None => system_roots()?,
        };
        builder.with_root_certificates(roots)
    };
    match tls.client_identity()? {
        Some((chain, key)) => builder
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError(format!("the client certificate and key: {e}"))),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// The system's CA certificates, read once.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    if let Some(roots) = ROOTS.get() {
        return Ok(roots.clone());
    }
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(TlsError(
            "no CA certificates found on this system (install ca-certificates, or give tls_ca_file)"
                .to_string(),
        ));
    }
    Ok(ROOTS.get_or_init(|| Arc::new(roots)).clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed(names: &[&str]) -> CertificateConfig {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let cert = params.self_signed(&key).unwrap();
        CertificateConfig {
            cert: Some(cert.pem()),
            key: Some(key.serialize_pem()),
            snis: names.iter().map(|n| n.to_string()).collect(),
            ..CertificateConfig::default()
        }
    }

    #[test]
    fn certificates_are_chosen_by_exact_name_then_wildcard_then_default() {
        let mut default = self_signed(&["gateway.local"]);
        default.snis.clear();
        let configs = [
            self_signed(&["api.example.com"]),
            self_signed(&["*.example.com"]),
            default,
        ];
        let certificates = Certificates::load(&configs).unwrap();
        let leaf = |name: Option<&str>| {
            certificates.resolve(name).map(|key| {
                let (_, cert) = x509_parser::parse_x509_certificate(key.cert[0].as_ref()).unwrap();
                cert.subject_alternative_name()
                    .unwrap()
                    .unwrap()
                    .value
                    .general_names[0]
                    .to_string()
            })
        };
        assert_eq!(
            leaf(Some("API.example.com")).unwrap(),
            "DNSName(api.example.com)"
        );
        assert_eq!(
            leaf(Some("www.example.com")).unwrap(),
            "DNSName(*.example.com)"
        );
        assert_eq!(
            leaf(Some("a.b.example.com")).unwrap(),
            "DNSName(gateway.local)"
        );
        assert_eq!(leaf(None).unwrap(), "DNSName(gateway.local)");
    }

    #[test]
    fn a_key_of_another_certificate_is_refused_naming_the_entry() {
        let mut config = self_signed(&["api.example.com"]);
        config.key = self_signed(&["other.example.com"]).key;
        let (at, reason) = Certificates::load(&[config]).err().unwrap();
        assert_eq!(at, "certificates[0]");
        assert!(reason.contains("do not belong together"), "{reason}");
    }
}
