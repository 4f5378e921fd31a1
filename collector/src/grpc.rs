//! OTLP/gRPC: the TraceService, LogsService and MetricsService.
//!
//! Uses opentelemetry-proto's generated tonic servers with gzip accepted and
//! the request size limit applied by tonic while decoding. Overload answers
//! RESOURCE_EXHAUSTED with `RetryInfo`, which OTLP exporters honour by
//! retrying after the given delay.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::{
    LogsService, LogsServiceServer,
};
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use tonic::codec::CompressionEncoding;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};
use weft_access::grpc::Interceptor;

use weft_store::convert::{
    logs_repeated_bytes, logs_to_batch, spans_repeated_bytes, spans_to_batch,
};
use weft_store::{Signal, TenantId};

use crate::ingest::{
    count_data_points, Admission, Ingest, IngestError, IngestLimits, Transport, METRICS_NOT_STORED,
};

/// The OTLP gRPC services, ready to add to a tonic server, each request
/// authenticated by `auth` (which names its tenant) before it is read.
pub fn routes(ingest: Arc<Ingest>, auth: Interceptor) -> tonic::service::Routes {
    let limit = ingest.limits().max_request_bytes;
    let receiver = Receiver { ingest };
    tonic::service::Routes::new(InterceptedService::new(
        TraceServiceServer::new(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
        auth.clone(),
    ))
    .add_service(InterceptedService::new(
        LogsServiceServer::new(receiver.clone())
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
        auth.clone(),
    ))
    .add_service(InterceptedService::new(
        MetricsServiceServer::new(receiver)
            .accept_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Gzip)
            .max_decoding_message_size(limit),
        auth,
    ))
}

/// The tenant the interceptor found; a request without one is refused,
/// never stored under some other tenant.
fn tenant<T>(request: &Request<T>) -> Result<TenantId, Status> {
    request
        .extensions()
        .get::<TenantId>()
        .cloned()
        .ok_or_else(|| Status::internal("the request was not authenticated to a tenant"))
}

/// How many gRPC exports may be read and processed at once.
///
/// tonic reads a whole message before the service sees it, so the in-flight
/// byte budget cannot refuse a gRPC request before its memory is spent.
/// Instead, requests past this many wait before they are read, their bodies
/// held back by HTTP/2 flow control: `max_inflight_bytes` worth of
/// largest-size requests, and at least a few.
pub fn max_concurrent_requests(limits: &IngestLimits) -> usize {
    (limits.max_inflight_bytes / limits.max_request_bytes.max(1)).max(4)
}

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
}

impl Receiver {
    /// tonic has already read and decoded the message: this bounds the
    /// memory of converting it.
    fn admit(&self, signal: Signal, len: usize) -> Result<Admission, Status> {
        self.ingest.admit(len).map_err(|e| self.refused(signal, e))
    }

    /// Reserves memory for what converting the request repeats per record.
    fn admit_expansion(&self, signal: Signal, repeated_bytes: usize) -> Result<Admission, Status> {
        self.ingest
            .admit_expansion(repeated_bytes)
            .map_err(|e| self.refused(signal, e))
    }

    fn refused(&self, signal: Signal, error: IngestError) -> Status {
        self.ingest
            .metrics()
            .record_refused(signal, Transport::Grpc, &error);
        self.status(error)
    }

    fn status(&self, error: IngestError) -> Status {
        let message = error.to_string();
        match error {
            IngestError::Malformed(_) | IngestError::UnsupportedMediaType(_) => {
                Status::invalid_argument(message)
            }
            IngestError::TooLarge { .. } | IngestError::Expands { .. } => {
                Status::resource_exhausted(message)
            }
            IngestError::Busy(_) | IngestError::Overloaded(_) => {
                let details = ErrorDetails::with_retry_info(Some(self.ingest.limits().retry_after));
                Status::with_error_details(tonic::Code::ResourceExhausted, message, details)
            }
            IngestError::QuotaExceeded { retry_after, .. } => {
                let details = ErrorDetails::with_retry_info(Some(retry_after));
                Status::with_error_details(tonic::Code::ResourceExhausted, message, details)
            }
            IngestError::ShuttingDown => Status::unavailable(message),
            IngestError::Internal(_) => Status::internal(message),
        }
    }
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = tenant(&request)?;
        let request = request.into_inner();
        let len = request.encoded_len();
        let admission = self.admit(Signal::Spans, len)?;
        let _expansion = self.admit_expansion(Signal::Spans, spans_repeated_bytes(&request))?;
        let outcome = self
            .ingest
            .store(
                &tenant,
                Signal::Spans,
                admission,
                Transport::Grpc,
                len,
                move || Ok(spans_to_batch(&request)),
            )
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(outcome.trace_response()))
    }
}

#[tonic::async_trait]
impl LogsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportLogsServiceRequest>,
    ) -> Result<Response<ExportLogsServiceResponse>, Status> {
        let tenant = tenant(&request)?;
        let request = request.into_inner();
        let len = request.encoded_len();
        let admission = self.admit(Signal::Logs, len)?;
        let _expansion = self.admit_expansion(Signal::Logs, logs_repeated_bytes(&request))?;
        let outcome = self
            .ingest
            .store(
                &tenant,
                Signal::Logs,
                admission,
                Transport::Grpc,
                len,
                move || Ok(logs_to_batch(&request)),
            )
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(outcome.logs_response()))
    }
}

#[tonic::async_trait]
impl MetricsService for Receiver {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        let points = count_data_points(request.get_ref());
        Ok(Response::new(ExportMetricsServiceResponse {
            partial_success: Some(ExportMetricsPartialSuccess {
                rejected_data_points: points as i64,
                error_message: METRICS_NOT_STORED.to_string(),
            }),
        }))
    }
}

/// Gives two of tonic's own decode errors the codes OTLP clients expect.
///
/// tonic answers a message over the size limit with OUT_OF_RANGE, where OTLP
/// expects RESOURCE_EXHAUSTED (without retry info, so clients do not resend
/// it), and undecodable protobuf with INTERNAL, where it is the client's
/// INVALID_ARGUMENT. Both errors happen before any response message, so the
/// status is in the response headers, where this rewrites it.
pub fn otlp_status_codes<B>(mut response: http::Response<B>) -> http::Response<B> {
    let headers = response.headers_mut();
    let status = headers
        .get("grpc-status")
        .and_then(|s| s.to_str().ok())
        .unwrap_or("");
    let message = headers
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .unwrap_or("")
        .replace("%20", " ");
    let code = match status {
        "11" if message.contains("message length too large") => "8",
        "13" if message.contains("failed to decode Protobuf message") => "3",
        _ => return response,
    };
    headers.insert("grpc-status", http::HeaderValue::from_static(code));
    response
}
