//! What weft's proxies share: the API gateway (`weft-gateway`) and the mesh
//! sidecar (`weft-mesh`) both forward HTTP and trace every request.
//!
//! [`Telemetry`] is a proxy's own tracing and access logging, written as OTLP
//! protobuf while a request runs and exported over OTLP/gRPC from bounded
//! queues that the request path never waits on, with a [`TelemetryCollector`]
//! for `/metrics`. [`headers`] holds the HTTP header rules every hop applies
//! (hop-by-hop headers), [`uri`] builds the URIs requests go on to,
//! [`upgrade`] carries WebSockets across a hop, [`accept_until`] the accept
//! loop with graceful shutdown, [`Workers`] the thread-per-core runtimes
//! connections are served on, and [`message_response`] the shape of a
//! proxy's own answers.
//!
//! Not here: routing, balancing or anything else one proxy does and the other
//! does not.

pub mod headers;
mod listener;
mod response;
mod telemetry;
pub mod upgrade;
pub mod uri;
mod workers;

pub use crate::listener::accept_until;
pub use crate::response::message_response;
pub use crate::telemetry::{
    method_name, AccessLog, Attributes, Span, Telemetry, TelemetryCollector, TelemetryConfig,
    TelemetryCounters, TelemetryError,
};
pub use crate::workers::{current_worker, default_worker_count, PerWorker, Workers};
