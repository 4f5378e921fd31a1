//! The mesh's certificate authority: it signs each sidecar's certificate
//! signing request with the sidecar's SPIFFE id as the only name.
//!
//! A sidecar keeps its private key to itself; the control plane only ever
//! sees the CSR. The CA is generated on first start and kept in the state
//! directory (key readable by its owner only), or loaded from files.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName,
    DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use time::OffsetDateTime;

use crate::api::from_unix_seconds;
use crate::config::MeshConfig;
use crate::spiffe::SpiffeId;

/// Why the CA could not be loaded or could not sign.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a usable CA: {reason}")]
    Unusable { path: PathBuf, reason: String },
    #[error("the certificate signing request is not valid: {0}")]
    BadRequest(String),
    #[error("cannot sign: {0}")]
    Signing(String),
}

/// The mesh CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    cert_pem: String,
    not_after: SystemTime,
}

/// A signed workload certificate.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    pub certificate_pem: String,
    pub not_after: SystemTime,
}

impl CertificateAuthority {
    /// Loads the configured CA, or the one generated earlier in the state
    /// directory, or generates and saves a new one.
    pub fn load_or_create(config: &MeshConfig) -> Result<Self, CaError> {
        if let (Some(cert), Some(key)) = (&config.ca.cert_file, &config.ca.key_file) {
            return Self::load(cert, key);
        }
        let cert = config.state_dir.join("ca.pem");
        let key = config.state_dir.join("ca-key.pem");
        if cert.exists() && key.exists() {
            return Self::load(&cert, &key);
        }
        let ca = Self::generate(&config.mesh)?;
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| CaError::Io {
                action,
                path,
                source,
            }
        };
        std::fs::create_dir_all(&config.state_dir).map_err(io("create", &config.state_dir))?;
        write_private(&key, &ca.issuer.key().serialize_pem()).map_err(io("write", &key))?;
        std::fs::write(&cert, &ca.cert_pem).map_err(io("write", &cert))?;
        tracing::info!(cert = %cert.display(), "generated the mesh CA");
        Ok(ca)
    }

    fn load(cert_path: &Path, key_path: &Path) -> Result<Self, CaError> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Io {
                action: "read",
                path: path.to_path_buf(),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(cert_path)?, read(key_path)?);
        let unusable = |path: &Path| {
            let path = path.to_path_buf();
            move |e: rcgen::Error| CaError::Unusable {
                path,
                reason: e.to_string(),
            }
        };
        let key = KeyPair::from_pem(&key_pem).map_err(unusable(key_path))?;
        let not_after = not_after_of(&cert_pem).ok_or_else(|| CaError::Unusable {
            path: cert_path.to_path_buf(),
            reason: "no PEM certificate in it".to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(unusable(cert_path))?;
        Ok(Self {
            issuer,
            cert_pem,
            not_after,
        })
    }

    fn generate(mesh: &str) -> Result<Self, CaError> {
        let signing = |e: rcgen::Error| CaError::Signing(e.to_string());
        let key = KeyPair::generate().map_err(signing)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("weft mesh {mesh} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::minutes(5);
        params.not_after = now + time::Duration::days(3650);
        params.serial_number = Some(random_serial());
        let cert = params.self_signed(&key).map_err(signing)?;
        let not_after = to_system_time(params.not_after);
        Ok(Self {
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
            not_after,
        })
    }

    /// The CA certificate, which every sidecar trusts.
    pub fn certificate_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }

    /// Signs `csr_pem` for `identity`, valid for `ttl`. Whatever names the
    /// CSR asks for are replaced by the identity: the CA decides who a
    /// workload is.
    pub fn issue(
        &self,
        identity: &SpiffeId,
        csr_pem: &str,
        ttl: Duration,
    ) -> Result<IssuedCertificate, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadRequest(e.to_string()))?;
        let uri = rcgen::string::Ia5String::try_from(identity.to_string())
            .map_err(|e| CaError::Signing(e.to_string()))?;
        let now = OffsetDateTime::now_utc();
        let params = &mut csr.params;
        params.subject_alt_names = vec![SanType::URI(uri)];
        params.distinguished_name = DistinguishedName::new();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        // A minute of slack for clocks a little behind ours.
        params.not_before = now - time::Duration::minutes(1);
        params.not_after = now + ttl;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let not_after = to_system_time(params.not_after);
        let cert = csr
            .signed_by(&self.issuer)
            .map_err(|e| CaError::Signing(e.to_string()))?;
        Ok(IssuedCertificate {
            certificate_pem: cert.pem(),
            not_after,
        })
    }
}

fn random_serial() -> SerialNumber {
    let mut bytes = fastrand::u128(..).to_be_bytes();
    // Positive, and never starting with a zero byte DER would strip.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn to_system_time(t: OffsetDateTime) -> SystemTime {
    from_unix_seconds(t.unix_timestamp())
}

/// The end of the first certificate's validity in a PEM text.
pub(crate) fn not_after_of(pem: &str) -> Option<SystemTime> {
    let der = rustls_pemfile::certs(&mut pem.as_bytes()).next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    Some(from_unix_seconds(cert.validity().not_after.timestamp()))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_ca_is_kept_and_signs_the_identity_not_what_the_csr_asks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = MeshConfig {
            mesh: "crm".to_string(),
            state_dir: dir.path().to_path_buf(),
            ..MeshConfig::default()
        };
        let ca = CertificateAuthority::load_or_create(&config).expect("generated");
        let again = CertificateAuthority::load_or_create(&config).expect("loaded");
        assert_eq!(ca.certificate_pem(), again.certificate_pem());

        let key = KeyPair::generate().expect("key");
        let mut asked = CertificateParams::new(vec!["evil.example".to_string()]).expect("params");
        asked.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let csr = asked
            .serialize_request(&key)
            .expect("csr")
            .pem()
            .expect("pem");
        let identity = SpiffeId::new("crm", "crm-database");
        let issued = again
            .issue(&identity, &csr, Duration::from_secs(60))
            .expect("signed");
        let der = rustls_pemfile::certs(&mut issued.certificate_pem.as_bytes())
            .next()
            .expect("a cert")
            .expect("pem");
        assert_eq!(SpiffeId::of_certificate(&der), Some(identity));
        let (_, cert) = x509_parser::parse_x509_certificate(&der).expect("der");
        assert!(!cert.is_ca());
        let names = cert
            .subject_alternative_name()
            .expect("san")
            .expect("present");
        assert_eq!(names.value.general_names.len(), 1);
    }

    #[test]
    fn a_csr_that_is_not_one_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = MeshConfig {
            state_dir: dir.path().to_path_buf(),
            ..MeshConfig::default()
        };
        let ca = CertificateAuthority::load_or_create(&config).expect("generated");
        let error = ca
            .issue(
                &SpiffeId::new("default", "a"),
                "not a csr",
                Duration::from_secs(60),
            )
            .expect_err("refused");
        assert!(matches!(error, CaError::BadRequest(_)), "{error}");
    }
}
