//! Turning an OTLP/HTTP body into a request: content type, compression,
//! protobuf or OTLP/JSON.
//!
//! OTLP/JSON differs from proto3's JSON mapping in ways a plain serde decode
//! does not cover: ids are hex (of either case), and enums may come as names
//! (`"SPAN_KIND_SERVER"`) as well as numbers. Enum names are rewritten to
//! numbers in the JSON tree before it is decoded; decode errors carry the
//! JSON path of the offending field.

use std::io::Read;

use bytes::Bytes;
use http::HeaderMap;
use opentelemetry_proto::tonic::logs::v1::SeverityNumber;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::ingest::IngestError;

/// The two encodings OTLP/HTTP defines.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Protobuf,
    Json,
}

impl Encoding {
    /// The encoding named by a request's `Content-Type`.
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, IngestError> {
        let content_type = headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("<not text>"))
            .ok_or_else(|| {
                IngestError::UnsupportedMediaType(
                    "missing Content-Type: use application/x-protobuf or application/json".into(),
                )
            })?;
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        match media_type.to_ascii_lowercase().as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Self::Protobuf),
            "application/json" => Ok(Self::Json),
            _ => Err(IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Type {content_type:?}: use application/x-protobuf or application/json"
            ))),
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// How the body is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
}

impl Compression {
    pub fn from_headers(headers: &HeaderMap) -> Result<Self, IngestError> {
        let Some(value) = headers.get(http::header::CONTENT_ENCODING) else {
            return Ok(Self::None);
        };
        match value
            .to_str()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "identity" => Ok(Self::None),
            "gzip" | "x-gzip" => Ok(Self::Gzip),
            other => Err(IngestError::UnsupportedMediaType(format!(
                "unsupported Content-Encoding {other:?}: use gzip or none"
            ))),
        }
    }
}

/// Undoes `compression`, refusing to inflate past `limit` bytes.
pub fn decompress(
    compression: Compression,
    body: Bytes,
    limit: usize,
) -> Result<Bytes, IngestError> {
    match compression {
        Compression::None => Ok(body),
        Compression::Gzip => {
            let mut out = Vec::with_capacity((body.len() * 4).min(limit));
            flate2::read::MultiGzDecoder::new(body.as_ref())
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| IngestError::Malformed(format!("invalid gzip body: {e}")))?;
            if out.len() > limit {
                return Err(IngestError::TooLarge {
                    actual: out.len(),
                    limit,
                });
            }
            Ok(out.into())
        }
    }
}

/// Decodes an OTLP message in `encoding`.
pub fn decode<M>(
    encoding: Encoding,
    body: &[u8],
    normalize: fn(&mut Value) -> Result<(), String>,
) -> Result<M, IngestError>
where
    M: prost::Message + Default + DeserializeOwned,
{
    match encoding {
        Encoding::Protobuf => M::decode(body)
            .map_err(|e| IngestError::Malformed(format!("invalid OTLP protobuf: {e}"))),
        Encoding::Json => {
            let mut tree: Value = serde_json::from_slice(body)
                .map_err(|e| IngestError::Malformed(format!("invalid JSON: {e}")))?;
            normalize(&mut tree)
                .map_err(|e| IngestError::Malformed(format!("invalid OTLP/JSON: {e}")))?;
            serde_path_to_error::deserialize(tree).map_err(|e| {
                IngestError::Malformed(format!("invalid OTLP/JSON at {}: {}", e.path(), e.inner()))
            })
        }
    }
}

/// Rewrites enum names in a trace request to their numbers.
pub fn normalize_traces(tree: &mut Value) -> Result<(), String> {
    for span in nested(tree, &["resourceSpans", "scopeSpans", "spans"]) {
        enum_to_number(span, "kind", |name| {
            SpanKind::from_str_name(name).map(|k| k as i32)
        })?;
        if let Some(status) = span.get_mut("status") {
            enum_to_number(status, "code", |name| {
                StatusCode::from_str_name(name).map(|c| c as i32)
            })?;
        }
    }
    Ok(())
}

/// Rewrites enum names in a logs request to their numbers.
pub fn normalize_logs(tree: &mut Value) -> Result<(), String> {
    for record in nested(tree, &["resourceLogs", "scopeLogs", "logRecords"]) {
        enum_to_number(record, "severityNumber", |name| {
            SeverityNumber::from_str_name(name).map(|s| s as i32)
        })?;
    }
    Ok(())
}

