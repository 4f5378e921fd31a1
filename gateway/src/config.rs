//! The gateway's declarative configuration: one YAML file in Kong's shape
//! (services with their routes, upstreams with their targets, consumers with
//! their credentials, plugins at the global, service or route level).
//!
//! Parsing checks the shape (unknown fields are errors, with the line); `validate`
//! checks what the shape cannot say (names that must exist, regexes that must
//! compile) and names the field path and, where it can find it, the line.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use weft_proxy::TelemetryConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not valid YAML, or not the gateway's shape; the message carries the line.
    #[error("{0}")]
    Syntax(String),
    /// Valid shape, invalid meaning: `at` is the field path.
    #[error("{}{at}: {reason}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        at: String,
        reason: String,
        line: Option<usize>,
    },
}

/// The whole file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Kong's declarative files start with it; accepted and ignored.
    #[serde(default, rename = "_format_version", skip_serializing)]
    pub format_version: Option<String>,
    /// Where and how the gateway reports its spans and access logs.
    #[serde(default)]
    pub telemetry: TelemetryConfig,
    /// Backends the gateway forwards to, each with the routes that lead to it.
    #[serde(default)]
    pub services: Vec<ServiceConfig>,
    /// Load-balanced target sets; a service whose `url` host names an upstream
    /// is balanced over its targets.
    #[serde(default)]
    pub upstreams: Vec<UpstreamConfig>,
    /// Callers known to the auth plugins.
    #[serde(default)]
    pub consumers: Vec<ConsumerConfig>,
    /// Plugins applied to every route (a service's or route's plugin of the same
    /// name takes precedence).
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
    /// Certificates the HTTPS proxy listener serves, chosen by the client's
    /// SNI; with any, the gateway also listens for HTTPS.
    #[serde(default)]
    pub certificates: Vec<CertificateConfig>,
}

/// A certificate and key for the HTTPS proxy listener (Kong's certificate
/// with its SNIs), from files or inline PEM.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM file: the certificate, then its chain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// PEM file: its private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The certificate chain as PEM text, instead of `cert_file`.
    #[serde(default, skip_serializing)]
    pub cert: Option<String>,
    /// The private key as PEM text, instead of `key_file`; never shown by
    /// the Admin API.
    #[serde(default, skip_serializing)]
    pub key: Option<String>,
    /// Server names it is served for, exact or `*.example.com` (one
    /// label); none makes it the default, served when no name matches.
    #[serde(default)]
    pub snis: Vec<String>,
}

/// Protocol spoken to a service's targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1.
    #[default]
    Http,
    /// HTTP/2 without TLS (prior knowledge), e.g. for gRPC backends.
    H2c,
    /// TLS, then HTTP/2 or HTTP/1.1 as the target offers (ALPN); what an
    /// `https://` url means.
    Https,
}

/// A backend: where requests go and how.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceConfig {
    /// Unique name, used in spans, metrics and the Admin API.
    pub name: String,
    /// `http://host:port/path` or `https://…`; the host may name an
    /// upstream. The path is prepended to the forwarded path.
    pub url: String,
    /// Protocol to the targets (`https` for an `https://` url).
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// With TLS: verify the target's certificate against the system's CAs
    /// (or `tls_ca_file`) and its name. Off accepts any certificate.
    #[serde(default = "default_true")]
    pub tls_verify: bool,
    /// With TLS: PEM CA certificates to verify targets with, instead of the
    /// system's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_ca_file: Option<PathBuf>,
    /// With TLS: the name sent as SNI and checked in the target's
    /// certificate (default: the target's host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_server_name: Option<String>,
    /// With TLS: a PEM client certificate (chain) presented to targets that
    /// require one (mutual TLS, Kong's `client_certificate`); needs
    /// `tls_client_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_cert_file: Option<PathBuf>,
    /// The PEM private key of `tls_client_cert_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_client_key_file: Option<PathBuf>,
    /// Time to establish a connection to a target.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Longest wait for the response headers, and between two response body chunks.
    #[serde(default = "default_io_timeout", with = "humantime_serde")]
    pub read_timeout: Duration,
    /// Longest wait between two request body chunks sent upstream.
    #[serde(default = "default_io_timeout", with = "humantime_serde")]
    pub write_timeout: Duration,
    /// Further attempts, on another target where there is one, after a failed
    /// connection or a 502/503/504 — only for idempotent requests without a body.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Routes leading to this service.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Plugins for every route of this service.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
}

fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_io_timeout() -> Duration {
    Duration::from_secs(60)
}
fn default_retries() -> u32 {
    2
}

/// Which requests lead to a service. Every listed condition must match; an
/// empty list matches anything.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Unique name, the `http.route` of the spans.
    pub name: String,
    /// `Host` values; `*.example.com` matches any subdomain.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Path prefixes, or regexes when they start with `~` (anchored at the start).
    #[serde(default)]
    pub paths: Vec<String>,
    /// Methods, e.g. `GET`.
    #[serde(default)]
    pub methods: Vec<String>,
    /// Header name → accepted values (any of them).
    #[serde(default)]
    pub headers: BTreeMap<String, Vec<String>>,
    /// Remove the matched path prefix before forwarding.
    #[serde(default = "default_true")]
    pub strip_path: bool,
    /// Forward the client's `Host` instead of the target's.
    #[serde(default)]
    pub preserve_host: bool,
    /// Among regex paths, higher is tried first.
    #[serde(default)]
    pub regex_priority: i32,
    /// How clients may reach the route: `http`, `https` or both (Kong's
    /// `protocols`). An `https`-only route answers plain HTTP with
    /// `https_redirect_status_code`; an `http`-only route does not match HTTPS.
    #[serde(default = "default_protocols")]
    pub protocols: Vec<String>,
    /// What a plain-HTTP request to an `https`-only route gets: 426 (Upgrade
    /// Required), or a redirect to its `https://` URL with 301, 302, 307 or 308.
    #[serde(default = "default_https_redirect_status_code")]
    pub https_redirect_status_code: u16,
    /// Plugins for this route only.
    #[serde(default)]
    pub plugins: Vec<PluginConfig>,
}

fn default_true() -> bool {
    true
}

fn default_protocols() -> Vec<String> {
    vec!["http".to_string(), "https".to_string()]
}

fn default_https_redirect_status_code() -> u16 {
    426
}

/// How an upstream spreads requests over its targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    /// Weighted round robin.
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight (relative to its weight).
    LeastRequests,
    /// The same `hash_on_header` value goes to the same target while it is healthy.
    ConsistentHashing,
}

/// A load-balanced set of targets.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Name; a service's `url` host refers to it.
    pub name: String,
    /// Balancing algorithm.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Header whose value is hashed by `consistent-hashing` (the client IP when absent).
    #[serde(default)]
    pub hash_on_header: Option<String>,
    /// `host:port` targets.
    pub targets: Vec<TargetConfig>,
    /// Health checks.
    #[serde(default)]
    pub healthchecks: HealthchecksConfig,
}

/// One target of an upstream.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `host:port`.
    pub target: String,
    /// Relative share of requests, 1–1000.
    #[serde(default = "default_weight")]
    pub weight: u32,
}

fn default_weight() -> u32 {
    100
}

/// Active and passive health checks.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthchecksConfig {
    /// Probes each target periodically; off when absent.
    #[serde(default)]
    pub active: Option<ActiveHealthcheck>,
    /// Watches proxied responses; off when absent.
    #[serde(default)]
    pub passive: Option<PassiveHealthcheck>,
}

/// How active checks reach a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProbeType {
    #[default]
    Http,
    /// TLS first, verified as `https_verify_certificate` says.
    Https,
}

