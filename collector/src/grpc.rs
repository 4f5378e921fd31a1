//! OTLP/gRPC: the TraceService, LogsService and MetricsService.
//!
//! Trace and log exports are served by hand rather than by
//! opentelemetry-proto's generated servers, for one reason: those decode every
//! request into prost's structs, and weft converts the protobuf in place
//! instead (`weft_store::convert`), which is most of the cost of a request.
//! Everything else is tonic's own server machinery, as the generated code
//! uses it: gzip accepted and sent, the request size limit applied while
//! reading, unknown methods answered UNIMPLEMENTED. Overload answers
//! RESOURCE_EXHAUSTED with `RetryInfo`, which OTLP exporters honour by
//! retrying after the given delay.

use std::convert::Infallible;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::Semaphore;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceResponse;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder, EnabledCompressionEncodings};
use tonic::codegen::{Body, BoxFuture, StdError};
use tonic::server::{NamedService, UnaryService};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tonic_prost::ProstEncoder;
use tonic_types::{ErrorDetails, StatusExt};
use weft_access::grpc::Interceptor;

use weft_store::convert;
use weft_store::{Signal, TenantId};

use crate::ingest::{
    count_data_points, Admission, Ingest, IngestError, IngestLimits, Outcome, Transport,
    METRICS_NOT_STORED,
};

/// The OTLP gRPC services, ready to add to a tonic server, each request
/// authenticated by `auth` (which names its tenant) before it is read.
pub fn routes(ingest: Arc<Ingest>, auth: Interceptor) -> tonic::service::Routes {
    let limit = ingest.limits().max_request_bytes;
    let receiver = Receiver { ingest };
    tonic::service::Routes::new(InterceptedService::new(
        ExportServer::<Traces>::new(receiver.clone(), limit),
        auth.clone(),
    ))
    .add_service(InterceptedService::new(
        ExportServer::<Logs>::new(receiver.clone(), limit),
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

/// What differs between the trace and the log export services.
trait Export: Send + Sync + 'static {
    /// The gRPC service name.
    const NAME: &'static str;
    /// The path of its one method, `Export`.
    const PATH: &'static str;
    const SIGNAL: Signal;
    type Response: prost::Message + Default + Send + 'static;
    fn respond(outcome: &Outcome) -> Self::Response;
}

struct Traces;

impl Export for Traces {
    const NAME: &'static str = "opentelemetry.proto.collector.trace.v1.TraceService";
    const PATH: &'static str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";
    const SIGNAL: Signal = Signal::Spans;
    type Response = ExportTraceServiceResponse;
    fn respond(outcome: &Outcome) -> Self::Response {
        outcome.trace_response()
    }
}

struct Logs;

impl Export for Logs {
    const NAME: &'static str = "opentelemetry.proto.collector.logs.v1.LogsService";
    const PATH: &'static str = "/opentelemetry.proto.collector.logs.v1.LogsService/Export";
    const SIGNAL: Signal = Signal::Logs;
    type Response = ExportLogsServiceResponse;
    fn respond(outcome: &Outcome) -> Self::Response {
        outcome.logs_response()
    }
}

/// One export service: a tower service routing its method to the receiver.
struct ExportServer<E> {
    receiver: Receiver,
    max_request_bytes: usize,
    export: PhantomData<fn() -> E>,
}

impl<E> ExportServer<E> {
    fn new(receiver: Receiver, max_request_bytes: usize) -> Self {
        Self {
            receiver,
            max_request_bytes,
            export: PhantomData,
        }
    }
}

impl<E> Clone for ExportServer<E> {
    fn clone(&self) -> Self {
        Self::new(self.receiver.clone(), self.max_request_bytes)
    }
}

impl<E: Export> NamedService for ExportServer<E> {
    const NAME: &'static str = E::NAME;
}

impl<E, B> tower::Service<http::Request<B>> for ExportServer<E>
where
    E: Export,
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != E::PATH {
            return Box::pin(async { Ok(Status::unimplemented("").into_http()) });
        }
        let method = ExportMethod::<E> {
            receiver: self.receiver.clone(),
            export: PhantomData,
        };
        let max_request_bytes = self.max_request_bytes;
        Box::pin(async move {
            let mut gzip = EnabledCompressionEncodings::default();
            gzip.enable(CompressionEncoding::Gzip);
            let mut grpc = tonic::server::Grpc::new(InPlace::<E::Response>(PhantomData))
                .apply_compression_config(gzip, gzip)
                .apply_max_message_size_config(Some(max_request_bytes), None);
            Ok(grpc.unary(method, request).await)
        })
    }
}

struct ExportMethod<E> {
    receiver: Receiver,
    export: PhantomData<fn() -> E>,
}

