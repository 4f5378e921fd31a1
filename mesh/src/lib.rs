//! weft's service mesh, Kuma-style in universal mode: a control plane and a
//! sidecar process beside each service, no Kubernetes needed.
//!
//! The [control plane](ControlPlane) holds the mesh CA (generated on first
//! start and kept, or loaded from files), signs each sidecar's certificate
//! with its SPIFFE id (`spiffe://<mesh>/<service>`), keeps the registry of
//! live sidecars, and serves every sidecar the [policies](config::Policies):
//! traffic permissions, tracing, timeouts, retries and Rego authorization.
//! Changes (file edit or `PUT /policies`) reach sidecars by long poll.
//!
//! A [`Sidecar`] terminates mTLS in front of its app, enforces permissions and
//! authorization on every request, carries the app's outbound calls over mTLS
//! to the right peer (checking its SPIFFE id), renews its certificate before
//! it expires, and traces every hop (a CLIENT span at the caller's sidecar, a
//! SERVER span at the callee's, an access-log record each) over OTLP without
//! ever blocking traffic.
//!
//! Sidecars prove who they are to the control plane with [dataplane
//! tokens](tokens) bound to their service, and it serves its API over TLS
//! when given a certificate. A sidecar started with a zone calls sidecars of
//! its own zone while there are any (locality-aware balancing).

pub mod api;
mod ca;
pub mod config;
mod control_plane;
mod policy;
mod sidecar;
mod spiffe;
mod tls;
pub mod tokens;

pub use crate::api::AppProtocol;
pub use crate::ca::CaError;
pub use crate::config::{ConfigError, MeshConfig};
pub use crate::control_plane::{ControlPlane, ControlPlaneError};
pub use crate::sidecar::{Sidecar, SidecarError, SidecarOptions};
pub use crate::spiffe::SpiffeId;
