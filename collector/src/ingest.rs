//! The receiver-independent ingest path: admission, decode and conversion off
//! the reactor, hand-off to the store, and the outcome in OTLP's terms.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tokio::sync::Semaphore;
use weft_store::convert::Converted;
use weft_store::{Signal, StoreError, TenantId, TenantStores};

use crate::metrics::IngestMetrics;
use crate::quota::Quotas;

/// Limits that keep ingest within bounded memory.
#[derive(Clone, Debug)]
pub struct IngestLimits {
    /// Largest request accepted, after decompression.
    pub max_request_bytes: usize,
    /// Request bytes being decoded and stored at once; beyond it requests are
    /// refused with a retryable status.
    pub max_inflight_bytes: usize,
    /// What `Retry-After` (HTTP) and `RetryInfo` (gRPC) tell clients to wait.
    pub retry_after: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 * 1024 * 1024,
            max_inflight_bytes: 256 * 1024 * 1024,
            retry_after: Duration::from_secs(1),
        }
    }
}

/// Decoded OTLP takes a few times its wire size in memory.
const DECODED_BYTES_PER_WIRE_BYTE: usize = 4;

/// Why a request as a whole was not accepted. Each maps to one HTTP status and
/// one gRPC code.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The payload could not be decoded (400 / INVALID_ARGUMENT).
    #[error("{0}")]
    Malformed(String),
    /// The payload is larger than allowed (413 / RESOURCE_EXHAUSTED, not retryable).
    #[error("request body is {actual} bytes or more, over the limit of {limit} bytes")]
    TooLarge { actual: usize, limit: usize },
    /// Converting the payload would take more memory than any request may
    /// (413 / RESOURCE_EXHAUSTED, not retryable): it repeats a large resource
    /// or scope on many records.
    #[error(
        "the request repeats its resource and scope on each record, which would take about {bytes} bytes to store, over the limit of {limit} bytes; send fewer records per resource or a smaller resource"
    )]
    Expands { bytes: usize, limit: usize },
    /// The content type or encoding is not one OTLP defines (415).
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// Too much work in flight (429 / RESOURCE_EXHAUSTED with retry info).
    #[error("too many requests in flight: {0}")]
    Busy(String),
    /// The store cannot take more right now (503 / RESOURCE_EXHAUSTED with retry info).
    #[error("{0}")]
    Overloaded(String),
    /// The tenant is over its ingest rate or storage quota (429 /
    /// RESOURCE_EXHAUSTED with its own retry delay).
    #[error("{message}")]
    QuotaExceeded {
        message: String,
        retry_after: Duration,
    },
    /// The collector is shutting down (503 / UNAVAILABLE).
    #[error("the collector is shutting down")]
    ShuttingDown,
    /// Storing failed (500 / INTERNAL); nothing of the request was acknowledged.
    #[error("could not store the data: {0}")]
    Internal(String),
}

impl From<StoreError> for IngestError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Overloaded(reason) => IngestError::Overloaded(reason),
            StoreError::Closed => IngestError::ShuttingDown,
            other => IngestError::Internal(other.to_string()),
        }
    }
}

/// What became of an accepted request.
#[derive(Debug, Default, PartialEq)]
pub struct Outcome {
    pub accepted: u64,
    pub rejected: u64,
    pub error_message: Option<String>,
}

impl Outcome {
    fn error_message(&self) -> String {
        self.error_message.clone().unwrap_or_default()
    }

    /// The OTLP response to a trace export with this outcome.
    pub fn trace_response(&self) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: self.rejected as i64,
                error_message: self.error_message(),
            }),
        }
    }

    /// The OTLP response to a logs export with this outcome.
    pub fn logs_response(&self) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (self.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: self.rejected as i64,
                error_message: self.error_message(),
            }),
        }
    }
}

/// The transports requests arrive by, for metrics.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Grpc,
    Http,
}

/// Shared by every receiver: turns export requests into durable rows of
/// the sending tenant's tables.
pub struct Ingest {
    stores: Arc<TenantStores>,
    quotas: Quotas,
    limits: IngestLimits,
    /// Request bytes in flight, in KiB.
    inflight_kib: Arc<Semaphore>,
    inflight_kib_total: u32,
    /// Set by [`Ingest::close`]: no request is admitted any more.
    closing: AtomicBool,
    metrics: IngestMetrics,
}

impl Ingest {
    pub fn new(
        stores: Arc<TenantStores>,
        limits: IngestLimits,
        quotas: Quotas,
        metrics: IngestMetrics,
    ) -> Self {
        let inflight_kib_total = u32::try_from(limits.max_inflight_bytes / 1024)
            .unwrap_or(u32::MAX)
            .max(1);
        Self {
            stores,
            quotas,
            limits,
            inflight_kib: Arc::new(Semaphore::new(inflight_kib_total as usize)),
            inflight_kib_total,
            closing: AtomicBool::new(false),
            metrics,
        }
    }

