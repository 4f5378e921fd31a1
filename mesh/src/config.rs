//! The control plane's configuration file (`mesh.yaml`): the mesh's name, its
//! CA, certificate lifetimes, and the policies every sidecar receives.
//!
//! Policy names follow Kuma where they fit: traffic permissions (from → to,
//! allow/deny), tracing, timeouts, retries; request authorization is written
//! in Rego (OPA's language).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_proxy::TelemetryConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Parse(String),
    #[error("{at}: {reason}")]
    Invalid { at: String, reason: String },
}

fn invalid<T>(at: impl Into<String>, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        at: at.into(),
        reason: reason.into(),
    })
}

/// The whole control-plane file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MeshConfig {
    /// The mesh's name, and the trust domain of every workload identity
    /// (`spiffe://<mesh>/<service>`).
    pub mesh: String,
    /// Where the control plane keeps a CA it generated (`ca.pem`, `ca-key.pem`).
    pub state_dir: PathBuf,
    /// The CA that signs workload certificates.
    pub ca: CaConfig,
    /// Workload certificates.
    pub certificates: CertificatesConfig,
    /// Who may use the control plane's API.
    pub authentication: AuthenticationConfig,
    /// What every sidecar enforces; `PUT /policies` replaces this section.
    pub policies: Policies,
}

impl Default for MeshConfig {
    fn default() -> Self {
        Self {
            mesh: "default".to_string(),
            state_dir: PathBuf::from("weft-mesh"),
            ca: CaConfig::default(),
            certificates: CertificatesConfig::default(),
            authentication: AuthenticationConfig::default(),
            policies: Policies::default(),
        }
    }
}

/// Who may use the control plane's API (Kuma's dataplane tokens and
/// `localhostIsAdmin`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthenticationConfig {
    /// Sidecars present a dataplane token (`weft mesh token create
    /// --service …`) and get certificates for that service only; changing
    /// policies over the API takes an admin token. Off: anyone who reaches
    /// the API may ask for any service's certificate.
    pub enabled: bool,
    /// `PUT /policies` from a loopback address needs no admin token (the
    /// file itself can be edited there anyway).
    pub localhost_is_admin: bool,
}

impl Default for AuthenticationConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            localhost_is_admin: true,
        }
    }
}

/// The mesh CA: generated on first start and kept in `state_dir`, or loaded
/// from files (both or neither).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CaConfig {
    /// PEM certificate of a CA to use instead of a generated one.
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    pub key_file: Option<PathBuf>,
}

/// Workload certificates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificatesConfig {
    /// Lifetime of a workload certificate; sidecars renew it when 70% of it
    /// has passed, so a control plane may be away for the remaining 30%.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for CertificatesConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Everything sidecars enforce, sent to each of them whole.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policies {
    /// Who may call whom.
    pub traffic_permissions: TrafficPermissions,
    /// Where sidecars send their spans and access logs.
    pub tracing: TracingPolicy,
    /// Timeouts of calls to a service (the most specific `to` applies).
    pub timeouts: Vec<TimeoutPolicy>,
    /// Retries of calls to a service (the most specific `to` applies).
    pub retries: Vec<RetryPolicy>,
    /// Request-level authorization in Rego, evaluated by the callee's sidecar.
    pub authorization: Vec<AuthorizationPolicy>,
}

/// Traffic permissions, Kuma's MeshTrafficPermission in a flat form.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficPermissions {
    /// Zero trust: when on, a call is denied unless a rule allows it; when
    /// off, every call is allowed and `rules` are not consulted.
    pub enabled: bool,
    /// Rules; the most specific match wins (an exact `from` and `to` beats a
    /// `*`), and at equal specificity `deny` beats `allow`.
    pub rules: Vec<PermissionRule>,
}

/// One traffic permission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PermissionRule {
    /// Named in the log record of every call it denies.
    pub name: String,
    /// The calling service, or `*`.
    pub from: String,
    /// The called service, or `*`.
    pub to: String,
    pub action: Action,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Allow,
    Deny,
}

/// Tracing of every hop (Kuma's MeshTrace).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingPolicy {
    /// OTLP/gRPC endpoint, e.g. `http://127.0.0.1:4317`; none turns exporting
    /// off (trace context is still propagated).
    pub backend: Option<String>,
    /// Fraction of new traces recorded, 0.0–1.0; sampled incoming traces are always recorded.
    pub sampling: f64,
    /// One OTLP log record per request, carrying its trace id.
    pub access_log: bool,
}

impl Default for TracingPolicy {
    fn default() -> Self {
        Self {
            backend: None,
            sampling: 1.0,
            access_log: true,
        }
    }
}

impl TracingPolicy {
    /// The telemetry settings of a sidecar of `service` under this policy.
    pub(crate) fn telemetry_config(&self, service: Option<&str>) -> TelemetryConfig {
        TelemetryConfig {
            otlp_endpoint: self.backend.clone(),
            service_name: service.map(str::to_string),
            sampling: self.sampling,
            access_log: self.access_log,
            ..TelemetryConfig::default()
        }
    }
}

/// Timeouts of calls to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutPolicy {
    /// The called service, or `*`.
    pub to: String,
    /// Longest wait for a connection to the callee's sidecar.
    #[serde(with = "humantime_serde", default = "default_connect_timeout")]
    pub connect: Duration,
    /// Longest wait for the response's head, per attempt (504 beyond it).
    #[serde(with = "humantime_serde", default = "default_request_timeout")]
    pub request: Duration,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_request_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Retries of calls to `to`: idempotent requests without a body are tried
