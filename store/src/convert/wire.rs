//! OTLP protobuf read in place: a message's fields as slices of the request's
//! bytes.
//!
//! Decoding a request into prost's structs first would allocate a `String`
//! for every attribute key and value and a `Vec` for every list, only for the
//! conversion to copy each into an Arrow builder and drop it. Reading the wire
//! format where it lies copies each byte once, into its column. The framing
//! primitives (keys, varints, skipping groups) are prost's own, and what
//! prost accepts is read here: like prost, a known field with the wrong wire
//! type or a string that is not UTF-8 is an error, a scalar field sent twice
//! keeps its last value and a resource, scope or status sent twice is merged.
//! Two differences: an attribute value sent twice keeps the last, where
//! prost would merge two arrays into one (no encoder sends one twice), and
//! arrays and lists nested more than 32 deep are refused (see `values`),
//! where prost's limit is about 45.

use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};

/// An OTLP protobuf payload that is not valid: names the message and field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid OTLP protobuf in {message}: {reason}")]
pub struct WireError {
    message: &'static str,
    reason: String,
}

impl WireError {
    pub(crate) fn new(message: &'static str, reason: impl Into<String>) -> Self {
        Self {
            message,
            reason: reason.into(),
        }
    }
}

pub(crate) type Result<T, E = WireError> = std::result::Result<T, E>;

/// One field of a message: its number and its value as the wire carries it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Field<'a> {
    pub(crate) tag: u32,
    value: Value<'a>,
    message: &'static str,
}

#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32(u32),
    Delimited(&'a [u8]),
}

impl<'a> Field<'a> {
    fn wrong_type(&self, name: &str, expected: &str) -> WireError {
        let actual = match self.value {
            Value::Varint(_) => "varint",
            Value::Fixed64(_) => "64-bit",
            Value::Fixed32(_) => "32-bit",
            Value::Delimited(_) => "length-delimited",
        };
        WireError::new(
            self.message,
            format!(
                "field {name} (#{}) has wire type {actual}, expected {expected}",
                self.tag
            ),
        )
    }

    /// A `bytes` field, or an embedded message.
    #[inline]
    pub(crate) fn bytes(self, name: &str) -> Result<&'a [u8]> {
        match self.value {
            Value::Delimited(bytes) => Ok(bytes),
            _ => Err(self.wrong_type(name, "length-delimited")),
        }
    }

    /// A `string` field.
    #[inline]
    pub(crate) fn text(self, name: &str) -> Result<&'a str> {
        utf8(self.bytes(name)?).map_err(|e| {
            WireError::new(
                self.message,
                format!("field {name} (#{}) is not valid UTF-8: {e}", self.tag),
            )
        })
    }

    /// An integer, enum or `bool` field.
    #[inline]
    pub(crate) fn varint(self, name: &str) -> Result<u64> {
        match self.value {
            Value::Varint(v) => Ok(v),
            _ => Err(self.wrong_type(name, "varint")),
        }
    }

    /// A `fixed64` or `double` field.
    #[inline]
    pub(crate) fn fixed64(self, name: &str) -> Result<u64> {
        match self.value {
            Value::Fixed64(v) => Ok(v),
            _ => Err(self.wrong_type(name, "64-bit")),
        }
    }

    /// A `fixed32` field.
    #[inline]
    pub(crate) fn fixed32(self, name: &str) -> Result<u32> {
        match self.value {
            Value::Fixed32(v) => Ok(v),
            _ => Err(self.wrong_type(name, "32-bit")),
        }
    }
}

/// The fields of `bytes`, an encoded `message`, in wire order; groups
/// (deprecated, in no OTLP message) are skipped. Stops after the first error.
#[inline]
pub(crate) fn fields<'a>(message: &'static str, bytes: &'a [u8]) -> Fields<'a> {
    Fields {
        rest: bytes,
        message,
    }
}

pub(crate) struct Fields<'a> {
    rest: &'a [u8],
    message: &'static str,
}