    /// Admits no new request (they are refused as
    /// [`IngestError::ShuttingDown`], which OTLP clients retry) and waits
    /// until those admitted are stored: a shutdown's final flush then holds
    /// everything this collector acknowledged, while its listeners stay up.
    pub async fn close(&self) {
        self.closing.store(true, Ordering::SeqCst);
        // An admitted request holds part of the in-flight budget until its
        // data is stored, so the whole budget is free once none is left.
        let _everything = self
            .inflight_kib
            .acquire_many(self.inflight_kib_total)
            .await;
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    pub fn metrics(&self) -> &IngestMetrics {
        &self.metrics
    }

    /// Reserves memory for a request of `request_bytes` before it is read or
    /// decoded, or refuses it (retryably) when too much is in flight already.
    pub fn admit(&self, request_bytes: usize) -> Result<Admission, IngestError> {
        let mut admission = Admission {
            permit: None,
            kib: 0,
        };
        self.grow(&mut admission, request_bytes)?;
        Ok(admission)
    }

    /// Reserves memory for the text a decoded request repeats on each of its
    /// records (see `weft_store::convert::repeated_bytes`), held while
    /// it is converted. Up to four times the largest request may be repeated,
    /// the memory the largest request is reserved anyway; more is refused for
    /// good. Under a mebibyte nothing is reserved: the request's own
    /// reservation covers it.
    pub fn admit_expansion(&self, repeated_bytes: usize) -> Result<Admission, IngestError> {
        let limit = self
            .limits
            .max_request_bytes
            .saturating_mul(DECODED_BYTES_PER_WIRE_BYTE);
        if repeated_bytes > limit {
            return Err(IngestError::Expands {
                bytes: repeated_bytes,
                limit,
            });
        }
        let mut admission = Admission {
            permit: None,
            kib: 0,
        };
        if repeated_bytes >= 1024 * 1024 {
            self.grow(
                &mut admission,
                repeated_bytes.div_ceil(DECODED_BYTES_PER_WIRE_BYTE),
            )?;
        }
        Ok(admission)
    }

    /// Extends `admission` to cover `request_bytes`, e.g. once a compressed
    /// body turns out larger than its wire size.
    pub fn grow(&self, admission: &mut Admission, request_bytes: usize) -> Result<(), IngestError> {
        let wanted = u32::try_from(
            (request_bytes.saturating_mul(DECODED_BYTES_PER_WIRE_BYTE) / 1024).max(1),
        )
        .unwrap_or(u32::MAX)
        .min(self.inflight_kib_total);
        let more = wanted.saturating_sub(admission.kib);
        if more == 0 {
            return Ok(());
        }
        let closing = || self.closing.load(Ordering::SeqCst);
        if closing() {
            return Err(IngestError::ShuttingDown);
        }
        let permit = self
            .inflight_kib
            .clone()
            .try_acquire_many_owned(more)
            .map_err(|_| {
                if closing() {
                    // `close` is taking the budget, not other requests.
                    return IngestError::ShuttingDown;
                }
                IngestError::Busy(format!(
                    "{} KiB of requests are being processed (limit {} KiB)",
                    self.inflight_kib_total as usize - self.inflight_kib.available_permits(),
                    self.inflight_kib_total
                ))
            })?;
        match &mut admission.permit {
            Some(held) => held.merge(permit),
            None => admission.permit = Some(permit),
        }
        admission.kib = wanted;
        Ok(())
    }

    /// Stores one export request of `signal` from `tenant`. `convert`
    /// converts it to Arrow and returns the request as protobuf (which the
    /// WAL keeps) with the rows; it runs on a blocking thread.
    /// `request_bytes` is the payload size, for the tenant's quota and
    /// metrics; `admission` holds its memory until the data is stored.
    pub async fn store<C>(
        &self,
        tenant: &TenantId,
        signal: Signal,
        admission: Admission,
        transport: Transport,
        request_bytes: usize,
        convert: C,
    ) -> Result<Outcome, IngestError>
    where
        C: FnOnce() -> Result<(Bytes, Converted), IngestError> + Send + 'static,
    {
        let result = self
            .convert_and_store(tenant, signal, request_bytes, convert)
            .await;
        drop(admission);
        self.metrics
            .record(signal, transport, request_bytes, &result);
        result
    }

    async fn convert_and_store<C>(
        &self,
        tenant: &TenantId,
        signal: Signal,
        request_bytes: usize,
        convert: C,
    ) -> Result<Outcome, IngestError>
    where
        C: FnOnce() -> Result<(Bytes, Converted), IngestError> + Send + 'static,
    {
        let store = self.stores.get(tenant)?;
        self.quotas.admit(tenant, &store, request_bytes)?;
        // Converting is most of a request's cost; one the store would refuse
        // is refused before it.
        store.table(signal).refuse_if_behind()?;
        let (request, converted) = tokio::task::spawn_blocking(convert)
            .await
            .map_err(|e| IngestError::Internal(format!("decoder task failed: {e}")))??;
        let Converted {
            batch,
            rejected,
            error_message,
        } = converted;
        let accepted = batch.num_rows() as u64;
        store.table(signal).append_request(request, batch).await?;
        Ok(Outcome {
            accepted,
            rejected,
            error_message,
        })
    }
}

impl From<weft_store::convert::WireError> for IngestError {
    fn from(error: weft_store::convert::WireError) -> Self {
        Self::Malformed(error.to_string())
    }
}

/// Memory reserved for one request in the in-flight budget, released on drop.
pub struct Admission {
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    kib: u32,
}

/// Counts the data points of a metrics request, which weft does not store.
pub fn count_data_points(
    request: &opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
) -> u64 {
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;
    request
        .resource_metrics
        .iter()
        .flat_map(|r| &r.scope_metrics)
        .flat_map(|s| &s.metrics)
        .map(|m| match &m.data {
            Some(Data::Gauge(g)) => g.data_points.len(),
            Some(Data::Sum(s)) => s.data_points.len(),
            Some(Data::Histogram(h)) => h.data_points.len(),
            Some(Data::ExponentialHistogram(h)) => h.data_points.len(),
            Some(Data::Summary(s)) => s.data_points.len(),
            None => 0,
        } as u64)
        .sum()
}

/// What weft answers to metrics exports: accepted on the wire, not stored.
pub const METRICS_NOT_STORED: &str =
    "weft stores traces and logs; metrics are accepted but not stored";