/// Periodic probes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealthcheck {
    /// `http` or `https`.
    #[serde(rename = "type")]
    pub probe_type: ProbeType,
    /// Path probed with `GET`.
    pub http_path: String,
    /// `https` probes: verify the target's certificate (system CAs, or
    /// `https_ca_file`).
    pub https_verify_certificate: bool,
    /// `https` probes: PEM CA certificates to verify targets with.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_ca_file: Option<PathBuf>,
    /// `https` probes: the SNI and name checked (default: the target's host).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_sni: Option<String>,
    /// `https` probes: a PEM client certificate (chain) for targets that
    /// require one; needs `https_client_key_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_client_cert_file: Option<PathBuf>,
    /// `https` probes: the PEM private key of `https_client_cert_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https_client_key_file: Option<PathBuf>,
    /// Time between probes of one target.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A probe without an answer by then fails.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive successes that bring an unhealthy target back.
    pub healthy_successes: u32,
    /// Consecutive failures that take a healthy target out.
    pub unhealthy_failures: u32,
    /// Statuses counted as success.
    pub healthy_statuses: Vec<u16>,
}

impl Default for ActiveHealthcheck {
    fn default() -> Self {
        Self {
            probe_type: ProbeType::Http,
            https_verify_certificate: true,
            https_ca_file: None,
            https_sni: None,
            https_client_cert_file: None,
            https_client_key_file: None,
            http_path: "/".to_string(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(1),
            healthy_successes: 2,
            unhealthy_failures: 2,
            healthy_statuses: vec![
                200, 201, 202, 203, 204, 205, 206, 301, 302, 303, 304, 307, 308,
            ],
        }
    }
}

/// Outlier detection on live traffic.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveHealthcheck {
    /// Consecutive failures (connection errors, timeouts, `unhealthy_statuses`)
    /// that take a target out.
    pub unhealthy_failures: u32,
    /// Statuses counted as failures.
    pub unhealthy_statuses: Vec<u16>,
    /// Without active checks, a target taken out comes back after this long.
    #[serde(with = "humantime_serde")]
    pub recovery: Duration,
}

impl Default for PassiveHealthcheck {
    fn default() -> Self {
        Self {
            unhealthy_failures: 3,
            unhealthy_statuses: vec![500, 502, 503, 504],
            recovery: Duration::from_secs(10),
        }
    }
}

/// A known caller.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    /// Name, sent upstream as `X-Consumer-Username`.
    pub username: String,
    /// Groups, for the `acl` plugin.
    #[serde(default)]
    pub groups: Vec<String>,
    /// API keys for `key-auth`.
    #[serde(default)]
    pub keyauth_credentials: Vec<KeyCredential>,
    /// JWT issuers for `jwt`.
    #[serde(default)]
    pub jwt_secrets: Vec<JwtCredential>,
}

/// One API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyCredential {
    /// The key; never shown by the Admin API.
    #[serde(skip_serializing)]
    pub key: String,
}

/// Signature algorithms accepted by the `jwt` plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
}

/// One JWT issuer of a consumer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtCredential {
    /// Value of the token's key claim (`iss` by default) that selects this credential.
    pub key: String,
    /// Algorithm the token must be signed with.
    pub algorithm: JwtAlgorithm,
    /// HS256 shared secret.
    #[serde(default, skip_serializing)]
    pub secret: Option<String>,
    /// RS256 public key, PEM.
    #[serde(default, skip_serializing)]
    pub rsa_public_key: Option<String>,
}

/// A plugin and its settings (the settings' fields depend on the plugin).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginConfig {
    /// Plugin name: `rate-limiting`, `key-auth`, `jwt`, `acl`, `cors`,
    /// `correlation-id`, `request-transformer`, `response-transformer`,
    /// `request-size-limiting`.
    pub name: String,
    /// Off without removing it.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The plugin's settings.
    #[serde(default)]
    pub config: serde_json::Value,
}

impl GatewayConfig {
    /// Reads and validates the file at `path`.
    pub fn load(path: &std::path::Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: GatewayConfig = if text.trim().is_empty() {
            GatewayConfig::default()
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?
        };
        config.validate().map_err(|e| match e {
            ConfigError::Invalid { at, reason, .. } => {
                let line = line_of(text, &at);
                ConfigError::Invalid { at, reason, line }
            }
            other => other,
        })?;
        Ok(config)
    }

