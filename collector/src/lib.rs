//! weft's OTLP receivers: what OpenTelemetry SDKs and collectors talk to.
//!
//! Two transports, one path. [`grpc`] serves OTLP/gRPC (tonic) and [`http`]
//! serves OTLP/HTTP (axum, protobuf or JSON, gzip); both hand their requests
//! to [`Ingest`], which admits them against the in-flight memory budget,
//! decodes and converts them to Arrow on a blocking thread, and appends them to
//! the sending tenant's store (after its [`Quotas`]), answering only once
//! the WAL has them on disk. Invalid records are
//! dropped one by one and reported through OTLP partial success; overload is
//! refused with retryable statuses rather than queued without bound.
//! Over an object store, [`flight`] serves the rows not yet flushed to
//! queriers on other machines.
//!
//! Not here: the storage format (`weft-store`) and queries (`query/`).

pub mod flight;
pub mod grpc;
pub mod http;
mod ingest;
pub mod metrics;
pub mod payload;
mod quota;

pub use ingest::{Admission, Ingest, IngestError, IngestLimits, Outcome, Transport};
pub use metrics::{IngestMetrics, MetricsEndpoint, StoreCollector};
pub use quota::{Quotas, TenantLimits};
