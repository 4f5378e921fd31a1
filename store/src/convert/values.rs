//! The canonical text form of OTLP attribute values.
//!
//! Attribute maps are `map<text, text>`: strings stay as they are, numbers and
//! booleans get their usual text form, bytes become base64, and arrays and
//! key-value lists become JSON (the same JSON OTLP/JSON would carry, minus the
//! `stringValue` wrappers), so `attributes['http.status_code'] = '500'` works
//! whatever type the instrumentation chose.

use arrow::array::StringBuilder;
use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue};
use std::fmt::Write;

/// Appends the canonical text of `value` to `builder` (null without one);
/// `scratch` holds the text of values that are not strings already.
pub(crate) fn append_text(
    builder: &mut StringBuilder,
    value: Option<&AnyValue>,
    scratch: &mut String,
) {
    if let Some(Value::StringValue(text)) = value.and_then(|v| v.value.as_ref()) {
        builder.append_value(text);
        return;
    }
    scratch.clear();
    if write_text(value, scratch) {
        builder.append_value(scratch.as_str());
    } else {
        builder.append_null();
    }
}

/// Appends the text form of `value` to `out`; returns false for an empty value.
pub(crate) fn write_text(value: Option<&AnyValue>, out: &mut String) -> bool {
    let Some(value) = value.and_then(|v| v.value.as_ref()) else {
        return false;
    };
    match value {
        Value::StringValue(s) => out.push_str(s),
        Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        // A string-table index only has meaning inside a profile; elsewhere
        // the number is all there is to keep.
        Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        Value::DoubleValue(d) => write_double(*d, out),
        Value::BytesValue(b) => base64::engine::general_purpose::STANDARD.encode_string(b, out),
        Value::ArrayValue(_) | Value::KvlistValue(_) => write_json(Some(value), out),
    }
    true
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

fn write_json(value: Option<&Value>, out: &mut String) {
    match value {
        None => out.push_str("null"),
        Some(Value::StringValue(s)) => write_json_string(s, out),
        Some(Value::BoolValue(b)) => out.push_str(if *b { "true" } else { "false" }),
        Some(Value::IntValue(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::StringValueStrindex(i)) => {
            let _ = write!(out, "{i}");
        }
        Some(Value::DoubleValue(d)) if d.is_finite() => write_double(*d, out),
        Some(Value::DoubleValue(d)) => {
            out.push('"');
            write_double(*d, out);
            out.push('"');
        }
        Some(Value::BytesValue(b)) => {
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(b, out);
            out.push('"');
        }
        Some(Value::ArrayValue(array)) => {
            out.push('[');
            for (i, item) in array.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item.value.as_ref(), out);
            }
            out.push(']');
        }
        Some(Value::KvlistValue(list)) => {
            out.push('{');
            for (i, kv) in list.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json_string(&kv.key, out);
                out.push(':');
                write_json(kv.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
    }
}

/// The integer an attribute holds, as a number or as its decimal text.
pub(crate) fn as_int(value: Option<&AnyValue>) -> Option<i64> {
    match value?.value.as_ref()? {
        Value::IntValue(i) => Some(*i),
        Value::StringValue(s) => s.trim().parse().ok(),
        Value::DoubleValue(d) if d.fract() == 0.0 && d.abs() < 9.0e15 => Some(*d as i64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValue, KeyValueList};

    fn text(value: Value) -> String {
        let mut out = String::new();
        write_text(Some(&AnyValue { value: Some(value) }), &mut out);
        out
    }

    fn any(value: Value) -> AnyValue {
        AnyValue { value: Some(value) }
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
                AnyValue { value: None },
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
        assert!(!write_text(None, &mut out));
        assert!(!write_text(Some(&AnyValue { value: None }), &mut out));
        assert!(out.is_empty());
    }
}