    /// Checks names, references and values; errors name the field path.
    fn validate(&self) -> Result<(), ConfigError> {
        if let Err(invalid_field) = self.telemetry.validate() {
            let (field, reason) = invalid_field;
            return invalid(&format!("telemetry.{field}"), reason);
        }
        let mut upstreams = HashSet::new();
        for (i, u) in self.upstreams.iter().enumerate() {
            let at = format!("upstreams[{i}]");
            if !upstreams.insert(u.name.as_str()) {
                return invalid(&at, format!("upstream name {:?} is used twice", u.name));
            }
            if u.targets.is_empty() {
                return invalid(
                    &format!("{at}.targets"),
                    format!("upstream {:?} has no targets", u.name),
                );
            }
            for (j, target) in u.targets.iter().enumerate() {
                let at = format!("{at}.targets[{j}]");
                if target
                    .target
                    .parse::<http::uri::Authority>()
                    .map(|a| a.port().is_none())
                    .unwrap_or(true)
                {
                    return invalid(&at, format!("target {:?} is not host:port", target.target));
                }
                if !(1..=1000).contains(&target.weight) {
                    return invalid(&at, format!("weight must be 1–1000, got {}", target.weight));
                }
            }
            if let Some(active) = &u.healthchecks.active {
                if !active.http_path.starts_with('/') {
                    return invalid(
                        &format!("{at}.healthchecks.active.http_path"),
                        "must start with /",
                    );
                }
                if let Some(name) = &active.https_sni {
                    check_server_name(&format!("{at}.healthchecks.active.https_sni"), name)?;
                }
                if active.https_client_cert_file.is_some() != active.https_client_key_file.is_some()
                {
                    return invalid(
                        &format!("{at}.healthchecks.active.https_client_cert_file"),
                        "https_client_cert_file and https_client_key_file go together: set both or neither",
                    );
                }
                if active.interval.is_zero()
                    || active.healthy_successes == 0
                    || active.unhealthy_failures == 0
                {
                    return invalid(
                        &format!("{at}.healthchecks.active"),
                        "interval, healthy_successes and unhealthy_failures must be above 0",
                    );
                }
            }
            if let Some(passive) = &u.healthchecks.passive {
                if passive.unhealthy_failures == 0 {
                    return invalid(
                        &format!("{at}.healthchecks.passive.unhealthy_failures"),
                        "must be above 0",
                    );
                }
            }
        }
        let mut services = HashSet::new();
        let mut routes = HashSet::new();
        for (i, s) in self.services.iter().enumerate() {
            let at = format!("services[{i}]");
            if !services.insert(s.name.as_str()) {
                return invalid(&at, format!("service name {:?} is used twice", s.name));
            }
            let uri: http::Uri = s.url.parse().map_err(|e| ConfigError::Invalid {
                at: format!("{at}.url"),
                reason: format!("{:?} is not a URL: {e}", s.url),
                line: None,
            })?;
            if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
                return invalid(
                    &format!("{at}.url"),
                    format!("{:?} must be an http:// or https:// URL with a host", s.url),
                );
            }
            match (uri.scheme_str(), s.protocol) {
                (Some("https"), UpstreamProtocol::H2c) => {
                    return invalid(
                        &format!("{at}.protocol"),
                        "h2c is HTTP/2 without TLS; an https:// url speaks HTTP/2 over TLS when the target offers it",
                    )
                }
                (Some("http"), UpstreamProtocol::Https) => {
                    return invalid(
                        &format!("{at}.protocol"),
                        format!("https needs an https:// url, not {:?}", s.url),
                    )
                }
                _ => {}
            }
            if let Some(name) = &s.tls_server_name {
                check_server_name(&format!("{at}.tls_server_name"), name)?;
            }
            match (&s.tls_client_cert_file, &s.tls_client_key_file) {
                (Some(_), None) | (None, Some(_)) => {
                    return invalid(
                        &format!("{at}.tls_client_cert_file"),
                        "tls_client_cert_file and tls_client_key_file go together: set both or neither",
                    )
                }
                (Some(_), Some(_)) if uri.scheme_str() != Some("https") => {
                    return invalid(
                        &format!("{at}.tls_client_cert_file"),
                        format!("a client certificate is presented over TLS: it needs an https:// url, not {:?}", s.url),
                    )
                }
                _ => {}
            }
            // A service with its own host:port gets a one-target upstream under its name.
            let uses_upstream =
                uri.port().is_none() && upstreams.contains(uri.host().unwrap_or_default());
            if !uses_upstream && upstreams.contains(s.name.as_str()) {
                return invalid(
                    &format!("{at}.name"),
                    format!("{:?} is also an upstream's name; point the url at it (http://{}) or rename the service", s.name, s.name),
                );
            }
            for (j, r) in s.routes.iter().enumerate() {
                let at = format!("{at}.routes[{j}]");
                if !routes.insert(r.name.as_str()) {
                    return invalid(&at, format!("route name {:?} is used twice", r.name));
                }
                if r.hosts.is_empty()
                    && r.paths.is_empty()
                    && r.methods.is_empty()
                    && r.headers.is_empty()
                {
                    return invalid(
                        &at,
                        "a route needs at least one of hosts, paths, methods or headers",
                    );
                }
                if r.protocols.is_empty() {
                    return invalid(
                        &format!("{at}.protocols"),
                        "a route needs at least one protocol (http, https)",
                    );
                }
                for (k, protocol) in r.protocols.iter().enumerate() {
                    if !matches!(protocol.as_str(), "http" | "https") {
                        return invalid(
                            &format!("{at}.protocols[{k}]"),
                            format!("{protocol:?} is not a protocol the gateway serves routes on (http, https)"),
                        );
                    }
                }
                if !matches!(r.https_redirect_status_code, 301 | 302 | 307 | 308 | 426) {
                    return invalid(
                        &format!("{at}.https_redirect_status_code"),
                        format!(
                            "must be 426, 301, 302, 307 or 308, got {}",
                            r.https_redirect_status_code
                        ),
                    );
                }
                for (k, path) in r.paths.iter().enumerate() {
                    if let Some(pattern) = path.strip_prefix('~') {
                        if let Err(e) = regex::Regex::new(pattern) {
                            return invalid(
                                &format!("{at}.paths[{k}]"),
                                format!("invalid regex: {e}"),
                            );
                        }
                    } else if !path.starts_with('/') {
                        return invalid(
                            &format!("{at}.paths[{k}]"),
                            format!("{path:?} must start with / (or ~ for a regex)"),
                        );
                    }
                }
                for (k, method) in r.methods.iter().enumerate() {
                    if method.parse::<http::Method>().is_err() {
                        return invalid(
                            &format!("{at}.methods[{k}]"),
                            format!("{method:?} is not an HTTP method"),
                        );
                    }
                }
                crate::plugins::validate(&r.plugins, &format!("{at}.plugins"))?;
            }
            crate::plugins::validate(&s.plugins, &format!("{at}.plugins"))?;
        }
        crate::plugins::validate(&self.plugins, "plugins")?;
        let mut snis = HashSet::new();
        for (i, c) in self.certificates.iter().enumerate() {
            let at = format!("certificates[{i}]");
            if c.cert.is_some() == c.cert_file.is_some() || c.key.is_some() == c.key_file.is_some()
            {
                return invalid(
                    &at,
                    "give the certificate as cert_file or cert, and its key as key_file or key",
                );
            }
            for (j, sni) in c.snis.iter().enumerate() {
                let name = sni.strip_prefix("*.").unwrap_or(sni);
                if rustls::pki_types::DnsName::try_from(name).is_err() {
                    return invalid(
                        &format!("{at}.snis[{j}]"),
                        format!("{sni:?} is not a host name (or *.domain)"),
                    );
                }
                if !snis.insert(sni.to_ascii_lowercase()) {
                    return invalid(
                        &format!("{at}.snis[{j}]"),
                        format!("{sni:?} is served by an earlier certificate"),
                    );
                }
            }
        }
        if self
            .certificates
            .iter()
            .filter(|c| c.snis.is_empty())
            .count()
            > 1
        {
            return invalid(
                "certificates",
                "only one certificate may go without snis (the default)",
            );
        }
        let mut consumers = HashSet::new();
        for (i, c) in self.consumers.iter().enumerate() {
            let at = format!("consumers[{i}]");
            if !consumers.insert(c.username.as_str()) {
                return invalid(&at, format!("consumer {:?} is used twice", c.username));
            }
            for (j, jwt) in c.jwt_secrets.iter().enumerate() {
                let at = format!("{at}.jwt_secrets[{j}]");
                let ok = match jwt.algorithm {
                    JwtAlgorithm::HS256 => jwt.secret.is_some(),
                    JwtAlgorithm::RS256 => jwt.rsa_public_key.is_some(),
                };
                if !ok {
                    return invalid(&at, "HS256 needs `secret`, RS256 needs `rsa_public_key`");
                }
            }
        }
        Ok(())
    }
}

