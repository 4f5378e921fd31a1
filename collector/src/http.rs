//! OTLP/HTTP: `POST /v1/traces`, `/v1/logs` and `/v1/metrics`.
//!
//! Responses follow the OTLP/HTTP spec: success is an `Export*ServiceResponse`
//! in the request's encoding (with `partialSuccess` when records were left
//! out); failures are a `google.rpc.Status` in that encoding, with
//! `Retry-After` on the retryable ones.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Extension;
use axum::Router;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;
use serde_json::json;
use weft_store::convert;
use weft_store::{Signal, TenantId};

use crate::ingest::{
    count_data_points, Admission, Ingest, IngestError, Outcome, Transport, METRICS_NOT_STORED,
};
use crate::payload::{self, Compression, Encoding};

/// The OTLP/HTTP receiver's routes. Each request must carry its sender's
/// [`TenantId`] as an extension (put there by `weft_access::http::require`);
/// one without is answered 500, never stored under some other tenant.
pub fn router(ingest: Arc<Ingest>) -> Router {
    Router::new()
        .route("/v1/traces", post(export::<Traces>))
        .route("/v1/logs", post(export::<Logs>))
        .route("/v1/metrics", post(export_metrics))
        .with_state(ingest)
}

/// A request's body, read within the size limit and decompressed, and the
/// memory reserved for it.
struct Payload {
    encoding: Encoding,
    body: Bytes,
    admission: Admission,
}

async fn read_payload(
    ingest: &Ingest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Payload, IngestError> {
    let encoding = Encoding::from_headers(headers)?;
    let compression = Compression::from_headers(headers)?;
    let limit = ingest.limits().max_request_bytes;
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if let Some(declared) = declared.filter(|len| *len > limit) {
        return Err(IngestError::TooLarge {
            actual: declared,
            limit,
        });
    }
    // Reserve memory before reading, so many large uploads at once are
    // refused instead of buffered: the declared size, or the limit when the
    // client did not declare one.
    let mut admission = ingest.admit(declared.unwrap_or(limit))?;
    let body = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            IngestError::TooLarge {
                actual: limit + 1,
                limit,
            }
        } else {
            IngestError::Malformed(format!("could not read the request body: {e}"))
        }
    })?;
    let body = if compression == Compression::None {
        body
    } else {
        // Inflating is CPU work: keep it off the reactor.
        tokio::task::spawn_blocking(move || payload::decompress(compression, body, limit))
            .await
            .map_err(|e| IngestError::Internal(e.to_string()))??
    };
    ingest.grow(&mut admission, body.len())?;
    Ok(Payload {
        encoding,
        body,
        admission,
    })
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// What differs between the traces and the logs endpoints.
trait Endpoint {
    const SIGNAL: Signal;
    type Request: Message + Default + serde::de::DeserializeOwned + 'static;
    type Response: Message;
    /// Rewrites OTLP/JSON enum names to numbers.
    fn normalize(tree: &mut serde_json::Value) -> Result<(), String>;
    /// The response, and its OTLP/JSON form when it is not empty.
    fn respond(outcome: &Outcome) -> (Self::Response, Option<serde_json::Value>);
}

struct Traces;

impl Endpoint for Traces {
    const SIGNAL: Signal = Signal::Spans;
    type Request = ExportTraceServiceRequest;
    type Response = ExportTraceServiceResponse;
    fn normalize(tree: &mut serde_json::Value) -> Result<(), String> {
        payload::normalize_traces(tree)
    }
    fn respond(outcome: &Outcome) -> (Self::Response, Option<serde_json::Value>) {
        let response = outcome.trace_response();
        let json = response.partial_success.as_ref().map(|p| {
            json!({"partialSuccess": {"rejectedSpans": p.rejected_spans.to_string(), "errorMessage": p.error_message}})
        });
        (response, json)
    }
}

struct Logs;

impl Endpoint for Logs {
    const SIGNAL: Signal = Signal::Logs;
    type Request = ExportLogsServiceRequest;
    type Response = ExportLogsServiceResponse;
    fn normalize(tree: &mut serde_json::Value) -> Result<(), String> {
        payload::normalize_logs(tree)
    }
    fn respond(outcome: &Outcome) -> (Self::Response, Option<serde_json::Value>) {
        let response = outcome.logs_response();
        let json = response.partial_success.as_ref().map(|p| {
            json!({"partialSuccess": {"rejectedLogRecords": p.rejected_log_records.to_string(), "errorMessage": p.error_message}})
        });
        (response, json)
    }
}

