//! Workload identities: `spiffe://<mesh>/<service>`, carried as the only URI
//! name of a workload certificate.

use std::fmt;

use x509_parser::extensions::GeneralName;

/// A workload's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SpiffeId {
    trust_domain: String,
    service: String,
}

impl SpiffeId {
    pub fn new(trust_domain: &str, service: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            service: service.to_string(),
        }
    }

    /// Parses `spiffe://<trust domain>/<service>`.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("spiffe://")?;
        let (trust_domain, service) = rest.split_once('/')?;
        if trust_domain.is_empty() || !crate::config::is_service_name(service) {
            return None;
        }
        Some(Self::new(trust_domain, service))
    }

    /// The identity in a DER certificate's URI name, if it has exactly one
    /// SPIFFE URI.
    pub fn of_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert.subject_alternative_name().ok()??;
        let mut ids = names
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) if uri.starts_with("spiffe://") => Some(*uri),
                _ => None,
            });
        let id = ids.next()?;
        if ids.next().is_some() {
            return None;
        }
        Self::parse(id)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn service(&self) -> &str {
        &self.service
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}/{}", self.trust_domain, self.service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_malformed_ones_are_refused() {
        let id = SpiffeId::parse("spiffe://crm/crm-database").expect("valid");
        assert_eq!(id.service(), "crm-database");
        assert_eq!(id.to_string(), "spiffe://crm/crm-database");
        for bad in [
            "http://crm/x",
            "spiffe://crm",
            "spiffe:///x",
            "spiffe://crm/a/b",
        ] {
            assert_eq!(SpiffeId::parse(bad), None, "{bad}");
        }
    }
}