fn check_server_name(at: &str, name: &str) -> Result<(), ConfigError> {
    match rustls::pki_types::ServerName::try_from(name) {
        Ok(_) => Ok(()),
        Err(_) => invalid(at, format!("{name:?} is not a host name or IP address")),
    }
}

pub(crate) fn invalid<T>(at: &str, reason: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        at: at.to_string(),
        reason: reason.into(),
        line: None,
    })
}

/// The line of the YAML node at `path` (`services[1].routes[0].paths[2]`),
/// found by walking the text: each key's line, then the n-th list item below it.
fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut from = 0usize;
    let mut min_indent = 0usize;
    let mut found = None;
    for part in path.split('.') {
        let (key, index) = match part.split_once('[') {
            Some((key, rest)) => (key, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        let Some(key_line) = (from..lines.len()).find(|&n| {
            let line = lines[n];
            let indent = line.len() - line.trim_start().len();
            let body = line.trim_start().trim_start_matches("- ");
            indent >= min_indent
                && body.starts_with(key)
                && body[key.len()..].trim_start().starts_with(':')
        }) else {
            break;
        };
        let key_indent = lines[key_line].len() - lines[key_line].trim_start().len();
        found = Some(key_line);
        from = key_line + 1;
        min_indent = key_indent;
        if let Some(index) = index {
            let items: Vec<usize> = (from..lines.len())
                .take_while(|&n| {
                    let l = lines[n];
                    let indent = l.len() - l.trim_start().len();
                    l.trim().is_empty()
                        || indent > key_indent
                        || (indent == key_indent && l.trim_start().starts_with("- "))
                })
                .filter(|&n| lines[n].trim_start().starts_with("- "))
                .collect();
            // A flow sequence (`[a, b]`) has no item lines: the key's line is the best answer.
            let Some(item_indent) = items
                .first()
                .map(|&n| lines[n].len() - lines[n].trim_start().len())
            else {
                break;
            };
            let Some(&item) = items
                .iter()
                .filter(|&&n| lines[n].len() - lines[n].trim_start().len() == item_indent)
                .nth(index)
            else {
                break;
            };
            found = Some(item);
            from = item;
            min_indent = item_indent;
        }
    }
    found.map(|n| n + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
services:
  - name: crm-mobile
    url: http://127.0.0.1:9000
    routes:
      - name: api
        paths: [/api]
      - name: bad
        paths:
          - /ok
          - \"~([\"
";

    #[test]
    fn an_invalid_regex_is_reported_with_its_path_and_line() {
        let error = GatewayConfig::parse(SAMPLE).unwrap_err().to_string();
        assert!(
            error.starts_with("line 10: services[0].routes[1].paths[1]: invalid regex"),
            "{error}"
        );
    }

    #[test]
    fn in_a_flow_sequence_the_line_of_its_key_is_reported() {
        let error = GatewayConfig::parse(
            "services:\n  - name: a\n    url: http://x:1\n    routes: [{name: r, paths: [nope]}]\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("line 4: services[0].routes[0].paths[0]"),
            "{error}"
        );
    }

    #[test]
    fn an_unknown_field_is_reported_with_its_line() {
        let error =
            GatewayConfig::parse("services:\n  - name: a\n    url: http://x:1\n    rutes: []\n")
                .unwrap_err()
                .to_string();
        assert!(
            error.contains("unknown field `rutes`") && error.contains("line 4"),
            "{error}"
        );
    }

    #[test]
    fn the_example_in_the_readme_is_valid() {
        let config = GatewayConfig::parse(include_str!("../examples/gateway.yaml")).unwrap();
        assert_eq!(config.services[0].routes.len(), 2);
        crate::plugins::Consumers::new(&config.consumers).unwrap();
    }

    #[test]
    fn tls_settings_that_cannot_work_are_refused_naming_the_field() {
        let cases = [
            (
                "services:\n  - {name: a, url: 'https://x:1', protocol: h2c}\n",
                "services[0].protocol",
            ),
            (
                "services:\n  - {name: a, url: 'http://x:1', protocol: https}\n",
                "services[0].protocol",
            ),
            (
                "services:\n  - {name: a, url: 'https://x:1', tls_server_name: 'not a name'}\n",
                "services[0].tls_server_name",
            ),
            (
                "services:\n  - {name: a, url: 'https://x:1', tls_client_cert_file: c.pem}\n",
                "services[0].tls_client_cert_file",
            ),
            (
                "services:\n  - {name: a, url: 'http://x:1', routes: [{name: r, paths: [/], protocols: [tcp]}]}\n",
                "services[0].routes[0].protocols[0]",
            ),
            (
                "services:\n  - {name: a, url: 'http://x:1', routes: [{name: r, paths: [/], protocols: []}]}\n",
                "services[0].routes[0].protocols",
            ),
            (
                "services:\n  - {name: a, url: 'http://x:1', routes: [{name: r, paths: [/], https_redirect_status_code: 200}]}\n",
                "services[0].routes[0].https_redirect_status_code",
            ),
            (
                "services:\n  - {name: a, url: 'http://x:1', tls_client_cert_file: c.pem, tls_client_key_file: k.pem}\n",
                "services[0].tls_client_cert_file",
            ),
            (
                "certificates:\n  - {cert_file: a.pem, cert: x, key_file: k.pem}\n",
                "certificates[0]",
            ),
            (
                "certificates:\n  - {cert: x, key: y, snis: ['bad name']}\n",
                "certificates[0].snis[0]",
            ),
            (
                "certificates:\n  - {cert: x, key: y, snis: [a.example.com]}\n  - {cert: x, key: y, snis: [A.example.com]}\n",
                "certificates[1].snis[0]",
            ),
            (
                "certificates:\n  - {cert: x, key: y}\n  - {cert: x, key: y}\n",
                "certificates",
            ),
        ];
        for (text, field) in cases {
            let error = GatewayConfig::parse(text).expect_err(text).to_string();
            let without_line = match error.strip_prefix("line ") {
                Some(rest) => rest.split_once(": ").map_or(rest, |(_, rest)| rest),
                None => &error,
            };
            let at = without_line.split_once(": ").map_or("", |(at, _)| at);
            assert_eq!(at, field, "{text}: {error}");
        }
        let https = GatewayConfig::parse("services:\n  - {name: a, url: 'https://x'}\n").unwrap();
        assert_eq!(https.services[0].protocol, UpstreamProtocol::Http);
    }

    #[test]
    fn an_empty_file_is_a_gateway_with_nothing_configured() {
        let config = GatewayConfig::parse("").unwrap();
        assert!(config.services.is_empty());
        assert_eq!(config.telemetry.service_name, None);
    }
}