impl<E: Export> UnaryService<Bytes> for ExportMethod<E> {
    type Response = E::Response;
    type Future = BoxFuture<Response<E::Response>, Status>;

    fn call(&mut self, request: Request<Bytes>) -> Self::Future {
        let receiver = self.receiver.clone();
        Box::pin(async move { receiver.export::<E>(request).await })
    }
}

/// Request messages as their undecoded bytes, responses encoded by prost.
struct InPlace<R>(PhantomData<fn() -> R>);

impl<R: prost::Message + Send + 'static> Codec for InPlace<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = ProstEncoder<R>;
    type Decoder = MessageBytes;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        MessageBytes
    }
}

/// Takes a whole (decompressed, size-checked) gRPC message as it is; the
/// buffer is split off, not copied.
struct MessageBytes;

impl Decoder for MessageBytes {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
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

/// How many gRPC requests may be read and processed at once.
///
/// tonic reads a whole message before the service sees it, so the in-flight
/// byte budget cannot refuse a gRPC request before its memory is spent.
/// Instead, at most this many are read at a time: `max_inflight_bytes` worth
/// of largest-size requests, and at least a few.
fn max_concurrent_requests(limits: &IngestLimits) -> usize {
    (limits.max_inflight_bytes / limits.max_request_bytes.max(1)).max(4)
}

/// Refuses at once, with RESOURCE_EXHAUSTED and a retry delay, a gRPC request
/// that arrives while [`max_concurrent_requests`] are being read and stored.
///
/// Queueing it instead (a concurrency limit that waits) deadlocks: HTTP/2
/// keeps receiving a waiting request's body into the connection's shared
/// flow-control window, and once waiting bodies fill it, the requests being
/// served cannot receive the rest of theirs, so none finishes and no waiting
/// one is let in. A refused request's body is dropped, which gives its part
/// of the window back.
#[derive(Clone)]
pub struct ShedLayer {
    receiver: Receiver,
    permits: Arc<Semaphore>,
}

impl ShedLayer {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        let permits = Arc::new(Semaphore::new(max_concurrent_requests(ingest.limits())));
        Self {
            receiver: Receiver { ingest },
            permits,
        }
    }
}

impl<S> tower::Layer<S> for ShedLayer {
    type Service = Shed<S>;

    fn layer(&self, inner: S) -> Shed<S> {
        Shed {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service of [`ShedLayer`].
#[derive(Clone)]
pub struct Shed<S> {
    inner: S,
    layer: ShedLayer,
}

impl<S, B> tower::Service<http::Request<B>> for Shed<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Ok(permit) = self.layer.permits.clone().try_acquire_owned() else {
            let error = IngestError::Busy(format!(
                "{} gRPC requests are being read and stored (the limit, max_inflight_bytes / max_request_bytes)",
                max_concurrent_requests(self.layer.receiver.ingest.limits())
            ));
            let signal = match request.uri().path() {
                Traces::PATH => Some(Traces::SIGNAL),
                Logs::PATH => Some(Logs::SIGNAL),
                _ => None,
            };
            let status = match signal {
                Some(signal) => self.layer.receiver.refused(signal, error),
                None => self.layer.receiver.status(error),
            };
            return Box::pin(async move { Ok(status.into_http()) });
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            drop(permit);
            response
        })
    }
}

#[derive(Clone)]
struct Receiver {
    ingest: Arc<Ingest>,
}

impl Receiver {
    /// tonic has already read the message: this bounds the memory of
    /// converting it.
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

impl Receiver {
    /// Stores one export request, given as its protobuf bytes.
    async fn export<E: Export>(
        &self,
        request: Request<Bytes>,
    ) -> Result<Response<E::Response>, Status> {
        let tenant = tenant(&request)?;
        let message = request.into_inner();
        let len = message.len();
        let admission = self.admit(E::SIGNAL, len)?;
        let repeated_bytes = convert::repeated_bytes(E::SIGNAL, &message)
            .map_err(|e| self.refused(E::SIGNAL, e.into()))?;
        let _expansion = self.admit_expansion(E::SIGNAL, repeated_bytes)?;
        let outcome = self
            .ingest
            .store(
                &tenant,
                E::SIGNAL,
                admission,
                Transport::Grpc,
                len,
                move || Ok(convert::from_protobuf(E::SIGNAL, &message)?),
            )
            .await
            .map_err(|e| self.status(e))?;
        Ok(Response::new(E::respond(&outcome)))
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
/// it), and protobuf prost cannot decode (metrics) with INTERNAL, where it is
/// the client's INVALID_ARGUMENT. Both errors happen before any response message, so the
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
