//! What the control plane and its sidecars say to each other over HTTP
//! (JSON bodies under `/sidecar/v1/`).

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::config::Policies;

/// What an app speaks on its port, and so what the sidecars carry for it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    /// HTTP/1.1 (and HTTP/2 with prior knowledge from callers).
    #[default]
    Http,
    /// HTTP/2 without TLS to the app (gRPC).
    Http2,
    /// Bytes: the sidecars tunnel the TCP stream and authorize per connection.
    Tcp,
}

impl FromStr for AppProtocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "http" => Ok(Self::Http),
            "http2" | "grpc" => Ok(Self::Http2),
            "tcp" => Ok(Self::Tcp),
            other => Err(format!("unknown protocol {other:?}: http, http2 or tcp")),
        }
    }
}

impl fmt::Display for AppProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Http => "http",
            Self::Http2 => "http2",
            Self::Tcp => "tcp",
        })
    }
}

/// A time as the API carries it: whole seconds since the Unix epoch (0 for
/// anything before it).
pub(crate) fn unix_seconds(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The inverse of [`unix_seconds`], for signed timestamps (negative is the epoch).
pub(crate) fn from_unix_seconds(seconds: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(seconds.max(0) as u64)
}

/// `POST /sidecar/v1/certificate`: sign this CSR for `service`.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateRequest {
    pub service: String,
    /// PEM; the sidecar's private key never leaves it.
    pub csr: String,
}

/// The signed certificate and the CA to trust.
#[derive(Debug, Serialize, Deserialize)]
pub struct CertificateResponse {
    pub mesh: String,
    pub spiffe_id: String,
    /// PEM.
    pub certificate: String,
    /// PEM of the mesh CA.
    pub ca: String,
    /// Unix seconds.
    pub not_after: u64,
}

/// `PUT /sidecar/v1/dataplanes/{id}`: a sidecar says it is alive and where
/// its inbound listener is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registration {
    pub service: String,
    /// Where other sidecars reach its inbound listener.
    pub address: String,
    pub protocol: AppProtocol,
    /// The zone (data centre, availability zone) it runs in, if it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Unix seconds.
    pub certificate_not_after: u64,
    /// The config version it runs.
    pub config_version: String,
}

/// `GET /sidecar/v1/config?service=&version=&wait=`: everything a sidecar
/// needs; the answer waits (up to `wait`) while `version` is still current.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SidecarConfig {
    pub version: String,
    pub mesh: String,
    /// Every service with a live sidecar, and where its sidecars listen.
    pub services: BTreeMap<String, ServiceEndpoints>,
    pub policies: Policies,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceEndpoints {
    pub protocol: AppProtocol,
    pub endpoints: Vec<String>,
    /// The zone of each endpoint whose sidecar gave one, by address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zones: BTreeMap<String, String>,
}
