//! The canonical text form of OTLP attribute values.
//!
//! Attribute maps are `map<text, text>`: strings stay as they are, numbers and
//! booleans get their usual text form, bytes become base64, and arrays and
//! key-value lists become JSON (the same JSON OTLP/JSON would carry, minus the
//! `stringValue` wrappers), so `attributes['http.status_code'] = '500'` works
//! whatever type the instrumentation chose.

use arrow::array::StringBuilder;
use base64::Engine;

use super::wire::{self, AnyValue, Result, WireError};

/// How deeply arrays and key-value lists may nest in one attribute value;
/// deeper is refused as malformed rather than risking the stack.
const MAX_NESTING: usize = 32;

/// Appends the canonical text of `value` to `builder` (null without one);
/// `scratch` holds the text of values that are not strings already.
pub(crate) fn append_text(
    builder: &mut StringBuilder,
    value: Option<AnyValue<'_>>,
    scratch: &mut String,
) -> Result<()> {
    if let Some(AnyValue::String(text)) = value {
        builder.append_value(text);
        return Ok(());
    }
    scratch.clear();
    if write_text(value, scratch)? {
        builder.append_value(scratch.as_str());
    } else {
        builder.append_null();
    }
    Ok(())
}

/// Appends the text form of `value` to `out`; returns false for an empty value.
pub(crate) fn write_text(value: Option<AnyValue<'_>>, out: &mut String) -> Result<bool> {
    let Some(value) = value else {
        return Ok(false);
    };
    match value {
        AnyValue::String(s) => out.push_str(s),
        AnyValue::Bool(b) => out.push_str(if b { "true" } else { "false" }),
        // A string-table index only has meaning inside a profile; elsewhere
        // the number is all there is to keep.
        AnyValue::Int(i) => out.push_str(itoa::Buffer::new().format(i)),
        AnyValue::Strindex(i) => out.push_str(itoa::Buffer::new().format(i)),
        AnyValue::Double(d) => write_double(d, out),
        AnyValue::Bytes(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
        AnyValue::Array(_) | AnyValue::Kvlist(_) => write_json(Some(value), out, 0)?,
    }
    Ok(true)
}

fn write_double(d: f64, out: &mut String) {
    if d.is_finite() {
        // serde_json prints the shortest text that reads back to the same
        // double, and always with a fraction or exponent (`1.0`, not `1`).
        out.push_str(&serde_json::Number::from_f64(d).expect("finite").to_string());
    } else if d.is_nan() {
        out.push_str("NaN");
    } else if d > 0.0 {
        out.push_str("Infinity");
    } else {
        out.push_str("-Infinity");
    }
}

fn write_json_string(s: &str, out: &mut String) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

fn write_json(value: Option<AnyValue<'_>>, out: &mut String, depth: usize) -> Result<()> {
    match value {
        None => out.push_str("null"),
        Some(AnyValue::String(s)) => write_json_string(s, out),
        Some(AnyValue::Bool(b)) => out.push_str(if b { "true" } else { "false" }),
        Some(AnyValue::Int(i)) => out.push_str(itoa::Buffer::new().format(i)),
        Some(AnyValue::Strindex(i)) => out.push_str(itoa::Buffer::new().format(i)),
        Some(AnyValue::Double(d)) if d.is_finite() => write_double(d, out),
        Some(AnyValue::Double(d)) => {
            out.push('"');
            write_double(d, out);
            out.push('"');
        }
        Some(AnyValue::Bytes(b)) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Some(AnyValue::Array(array)) => {
            let depth = nested(depth)?;
            out.push('[');
            for (i, item) in wire::repeated("ArrayValue", array, 1, "values").enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(wire::any_value(item?)?, out, depth)?;
            }
            out.push(']');
        }
        Some(AnyValue::Kvlist(list)) => {
            let depth = nested(depth)?;
            out.push('{');
            for (i, kv) in wire::key_values("KeyValueList", list, 1).enumerate() {
                let (key, value) = kv?;
                if i > 0 {
                    out.push(',');
                }
                write_json_string(key, out);
                out.push(':');
                write_json(value, out, depth)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn nested(depth: usize) -> Result<usize> {
    if depth >= MAX_NESTING {
        return Err(WireError::new(
            "AnyValue",
            format!("arrays and key-value lists nest more than {MAX_NESTING} levels deep"),
        ));
    }
    Ok(depth + 1)
}

/// The integer an attribute holds, as a number or as its decimal text.
pub(crate) fn as_int(value: Option<AnyValue<'_>>) -> Option<i64> {
    match value? {
        AnyValue::Int(i) => Some(i),
        AnyValue::String(s) => s.trim().parse().ok(),
        AnyValue::Double(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(d as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{
        any_value::Value, AnyValue as Proto, ArrayValue, KeyValue, KeyValueList,
    };
    use prost::Message;

    fn text(value: Value) -> String {
        let bytes = any(value).encode_to_vec();
        let mut out = String::new();
        write_text(wire::any_value(&bytes).unwrap(), &mut out).unwrap();
        out
    }

    fn any(value: Value) -> Proto {
        Proto { value: Some(value) }
    }

    #[test]
    fn scalars_have_their_usual_text_form() {
        assert_eq!(text(Value::StringValue("GET".into())), "GET");
        assert_eq!(text(Value::BoolValue(true)), "true");
        assert_eq!(text(Value::IntValue(-42)), "-42");
        assert_eq!(text(Value::DoubleValue(1.0)), "1.0");
        assert_eq!(text(Value::DoubleValue(0.25)), "0.25");
        assert_eq!(text(Value::DoubleValue(f64::NAN)), "NaN");
        assert_eq!(text(Value::BytesValue(vec![1, 2, 3])), "AQID");
    }

    #[test]
    fn arrays_and_maps_become_json() {
        let array = Value::ArrayValue(ArrayValue {
            values: vec![
                any(Value::StringValue("a\"b".into())),
                any(Value::IntValue(7)),
                any(Value::BoolValue(false)),
                Proto { value: None },
            ],
        });
        assert_eq!(text(array.clone()), r#"["a\"b",7,false,null]"#);
        let map = Value::KvlistValue(KeyValueList {
            values: vec![
                KeyValue {
                    key: "list".into(),
                    value: Some(any(array)),
                    ..Default::default()
                },
                KeyValue {
                    key: "pi".into(),
                    value: Some(any(Value::DoubleValue(3.5))),
                    ..Default::default()
                },
            ],
        });
        assert_eq!(text(map), r#"{"list":["a\"b",7,false,null],"pi":3.5}"#);
    }

    #[test]
    fn empty_values_are_reported_as_such() {
        let mut out = String::new();
        assert!(!write_text(None, &mut out).unwrap());
        let empty = Proto { value: None }.encode_to_vec();
        assert!(!write_text(wire::any_value(&empty).unwrap(), &mut out).unwrap());
        assert!(out.is_empty());
    }

    #[test]
    fn nesting_past_the_limit_is_an_error_not_a_stack_overflow() {
        let mut value = any(Value::IntValue(1));
        for _ in 0..=MAX_NESTING {
            value = any(Value::ArrayValue(ArrayValue {
                values: vec![value],
            }));
        }
        let bytes = value.encode_to_vec();
        let error = write_text(wire::any_value(&bytes).unwrap(), &mut String::new()).unwrap_err();
        assert!(
            error.to_string().contains("nest more than 32 levels"),
            "{error}"
        );
    }
}
