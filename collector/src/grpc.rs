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

use bytes::{Buf, Bytes};
use http_body_util::BodyExt;
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
    count_data_points, Admission, Ingest, IngestError, Outcome, Transport, METRICS_NOT_STORED,
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

/// Admits each OTLP export over gRPC against the in-flight byte budget before
/// its message is read, or refuses it at once with RESOURCE_EXHAUSTED and a
/// retry delay. Other gRPC services (Arrow Flight) pass untouched.
///
/// tonic reads a whole message before a service sees it, so this reads the
/// first five bytes of the body — the gRPC frame header, with the message's
/// length — reserves memory for that many bytes (as the OTLP/HTTP receiver
/// does for a declared `Content-Length`; a compressed message grows its
/// reservation once inflated), and hands the rest of the body on untouched.
/// A request is never held back unread: waiting bodies stay in the HTTP/2
/// connection's shared flow-control window, and once they fill it the
/// requests being read cannot receive the rest of theirs — a hang. A refused
/// request's body is dropped, which gives its part of the window back.
#[derive(Clone)]
pub struct AdmitLayer {
    receiver: Receiver,
}

impl AdmitLayer {
    pub fn new(ingest: Arc<Ingest>) -> Self {
        Self {
            receiver: Receiver { ingest },
        }
    }
}

impl<S> tower::Layer<S> for AdmitLayer {
    type Service = Admit<S>;

    fn layer(&self, inner: S) -> Admit<S> {
        Admit {
            inner,
            receiver: self.receiver.clone(),
        }
    }
}

/// The service of [`AdmitLayer`].
#[derive(Clone)]
pub struct Admit<S> {
    inner: S,
    receiver: Receiver,
}

/// The reservation [`Admit`] made for a request, for its export to take over.
#[derive(Clone)]
struct EarlyAdmission(Arc<parking_lot::Mutex<Option<Admission>>>);

impl<S, B> tower::Service<http::Request<B>> for Admit<S>
where
    S: tower::Service<http::Request<Prefixed<B>>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: Into<StdError>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // The clone is ready too (tonic's routes always are); this one, made
        // ready by `poll_ready`, serves this request.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let receiver = self.receiver.clone();
        let signal = match request.uri().path() {
            Traces::PATH => Some(Traces::SIGNAL),
            Logs::PATH => Some(Logs::SIGNAL),
            METRICS_EXPORT_PATH => None,
            // Not an export (Arrow Flight reads of unflushed rows, which go
            // on while the collector shuts down): nothing to admit.
            _ => {
                let (parts, body) = request.into_parts();
                let body = Prefixed {
                    head: None,
                    rest: body,
                };
                return Box::pin(inner.call(http::Request::from_parts(parts, body)));
            }
        };
        let (mut parts, mut body) = request.into_parts();
        Box::pin(async move {
            let mut head = bytes::BytesMut::new();
            while head.len() < 5 {
                match body.frame().await {
                    Some(Ok(frame)) => match frame.into_data() {
                        Ok(data) => head.extend_from_slice(&data),
                        Err(_) => break,
                    },
                    Some(Err(e)) => return Ok(Status::from_error(e.into()).into_http()),
                    None => break,
                }
            }
            // tonic refuses a message declared larger than the limit as soon
            // as it reads this header: no need to reserve more than that.
            let declared = match *head {
                [_, a, b, c, d, ..] => u32::from_be_bytes([a, b, c, d]) as usize,
                _ => 0,
            }
            .min(receiver.ingest.limits().max_request_bytes);
            let admission = match receiver.ingest.admit(declared) {
                Ok(admission) => admission,
                Err(error) => {
                    let status = match signal {
                        Some(signal) => receiver.refused(signal, error),
                        None => receiver.status(error),
                    };
                    return Ok(status.into_http());
                }
            };
            parts
                .extensions
                .insert(EarlyAdmission(Arc::new(parking_lot::Mutex::new(Some(
                    admission,
                )))));
            let body = Prefixed {
                head: Some(head.freeze()),
                rest: body,
            };
            inner.call(http::Request::from_parts(parts, body)).await
        })
    }
}

/// The method of the OTLP MetricsService (answered, not stored).
const METRICS_EXPORT_PATH: &str = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export";

/// A request body with the bytes [`Admit`] read off its front put back.
pub struct Prefixed<B> {
    head: Option<Bytes>,
    rest: B,
}

impl<B: Body<Data = Bytes> + Unpin> Body for Prefixed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Some(head) = self.head.take().filter(|head| !head.is_empty()) {
            return Poll::Ready(Some(Ok(http_body::Frame::data(head))));
        }
        std::pin::Pin::new(&mut self.rest).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.head.as_ref().is_none_or(Bytes::is_empty) && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        let head = self.head.as_ref().map_or(0, Bytes::len) as u64;
        let rest = self.rest.size_hint();
        let mut hint = http_body::SizeHint::new();
        hint.set_lower(rest.lower() + head);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + head);
        }
        hint
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
        let early = request
            .extensions()
            .get::<EarlyAdmission>()
            .and_then(|early| early.0.lock().take());
        let message = request.into_inner();
        let len = message.len();
        let admission = match early {
            // Read as declared, or inflated from a compressed message.
            Some(mut admission) => {
                self.ingest
                    .grow(&mut admission, len)
                    .map_err(|e| self.refused(E::SIGNAL, e))?;
                admission
            }
            None => self.admit(E::SIGNAL, len)?,
        };
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
                move || {
                    let converted = convert::from_protobuf(E::SIGNAL, &message)?;
                    Ok((message, converted))
                },
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