impl<'a> Fields<'a> {
    #[inline]
    fn read(&mut self) -> Result<Option<Field<'a>>, String> {
        let (tag, wire_type) = self.key()?;
        let value = match wire_type {
            WireType::Varint => Value::Varint(self.varint()?),
            WireType::SixtyFourBit => Value::Fixed64(u64::from_le_bytes(self.take(tag)?)),
            WireType::ThirtyTwoBit => Value::Fixed32(u32::from_le_bytes(self.take(tag)?)),
            WireType::LengthDelimited => {
                let len = self.varint()?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= self.rest.len())
                    .ok_or_else(|| underflow(tag))?;
                let (value, rest) = self.rest.split_at(len);
                self.rest = rest;
                Value::Delimited(value)
            }
            WireType::StartGroup | WireType::EndGroup => {
                skip_field(wire_type, tag, &mut self.rest, DecodeContext::default())
                    .map_err(|e| e.to_string())?;
                return Ok(None);
            }
        };
        Ok(Some(Field {
            tag,
            value,
            message: self.message,
        }))
    }

    /// A field's key. Nearly every key in OTLP is one byte (field numbers
    /// below 16), read here without a call; prost reads the rest.
    #[inline]
    fn key(&mut self) -> Result<(u32, WireType), String> {
        if let [byte @ 0x08..=0x7f, rest @ ..] = self.rest {
            if let Ok(wire_type) = WireType::try_from(u64::from(byte & 0x07)) {
                self.rest = rest;
                return Ok((u32::from(byte >> 3), wire_type));
            }
        }
        decode_key(&mut self.rest).map_err(|e| e.to_string())
    }

    /// A varint; one-byte ones (most lengths and enums) without a call.
    #[inline]
    fn varint(&mut self) -> Result<u64, String> {
        if let [byte @ 0x00..=0x7f, rest @ ..] = self.rest {
            self.rest = rest;
            return Ok(u64::from(*byte));
        }
        decode_varint(&mut self.rest).map_err(|e| e.to_string())
    }

    #[inline]
    fn take<const N: usize>(&mut self, tag: u32) -> Result<[u8; N], String> {
        let (head, rest) = self
            .rest
            .split_first_chunk::<N>()
            .ok_or_else(|| underflow(tag))?;
        self.rest = rest;
        Ok(*head)
    }
}

fn underflow(tag: u32) -> String {
    format!("field #{tag} runs past the end of the message (buffer underflow)")
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<Field<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        while !self.rest.is_empty() {
            match self.read() {
                Ok(Some(field)) => return Some(Ok(field)),
                Ok(None) => {}
                Err(e) => {
                    self.rest = &[];
                    return Some(Err(WireError::new(self.message, e)));
                }
            }
        }
        None
    }
}

