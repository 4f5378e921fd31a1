//! Parsing and quoting of the values the HTTP API takes: times, durations,
//! trace ids, and how they enter the SQL it builds.

use chrono::{DateTime, SecondsFormat, Utc};

/// A time given as RFC 3339 (`2026-11-25T10:00:00Z`) or unix nanoseconds.
pub fn parse_time(name: &str, value: &str) -> Result<i64, String> {
    if let Ok(nanos) = value.parse::<i64>() {
        return Ok(nanos);
    }
    DateTime::parse_from_rfc3339(value)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(|| {
            format!("{name}={value:?} is not a time: use RFC 3339 (2026-11-25T10:00:00Z) or unix nanoseconds")
        })
}

/// A duration in Go's notation, as Jaeger takes it: a sequence of decimal
/// numbers with units `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, such as
/// `250ms`, `1.5s` or `1m30s`. Returns nanoseconds.
pub fn parse_duration(name: &str, value: &str) -> Result<i64, String> {
    let fail = || {
        format!("{name}={value:?} is not a duration: use a number with a unit, such as 250ms, 1.5s or 1m30s")
    };
    let mut rest = value.trim();
    if rest.is_empty() {
        return Err(fail());
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(fail)?;
        let number: f64 = rest[..number_len].parse().map_err(|_| fail())?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(fail()),
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    if total > i64::MAX as f64 {
        return Err(fail());
    }
    Ok(total.round() as i64)
}

/// A trace id as stored: 32 lowercase hex digits. Jaeger's 16-digit
/// (64-bit) ids are padded with zeros, as OpenTelemetry pads them.
pub fn parse_trace_id(value: &str) -> Result<String, String> {
    let valid = matches!(value.len(), 16 | 32) && value.bytes().all(|b| b.is_ascii_hexdigit());
    if !valid {
        return Err(format!(
            "trace id {value:?} is not 32 (or 16) hexadecimal digits"
        ));
    }
    Ok(format!("{:0>32}", value.to_ascii_lowercase()))
}

/// `text` as a SQL string literal.
pub fn sql_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// Unix nanoseconds as a SQL literal that compares with a timestamp column
/// (RFC 3339 text, which DataFusion casts to the column's type).
pub fn sql_time(nanos: i64) -> String {
    let time = DateTime::<Utc>::from_timestamp_nanos(nanos);
    format!("'{}'", time.to_rfc3339_opts(SecondsFormat::Nanos, true))
}

/// Nanoseconds since the epoch, now.
pub fn now_nanos() -> i64 {
    Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX)
}

/// RFC 3339 text with nanoseconds back into unix nanoseconds, for the
/// timestamps of query results.
pub fn result_time_nanos(text: &str) -> Option<i64> {
    DateTime::parse_from_rfc3339(text)
        .ok()?
        .timestamp_nanos_opt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_go_and_jaeger_write_them() {
        assert_eq!(parse_duration("d", "250ms"), Ok(250_000_000));
        assert_eq!(parse_duration("d", "1.5s"), Ok(1_500_000_000));
        assert_eq!(parse_duration("d", "1m30s"), Ok(90_000_000_000));
        assert_eq!(parse_duration("d", "100us"), Ok(100_000));
        assert_eq!(parse_duration("d", "7ns"), Ok(7));
        for bad in ["", "10", "ms", "1.5.2s", "3 days", "-1s"] {
            let err = parse_duration("min_duration", bad).unwrap_err();
            assert!(err.contains("min_duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn times_are_rfc3339_or_unix_nanoseconds() {
        assert_eq!(
            parse_time("t", "1700000000000000000"),
            Ok(1_700_000_000_000_000_000)
        );
        assert_eq!(
            parse_time("t", "2023-11-14T22:13:20.5Z"),
            Ok(1_700_000_000_500_000_000)
        );
        assert!(parse_time("start", "yesterday")
            .unwrap_err()
            .contains("start="));
    }

    #[test]
    fn trace_ids_are_normalised_and_checked() {
        assert_eq!(
            parse_trace_id("0AF7651916CD43DD8448EB211C80319C").unwrap(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(
            parse_trace_id("8448eb211c80319c").unwrap(),
            "00000000000000008448eb211c80319c"
        );
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id("0af7651916cd43dd8448eb211c80319").is_err());
    }

    #[test]
    fn text_is_quoted_so_it_stays_a_literal() {
        assert_eq!(sql_string("it's"), "'it''s'");
        assert_eq!(sql_time(0), "'1970-01-01T00:00:00.000000000Z'");
    }
}
