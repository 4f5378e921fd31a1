//! What weft's proxies share: the API gateway (`weft-gateway`) and the mesh
//! sidecar (`weft-mesh`) both forward HTTP and trace every request.
//!
//! [`Telemetry`] is a proxy's own tracing and access logging through the
//! OpenTelemetry SDK, exported over OTLP from bounded queues that the request
//! path never waits on. [`headers`] holds the HTTP header rules every hop
//! applies (hop-by-hop headers, upgrades).
//!
//! Not here: routing, balancing or anything else one proxy does and the other
//! does not.

pub mod headers;
mod telemetry;

pub use crate::telemetry::{
    end_span, Telemetry, TelemetryConfig, TelemetryCounters, TelemetryError,
};