async fn export<E: Endpoint>(
    State(ingest): State<Arc<Ingest>>,
    Extension(tenant): Extension<TenantId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Payload {
        encoding,
        body,
        admission,
    } = match read_payload(&ingest, &headers, body).await {
        Ok(p) => p,
        Err(e) => {
            ingest
                .metrics()
                .record_refused(E::SIGNAL, Transport::Http, &e);
            return refused_unread(error_response(&ingest, encoding_or_json(&headers), e));
        }
    };
    let len = body.len();
    let result = ingest
        .store(&tenant, E::SIGNAL, admission, Transport::Http, len, {
            let ingest = ingest.clone();
            move || {
                // Protobuf is converted where it lies; OTLP/JSON is decoded
                // and encoded as protobuf first, for one conversion of both.
                let protobuf = match encoding {
                    Encoding::Protobuf => body,
                    Encoding::Json => payload::decode::<E::Request>(encoding, &body, E::normalize)?
                        .encode_to_vec()
                        .into(),
                };
                let _expansion =
                    ingest.admit_expansion(convert::repeated_bytes(E::SIGNAL, &protobuf)?)?;
                let converted = convert::from_protobuf(E::SIGNAL, &protobuf)?;
                Ok((protobuf, converted))
            }
        })
        .await;
    match result {
        Ok(outcome) => {
            let (response, json) = E::respond(&outcome);
            success(encoding, response, json)
        }
        Err(e) => error_response(&ingest, encoding, e),
    }
}

/// Metrics are decoded (so malformed ones still get a 400) and answered with a
/// partial success that says plainly they were not stored.
async fn export_metrics(
    State(ingest): State<Arc<Ingest>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Payload {
        encoding,
        body,
        admission,
    } = match read_payload(&ingest, &headers, body).await {
        Ok(p) => p,
        Err(e) => return refused_unread(error_response(&ingest, encoding_or_json(&headers), e)),
    };
    let decoded = tokio::task::spawn_blocking(move || {
        payload::decode::<ExportMetricsServiceRequest>(encoding, &body, payload::normalize_nothing)
            .map(|request| count_data_points(&request))
    })
    .await
    .map_err(|e| IngestError::Internal(e.to_string()))
    .and_then(|r| r);
    drop(admission);
    match decoded {
        Ok(points) => {
            let partial = ExportMetricsPartialSuccess {
                rejected_data_points: points as i64,
                error_message: METRICS_NOT_STORED.to_string(),
            };
            let json = json!({"partialSuccess": {"rejectedDataPoints": points.to_string(), "errorMessage": METRICS_NOT_STORED}});
            success(
                encoding,
                ExportMetricsServiceResponse {
                    partial_success: Some(partial),
                },
                Some(json),
            )
        }
        Err(e) => error_response(&ingest, encoding, e),
    }
}

fn success<M: Message>(
    encoding: Encoding,
    message: M,
    json: Option<serde_json::Value>,
) -> Response {
    let body = match encoding {
        Encoding::Protobuf => message.encode_to_vec(),
        Encoding::Json => {
            serde_json::to_vec(&json.unwrap_or_else(|| json!({}))).expect("JSON value serializes")
        }
    };
    (
        [(http::header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response()
}

/// A refusal sent before the request body was (fully) read ends the
/// connection: the unread rest of the body is still on the wire, so a client
/// that reused the connection would have its next request cut off.
fn refused_unread(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// Errors are answered in the request's encoding when it had a known one.
fn encoding_or_json(headers: &HeaderMap) -> Encoding {
    Encoding::from_headers(headers).unwrap_or(Encoding::Json)
}

/// `google.rpc.Status`, the body OTLP/HTTP prescribes for errors.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

fn error_response(ingest: &Ingest, encoding: Encoding, error: IngestError) -> Response {
    let (status, code) = match &error {
        IngestError::Malformed(_) => (StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument),
        IngestError::TooLarge { .. } | IngestError::Expands { .. } => (
            StatusCode::PAYLOAD_TOO_LARGE,
            tonic::Code::ResourceExhausted,
        ),
        IngestError::UnsupportedMediaType(_) => (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            tonic::Code::InvalidArgument,
        ),
        IngestError::Busy(_) | IngestError::QuotaExceeded { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            tonic::Code::ResourceExhausted,
        ),
        IngestError::Overloaded(_) | IngestError::ShuttingDown => {
            (StatusCode::SERVICE_UNAVAILABLE, tonic::Code::Unavailable)
        }
        IngestError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, tonic::Code::Internal),
    };
    let retry_after = match &error {
        IngestError::QuotaExceeded { retry_after, .. } => *retry_after,
        _ => ingest.limits().retry_after,
    };
    let message = error.to_string();
    if status.is_server_error() {
        tracing::warn!(error = %message, "OTLP/HTTP request failed");
    } else {
        tracing::debug!(error = %message, "OTLP/HTTP request refused");
    }
    let rpc = RpcStatus {
        code: code as i32,
        message,
    };
    let body = match encoding {
        Encoding::Protobuf => rpc.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&json!({"code": rpc.code, "message": rpc.message}))
            .expect("serializes"),
    };
    let mut response = (
        status,
        [(http::header::CONTENT_TYPE, encoding.content_type())],
        body,
    )
        .into_response();
    if matches!(
        status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        let seconds = retry_after.as_secs().max(1);
        response
            .headers_mut()
            .insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}