/// again, on another endpoint when there is one, after a connection failure,
/// a timeout or a 502/503/504.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// The called service, or `*`.
    pub to: String,
    /// Attempts after the first.
    pub attempts: u32,
}

/// A Rego policy deciding each request to `to`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthorizationPolicy {
    /// Named in the log record of every request it denies.
    pub name: String,
    /// The called service, or `*`.
    pub to: String,
    /// Rego source. Its input: `{"request": {"method", "path", "headers"},
    /// "source": {"service", "spiffe_id"}, "destination": {"service"}}`
    /// (header names lower-case).
    pub rego: String,
    /// The rule deciding; the request passes only when it is `true`.
    #[serde(default = "default_query")]
    pub query: String,
}

fn default_query() -> String {
    "data.weft.authz.allow".to_string()
}

impl MeshConfig {
    /// Reads and validates a YAML file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates YAML (or JSON, which is YAML).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Self = if text.trim().is_empty() {
            Self::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?
        };
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !is_trust_domain(&self.mesh) {
            return invalid(
                "mesh",
                format!(
                    "{:?} is not a valid trust domain (lower-case letters, digits, '-', '.', '_')",
                    self.mesh
                ),
            );
        }
        if self.ca.cert_file.is_some() != self.ca.key_file.is_some() {
            return invalid("ca", "cert_file and key_file go together");
        }
        if self.certificates.ttl < Duration::from_secs(2) {
            return invalid("certificates.ttl", "must be at least 2s");
        }
        self.policies.validate("policies")
    }
}

impl Policies {
    /// Parses and validates a `policies` section on its own (YAML or JSON).
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let policies: Self =
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        policies.validate("policies")?;
        Ok(policies)
    }

    /// Checks names and values; errors name the field path under `at`.
    pub(crate) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        let mut names = HashSet::new();
        for (i, rule) in self.traffic_permissions.rules.iter().enumerate() {
            let at = format!("{at}.traffic_permissions.rules[{i}]");
            if !names.insert(rule.name.as_str()) {
                return invalid(at, format!("rule name {:?} is used twice", rule.name));
            }
            check_target(&format!("{at}.from"), &rule.from)?;
            check_target(&format!("{at}.to"), &rule.to)?;
        }
        if let Err((field, reason)) = self.tracing.telemetry_config(None).validate() {
            let field = if field == "otlp_endpoint" {
                "backend"
            } else {
                field
            };
            return invalid(format!("{at}.tracing.{field}"), reason);
        }
        for (i, timeout) in self.timeouts.iter().enumerate() {
            check_target(&format!("{at}.timeouts[{i}].to"), &timeout.to)?;
            if timeout.connect.is_zero() || timeout.request.is_zero() {
                return invalid(format!("{at}.timeouts[{i}]"), "timeouts must be above 0");
            }
        }
        for (i, retry) in self.retries.iter().enumerate() {
            check_target(&format!("{at}.retries[{i}].to"), &retry.to)?;
            if retry.attempts > 10 {
                return invalid(format!("{at}.retries[{i}].attempts"), "at most 10");
            }
        }
        let mut names = HashSet::new();
        for (i, policy) in self.authorization.iter().enumerate() {
            let at = format!("{at}.authorization[{i}]");
            if !names.insert(policy.name.as_str()) {
                return invalid(&at, format!("policy name {:?} is used twice", policy.name));
            }
            check_target(&format!("{at}.to"), &policy.to)?;
            if let Err(e) = crate::policy::Authorizer::compile(policy) {
                return invalid(format!("{at}.rego"), e);
            }
        }
        Ok(())
    }
}

/// A service name as the mesh uses it (also the path of its SPIFFE id).
pub(crate) fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

fn is_trust_domain(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'.' | b'_')
        })
}

fn check_target(at: &str, target: &str) -> Result<(), ConfigError> {
    if target == "*" || is_service_name(target) {
        Ok(())
    } else {
        invalid(
            at,
            format!("{target:?} is neither a service name (letters, digits, '-', '_', '.') nor *"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_configuration_is_valid() {
        let text = include_str!("../examples/mesh.yaml");
        let config = MeshConfig::parse(text).expect("example parses");
        assert_eq!(config.mesh, "crm");
        assert!(config.policies.traffic_permissions.enabled);
        assert_eq!(config.policies.authorization.len(), 1);
    }

    #[test]
    fn an_empty_file_is_the_default_mesh() {
        let config = MeshConfig::parse("").expect("empty is fine");
        assert_eq!(config, MeshConfig::default());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("mesh: Bad Name", "mesh"),
            (
                "policies:\n  traffic_permissions:\n    rules:\n      - {name: a, from: 'x y', to: b, action: allow}",
                "policies.traffic_permissions.rules[0].from",
            ),
            ("policies:\n  tracing:\n    sampling: 2", "policies.tracing.sampling"),
            (
                "policies:\n  authorization:\n    - {name: a, to: b, rego: 'package x\nallow if {'}",
                "policies.authorization[0].rego",
            ),
        ];
        for (text, field) in cases {
            let error = MeshConfig::parse(text).expect_err(text).to_string();
            assert!(error.starts_with(field), "{text}: {error}");
        }
        let unknown = MeshConfig::parse("polices: {}")
            .expect_err("typo")
            .to_string();
        assert!(unknown.contains("unknown field `polices`"), "{unknown}");
    }
}
