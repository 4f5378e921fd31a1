//! Spans and log records written as OTLP protobuf while the request runs.
//!
//! A recorded span used to be an opentelemetry-proto `Span` message: its
//! attributes converted from the API's `KeyValue`s into message structs (a
//! key and a value allocation each), then encoded and freed when it ended.
//! Here each field is appended to one buffer as it becomes known, in the
//! wire format those messages have; protobuf readers accept fields in any
//! order, so the name, end time and status go last. The tests decode what
//! is written with prost and compare it with the messages it stands for.

use opentelemetry::{KeyValue, Value};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;

use super::otlp_any_value;

/// A length-delimited field, written even when empty.
pub(super) fn len_delimited(out: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(bytes.len() as u64, out);
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

/// An `AnyValue` message field holding `value`.
pub(super) fn any_value(out: &mut Vec<u8>, tag: u32, value: &Value) {
    match scalar(value) {
        Some(scalar) => {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(scalar.len() as u64, out);
            scalar.write(out);
        }
        // Arrays (and whatever the API adds) are rare here: through the message.
        None => len_delimited(out, tag, &otlp_any_value(value.clone()).encode_to_vec()),
    }
}

/// A `KeyValue` message field (an attribute).
pub(super) fn attribute(out: &mut Vec<u8>, tag: u32, attribute: &KeyValue) {
    let key = attribute.key.as_str();
    let key_len = if key.is_empty() {
        0
    } else {
        1 + encoded_len_varint(key.len() as u64) + key.len()
    };
    match scalar(&attribute.value) {
        Some(scalar) => {
            let value_len = scalar.len();
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(
                (key_len + 1 + encoded_len_varint(value_len as u64) + value_len) as u64,
                out,
            );
            bytes(out, 1, key.as_bytes());
            encode_key(2, WireType::LengthDelimited, out);
            encode_varint(value_len as u64, out);
            scalar.write(out);
        }
        None => {
            let value = otlp_any_value(attribute.value.clone()).encode_to_vec();
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(
                (key_len + 1 + encoded_len_varint(value.len() as u64) + value.len()) as u64,
                out,
            );
            bytes(out, 1, key.as_bytes());
            len_delimited(out, 2, &value);
        }
    }
}

/// The one-field `AnyValue`s the proxies' attributes hold. The field is
/// written even when its value is the default: it is a `oneof`, whose
/// presence is the value's type.
enum Scalar<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
}

fn scalar(value: &Value) -> Option<Scalar<'_>> {
    Some(match value {
        Value::String(s) => Scalar::String(s.as_str()),
        Value::Bool(b) => Scalar::Bool(*b),
        Value::I64(i) => Scalar::Int(*i),
        Value::F64(f) => Scalar::Double(*f),
        _ => return None,
    })
}

impl Scalar<'_> {
    /// Bytes of the `AnyValue` message.
    fn len(&self) -> usize {
        1 + match self {
            Scalar::String(s) => encoded_len_varint(s.len() as u64) + s.len(),
            Scalar::Bool(_) => 1,
            Scalar::Int(i) => encoded_len_varint(*i as u64),
            Scalar::Double(_) => 8,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Scalar::String(s) => len_delimited(out, 1, s.as_bytes()),
            Scalar::Bool(b) => {
                encode_key(2, WireType::Varint, out);
                encode_varint(u64::from(*b), out);
            }
            Scalar::Int(i) => {
                encode_key(3, WireType::Varint, out);
                encode_varint(*i as u64, out);
            }
            Scalar::Double(f) => {
                encode_key(4, WireType::SixtyFourBit, out);
                out.extend_from_slice(&f.to_le_bytes());
            }
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
                any_value(&mut out, 2, &value);
                let probe = Probe::decode(out.as_slice()).unwrap();
                assert_eq!(probe.attributes, vec![otlp_key_value(kv)], "{value:?}");
                assert_eq!(probe.value, Some(otlp_any_value(value.clone())));
            }
        }
    }
}
