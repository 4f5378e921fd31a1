//! Spans and log records written as OTLP protobuf while the request runs.
//!
//! A recorded span used to be an opentelemetry-proto `Span` message: its
//! attributes converted from the API's `KeyValue`s into message structs (a
//! key and a value allocation each), then encoded and freed when it ended.
//! Here each field is appended to one buffer as it becomes known, in the
//! wire format those messages have; protobuf readers accept fields in any
//! order, so the name, end time and status go last. The tests decode what
//! is written with prost and compare it with the messages it stands for.

use bytes::BufMut;
use opentelemetry::{KeyValue, Value};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use super::otlp_any_value;

/// Bytes of a length-delimited field holding `len` bytes (field numbers
/// below 16, which is all these messages use).
pub(super) fn field_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field whose `len` bytes follow.
pub(super) fn len_header(out: &mut impl BufMut, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// A length-delimited field, written even when empty.
pub(super) fn len_delimited(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    len_header(out, tag, bytes.len());
    out.extend_from_slice(bytes);
}

/// A `string` or `bytes` field; empty ones are left out, as proto3 does.
pub(super) fn bytes(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    if !bytes.is_empty() {
        len_delimited(out, tag, bytes);
    }
}

/// An integer or enum field; zero is left out.
pub(super) fn varint(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

/// A `fixed64` field (timestamps); zero is left out.
pub(super) fn fixed64(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// A `fixed32` field (flags); zero is left out.
pub(super) fn fixed32(out: &mut Vec<u8>, tag: u32, value: u32) {
    if value != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&value.to_le_bytes());
    }
}

/// An `AnyValue` message field holding the string `value`.
pub(super) fn string_value(out: &mut Vec<u8>, tag: u32, value: &str) {
    len_header(out, tag, field_len(value.len()));
    len_delimited(out, 1, value.as_bytes());
}

/// A `KeyValue` message field (an attribute).
pub(super) fn attribute(out: &mut Vec<u8>, tag: u32, attribute: &KeyValue) {
    key_value(
        out,
        tag,
        attribute.key.as_str(),
        AnyValueBody::of(&attribute.value),
    );
}

/// A `KeyValue` message field of `key` and `value`.
pub(super) fn key_value(out: &mut Vec<u8>, tag: u32, key: &str, value: AnyValueBody<'_>) {
    let key_len = if key.is_empty() {
        0
    } else {
        field_len(key.len())
    };
    len_header(out, tag, key_len + field_len(value.len()));
    bytes(out, 1, key.as_bytes());
    len_header(out, 2, value.len());
    value.write(out);
}

/// The fields of an `AnyValue` message. The scalars the proxies' attributes
/// hold are written directly, and written even when they are the default:
/// the field is a `oneof`, whose presence is the value's type. Arrays (and
/// whatever the API adds) are rare here and go through the message.
pub(super) enum AnyValueBody<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    Encoded(Vec<u8>),
}

impl<'a> AnyValueBody<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::String(s) => Self::String(s.as_str()),
            Value::Bool(b) => Self::Bool(*b),
            Value::I64(i) => Self::Int(*i),
            Value::F64(f) => Self::Double(*f),
            other => Self::Encoded(otlp_any_value(other.clone()).encode_to_vec()),
        }
    }

    fn len(&self) -> usize {
        match self {
            Self::String(s) => field_len(s.len()),
            Self::Bool(_) => 2,
            Self::Int(i) => 1 + encoded_len_varint(*i as u64),
            Self::Double(_) => 9,
            Self::Encoded(bytes) => bytes.len(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Self::String(s) => len_delimited(out, 1, s.as_bytes()),
            Self::Bool(b) => {
                encode_key(2, WireType::Varint, out);
                encode_varint(u64::from(*b), out);
            }
            Self::Int(i) => {
                encode_key(3, WireType::Varint, out);
                encode_varint(*i as u64, out);
            }
            Self::Double(f) => {
                encode_key(4, WireType::SixtyFourBit, out);
                out.extend_from_slice(&f.to_le_bytes());
            }
            Self::Encoded(bytes) => out.extend_from_slice(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::otlp_key_value;
    use opentelemetry::Array;
    use opentelemetry_proto::tonic::common::v1 as otlp_common;

    /// A message of one repeated `KeyValue` field 1 and one `AnyValue` field 2,
    /// to decode what the writers produce.
    #[derive(Clone, PartialEq, prost::Message)]
    struct Probe {
        #[prost(message, repeated, tag = "1")]
        attributes: Vec<otlp_common::KeyValue>,
        #[prost(message, optional, tag = "2")]
        value: Option<otlp_common::AnyValue>,
    }

    #[test]
    fn attributes_and_values_decode_as_the_messages_they_stand_for() {
        let long = "x".repeat(300);
        let values = [
            Value::from("GET"),
            Value::from(""),
            Value::from(long.clone()),
            Value::from(true),
            Value::from(false),
            Value::from(0i64),
            Value::from(200i64),
            Value::from(-1i64),
            Value::from(i64::MAX),
            Value::from(0.0),
            Value::from(1.5),
            Value::Array(Array::String(vec!["a".into(), "b".into()])),
            Value::Array(Array::I64(vec![1, 2])),
        ];
        for value in values {
            for key in ["http.response.status_code", "", long.as_str()] {
                let kv = KeyValue::new(key.to_string(), value.clone());
                let mut out = Vec::new();
                attribute(&mut out, 1, &kv);
                let text = match &value {
                    Value::String(text) => Some(text.as_str()),
                    _ => None,
                };
                if let Some(text) = text {
                    string_value(&mut out, 2, text);
                }
                let probe = Probe::decode(out.as_slice()).unwrap();
                assert_eq!(probe.attributes, vec![otlp_key_value(kv)], "{value:?}");
                let expected = text.map(|_| otlp_any_value(value.clone()));
                assert_eq!(probe.value, expected);
            }
        }
    }
}