/// The embedded messages in the repeated field `tag` (called `name`) of
/// `bytes`, an encoded `message`.
pub(crate) fn repeated<'a>(
    message: &'static str,
    bytes: &'a [u8],
    tag: u32,
    name: &'static str,
) -> impl Iterator<Item = Result<&'a [u8]>> + 'a {
    fields(message, bytes).filter_map(move |field| match field {
        Ok(field) if field.tag == tag => Some(field.bytes(name)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })
}

/// An OTLP `AnyValue` that holds a value; arrays and key-value lists stay
/// encoded until they are written out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AnyValue<'a> {
    String(&'a str),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// An encoded `ArrayValue`.
    Array(&'a [u8]),
    /// An encoded `KeyValueList`.
    Kvlist(&'a [u8]),
    Bytes(&'a [u8]),
    /// An index into a profile's string table.
    Strindex(i32),
}

/// Reads an encoded `AnyValue`; `None` when it holds nothing.
#[inline]
pub(crate) fn any_value(bytes: &[u8]) -> Result<Option<AnyValue<'_>>> {
    let mut value = None;
    for field in fields("AnyValue", bytes) {
        let field = field?;
        value = Some(match field.tag {
            1 => AnyValue::String(field.text("string_value")?),
            2 => AnyValue::Bool(field.varint("bool_value")? != 0),
            3 => AnyValue::Int(field.varint("int_value")? as i64),
            4 => AnyValue::Double(f64::from_bits(field.fixed64("double_value")?)),
            5 => AnyValue::Array(field.bytes("array_value")?),
            6 => AnyValue::Kvlist(field.bytes("kvlist_value")?),
            7 => AnyValue::Bytes(field.bytes("bytes_value")?),
            8 => AnyValue::Strindex(field.varint("string_value_strindex")? as i32),
            _ => continue,
        });
    }
    Ok(value)
}

/// Reads an encoded `KeyValue`: its key and its value, if it has one.
#[inline]
pub(crate) fn key_value(bytes: &[u8]) -> Result<(&str, Option<AnyValue<'_>>)> {
    match plain_key_value(bytes) {
        Some(kv) => Ok(kv),
        None => any_key_value(bytes),
    }
}

/// The shape nearly every SDK writes a `KeyValue` in — a key, then a value
/// holding one string, integer, boolean or double, both shorter than 128
/// bytes — read without walking the fields one by one. `None` for anything
/// else, invalid UTF-8 included, which [`any_key_value`] then reads (or
/// refuses) field by field: both give the same result for what this accepts.
#[inline]
fn plain_key_value(bytes: &[u8]) -> Option<(&str, Option<AnyValue<'_>>)> {
    let [0x0a, key_len @ 0..=0x7f, rest @ ..] = bytes else {
        return None;
    };
    let (key, rest) = rest.split_at_checked(usize::from(*key_len))?;
    let [0x12, value_len @ 0..=0x7f, value @ ..] = rest else {
        return None;
    };
    if value.len() != usize::from(*value_len) {
        return None;
    }
    let value = match value {
        [0x0a, len @ 0..=0x7f, text @ ..] if text.len() == usize::from(*len) => {
            AnyValue::String(utf8(text).ok()?)
        }
        [0x18, varint @ ..] => {
            let mut rest = varint;
            let int = decode_varint(&mut rest).ok()?;
            if !rest.is_empty() {
                return None;
            }
            AnyValue::Int(int as i64)
        }
        [0x10, flag @ 0..=0x7f] => AnyValue::Bool(*flag != 0),
        [0x21, bits @ ..] => {
            AnyValue::Double(f64::from_bits(u64::from_le_bytes(bits.try_into().ok()?)))
        }
        _ => return None,
    };
    Some((utf8(key).ok()?, Some(value)))
}

/// `bytes` as text. Nearly all OTLP text is ASCII, which `is_ascii` checks
/// a word at a time, where the standard validation goes byte by byte through
/// the short strings attributes are made of.
#[inline]
fn utf8(bytes: &[u8]) -> std::result::Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

/// [`key_value`] for any encoding, field by field.
fn any_key_value(bytes: &[u8]) -> Result<(&str, Option<AnyValue<'_>>)> {
    let mut key = "";
    let mut value = None;
    for field in fields("KeyValue", bytes) {
        let field = field?;
        match field.tag {
            1 => key = field.text("key")?,
            2 => value = any_value(field.bytes("value")?)?,
            3 => {
                field.varint("key_strindex")?;
            }
            _ => {}
        }
    }
    Ok((key, value))
}

/// The encoded `KeyValue`s of the repeated field `tag` of `bytes`, read.
pub(crate) fn key_values<'a>(
    message: &'static str,
    bytes: &'a [u8],
    tag: u32,
) -> impl Iterator<Item = Result<(&'a str, Option<AnyValue<'a>>)>> + 'a {
    repeated(message, bytes, tag, "attributes").map(|kv| kv.and_then(key_value))
}

/// How many times the repeated field `tag` occurs in `bytes`.
pub(crate) fn count(message: &'static str, bytes: &[u8], tag: u32) -> Result<usize> {
    let mut n = 0;
    for field in fields(message, bytes) {
        if field?.tag == tag {
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue as Proto, KeyValue};
    use proptest::prelude::*;
    use prost::Message;

    #[test]
    fn reads_what_prost_writes() {
        let kv = KeyValue {
            key: "http.route".into(),
            value: Some(Proto {
                value: Some(any_value::Value::IntValue(-7)),
            }),
            ..Default::default()
        };
        let bytes = kv.encode_to_vec();
        assert_eq!(
            key_value(&bytes).unwrap(),
            ("http.route", Some(AnyValue::Int(-7)))
        );
        let empty = KeyValue {
            key: "k".into(),
            value: Some(Proto { value: None }),
            ..Default::default()
        };
        assert_eq!(key_value(&empty.encode_to_vec()).unwrap(), ("k", None));
    }

    fn any_proto_value() -> impl Strategy<Value = Option<any_value::Value>> {
        prop_oneof![
            Just(None),
            ".{0,80}".prop_map(|s| Some(any_value::Value::StringValue(s))),
            any::<i64>().prop_map(|i| Some(any_value::Value::IntValue(i))),
            any::<bool>().prop_map(|b| Some(any_value::Value::BoolValue(b))),
            any::<f64>().prop_map(|d| Some(any_value::Value::DoubleValue(d))),
            prop::collection::vec(any::<u8>(), 0..4)
                .prop_map(|b| Some(any_value::Value::BytesValue(b))),
        ]
    }

    #[test]
    fn text_is_read_as_the_standard_validation_reads_it() {
        let samples: [&[u8]; 8] = [
            b"",
            b"GET /orders?id=42",
            "caf\u{e9}".as_bytes(),
            "\u{65e5}\u{672c}".as_bytes(),
            b"\xff",
            b"ok\xc3",
            b"\x80tail",
            b"\xed\xa0\x80",
        ];
        for bytes in samples {
            assert_eq!(
                utf8(bytes).ok(),
                std::str::from_utf8(bytes).ok(),
                "{bytes:?}"
            );
        }
    }

    proptest! {
        /// Whatever the shortcut for the common shape accepts — key-values as
        /// SDKs write them, or those bytes changed — reads as the field-by-field
        /// path reads it.
        #[test]
        fn the_plain_shape_reads_as_the_general_path_does(
            key in ".{0,130}",
            value in any_proto_value(),
            with_value in any::<bool>(),
            edit in prop::option::of((any::<prop::sample::Index>(), any::<u8>())),
        ) {
            let kv = KeyValue {
                key,
                value: with_value.then_some(Proto { value }),
                ..Default::default()
            };
            let mut bytes = kv.encode_to_vec();
            if let Some((at, byte)) = edit {
                if !bytes.is_empty() {
                    let at = at.index(bytes.len());
                    bytes[at] = byte;
                }
            }
            if let Some(plain) = plain_key_value(&bytes) {
                // Compared as text: NaN is not equal to itself.
                prop_assert_eq!(format!("{:?}", Ok::<_, WireError>(plain)), format!("{:?}", any_key_value(&bytes)));
            }
        }
    }

    #[test]
    fn the_plain_shape_is_taken_for_what_sdks_send() {
        for value in [
            any_value::Value::StringValue("GET".into()),
            any_value::Value::IntValue(-7),
            any_value::Value::BoolValue(true),
            any_value::Value::DoubleValue(0.5),
        ] {
            let kv = KeyValue {
                key: "http.request.method".into(),
                value: Some(Proto { value: Some(value) }),
                ..Default::default()
            };
            assert!(plain_key_value(&kv.encode_to_vec()).is_some(), "{kv:?}");
        }
    }

    #[test]
    fn errors_name_the_message_and_field() {
        // Field 1 (key) as a varint instead of a string.
        let error = key_value(&[0x08, 0x01]).unwrap_err();
        assert_eq!(
            error.to_string(),
            "invalid OTLP protobuf in KeyValue: field key (#1) has wire type varint, expected length-delimited"
        );
        // A key of invalid UTF-8.
        let error = key_value(&[0x0a, 0x01, 0xff]).unwrap_err();
        assert!(
            error.to_string().contains("key (#1) is not valid UTF-8"),
            "{error}"
        );
        // A length past the end.
        let error = key_value(&[0x0a, 0x05, b'a']).unwrap_err();
        assert!(error.to_string().contains("buffer underflow"), "{error}");
    }

    #[test]
    fn the_last_occurrence_of_a_singular_field_wins() {
        // string_value "a", then int_value 3: a oneof keeps the last.
        assert_eq!(
            any_value(&[0x0a, 0x01, b'a', 0x18, 0x03]).unwrap(),
            Some(AnyValue::Int(3))
        );
    }

    #[test]
    fn groups_are_skipped_like_prost_skips_them() {
        // Field 9 as a group holding a varint, then key "k".
        let bytes = [0x4b, 0x08, 0x01, 0x4c, 0x0a, 0x01, b'k'];
        assert_eq!(key_value(&bytes).unwrap(), ("k", None));
        assert!(KeyValue::decode(&bytes[..]).is_ok());
    }
}