/// Metrics carry enums too, but weft only counts their data points.
pub fn normalize_nothing(_: &mut Value) -> Result<(), String> {
    Ok(())
}

/// The objects at `path`, where each step names an array field.
fn nested<'a>(tree: &'a mut Value, path: &[&str]) -> Vec<&'a mut Value> {
    let mut level = vec![tree];
    for key in path {
        level = level
            .into_iter()
            .filter_map(|v| v.get_mut(*key).and_then(Value::as_array_mut))
            .flat_map(|items| items.iter_mut())
            .collect();
    }
    level
}

fn enum_to_number(
    object: &mut Value,
    field: &str,
    parse: impl Fn(&str) -> Option<i32>,
) -> Result<(), String> {
    if let Some(value) = object.get_mut(field) {
        if let Some(name) = value.as_str() {
            let number =
                parse(name).ok_or_else(|| format!("unknown value {name:?} for {field}"))?;
            *value = Value::from(number);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use proptest::prelude::*;

    #[test]
    fn enum_names_and_numbers_both_decode() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"5B8EFFF798038103D269B633813FC60C","spanId":"EEE19B7EC3C1B174","name":"a",
             "kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_ERROR"},
             "startTimeUnixNano":"1544712660000000000","endTimeUnixNano":1544712661000000000},
            {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"eee19b7ec3c1b174","name":"b","kind":3}
        ]}]}]}"#;
        let request: ExportTraceServiceRequest =
            decode(Encoding::Json, body, normalize_traces).unwrap();
        let spans = &request.resource_spans[0].scope_spans[0].spans;
        assert_eq!(spans[0].kind, SpanKind::Server as i32);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            StatusCode::Error as i32
        );
        assert_eq!(spans[0].trace_id, spans[1].trace_id);
        assert_eq!(spans[0].end_time_unix_nano, 1544712661000000000);
        assert_eq!(spans[1].kind, SpanKind::Client as i32);
    }

    #[test]
    fn decode_errors_name_the_field() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"not hex"}]}]}]}"#;
        let err = decode::<ExportTraceServiceRequest>(Encoding::Json, body, normalize_traces)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("resourceSpans[0].scopeSpans[0].spans[0].traceId"),
            "{err}"
        );
        let body =
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_BOGUS"}]}]}]}"#;
        let err = decode::<ExportTraceServiceRequest>(Encoding::Json, body, normalize_traces)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SPAN_KIND_BOGUS"), "{err}");
    }

    #[test]
    fn gzip_bombs_stop_at_the_limit() {
        use flate2::write::GzEncoder;
        use std::io::Write;
        let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&vec![0u8; 1 << 20]).unwrap();
        let compressed = Bytes::from(encoder.finish().unwrap());
        assert!(matches!(
            decompress(Compression::Gzip, compressed.clone(), 1000),
            Err(IngestError::TooLarge { limit: 1000, .. })
        ));
        assert_eq!(
            decompress(Compression::Gzip, compressed, 1 << 20)
                .unwrap()
                .len(),
            1 << 20
        );
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_decoders(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<ExportTraceServiceRequest>(Encoding::Protobuf, &body, normalize_traces);
            let _ = decode::<ExportTraceServiceRequest>(Encoding::Json, &body, normalize_traces);
            let _ = decompress(Compression::Gzip, Bytes::from(body), 1 << 16);
        }

        #[test]
        fn arbitrary_json_never_panics_the_decoder(
            kind in prop_oneof![Just(Value::Null), any::<i64>().prop_map(Value::from), "[A-Z_]{0,20}".prop_map(Value::from)],
            id in "[0-9a-fA-F]{0,40}",
            time in prop_oneof![any::<u64>().prop_map(Value::from), "[0-9-]{0,25}".prop_map(Value::from)],
        ) {
            let body = serde_json::json!({"resourceSpans":[{"scopeSpans":[{"spans":[
                {"traceId": id, "spanId": id, "kind": kind, "startTimeUnixNano": time}
            ]}]}]});
            let bytes = serde_json::to_vec(&body).unwrap();
            let _ = decode::<ExportTraceServiceRequest>(Encoding::Json, &bytes, normalize_traces);
        }
    }
}
