//! `GET /api/v1/analysis/trends` on a real `weft serve`: spans sent over
//! OTLP/HTTP at known counts per minute come back as the exact rate, error
//! rate and p95 series; logs as the exact volume per severity; an hour of
//! minutes is forecast without seasonality and its one burst is the anomaly,
//! a few minutes are too little to forecast; bad parameters are 400s that name them.

mod support;

use serde_json::{json, Value};
use support::*;

/// 2026-11-20T10:00:00Z, the start of the hour of test traffic.
const T0: u64 = 1_795_168_800_000_000_000;
const MINUTE: u64 = 60_000_000_000;
const STEPS: u64 = 60;
/// Minutes without any request.
const QUIET: [u64; 2] = [17, 40];
/// The minute of a burst: ten times the usual requests.
const BURST: u64 = 30;

/// Requests of `checkout` in minute `i`.
fn requests(i: u64) -> u64 {
    match i {
        BURST => 40,
        i if QUIET.contains(&i) => 0,
        i => 4 + i % 5,
    }
}

/// Failed requests of `checkout` in minute `i`: the first ones of the minute.
fn errors(i: u64) -> u64 {
    if requests(i) == 0 {
        0
    } else {
        i % 4
    }
}

fn attribute(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

fn resource(service: &str) -> Value {
    json!({ "attributes": [attribute("service.name", service)] })
}

/// One span of minute `minute`, as OTLP/JSON.
struct Span<'a> {
    trace: u64,
    id: u64,
    parent: Option<u64>,
    name: &'a str,
    kind: u32,
    start: u64,
    minute: u64,
    error: bool,
}

impl Span<'_> {
    /// Every span of minute `i` lasts `i + 1` ms, so that minute's p95 is
    /// exactly that.
    fn json(&self) -> Value {
        let mut span = json!({
            "traceId": format!("{:032x}", 0xabc0_0000 + self.trace),
            "spanId": format!("{:016x}", 0x1000_0000 + self.id),
            "name": self.name,
            "kind": self.kind,
            "startTimeUnixNano": self.start.to_string(),
            "endTimeUnixNano": (self.start + (self.minute + 1) * 1_000_000).to_string(),
            "status": { "code": if self.error { 2 } else { 0 } },
        });
        if let Some(parent) = self.parent {
            span["parentSpanId"] = json!(format!("{:016x}", 0x1000_0000 + parent));
        }
        span
    }
}

const SERVER: u32 = 2;
const CLIENT: u32 = 3;
const INTERNAL: u32 = 1;
const CONSUMER: u32 = 5;

/// An hour of `checkout` requests: entry points of three kinds (a SERVER
/// span called from elsewhere, a CONSUMER span, a root of another kind) over
/// two operations, beside spans that are not requests (its own CLIENT and
/// INTERNAL children, another service's SERVER spans) and requests just
/// outside the window.
fn traffic() -> Value {
    let mut checkout = Vec::new();
    let mut other = Vec::new();
    let mut last_id = 0;
    let mut next_id = || {
        last_id += 1;
        last_id
    };
    for i in 0..STEPS {
        for j in 0..requests(i) {
            let trace = next_id();
            let start = T0 + i * MINUTE + j * 1_000_000_000 + 500_000_000;
            let name = if j % 2 == 0 { "GET /cart" } else { "POST /pay" };
            // The caller's span is not stored: it belongs to another service's exporter.
            let (kind, parent) = match j {
                0 => (INTERNAL, None),
                1 => (CONSUMER, Some(next_id())),
                _ => (SERVER, Some(next_id())),
            };
            let request = Span {
                trace,
                id: next_id(),
                parent,
                name,
                kind,
                start,
                minute: i,
                error: j < errors(i),
            };
            let call = Span {
                id: next_id(),
                parent: Some(request.id),
                name: "SELECT cart",
                kind: CLIENT,
                error: true,
                ..request
            };
            let work = Span {
                id: next_id(),
                parent: Some(request.id),
                name: "render",
                kind: INTERNAL,
                error: false,
                ..request
            };
            checkout.extend([request.json(), call.json(), work.json()]);
        }
        let id = next_id();
        let elsewhere = Span {
            trace: id,
            id,
            parent: None,
            name: "GET /cart",
            kind: SERVER,
            start: T0 + i * MINUTE,
            minute: i,
            error: true,
        };
        other.push(elsewhere.json());
    }
    for start in [T0 - 1_000_000_000, T0 + STEPS * MINUTE] {
        let id = next_id();
        let outside = Span {
            trace: id,
            id,
            parent: None,
            name: "GET /cart",
            kind: SERVER,
            start,
            minute: 0,
            error: true,
        };
        checkout.push(outside.json());
    }
    json!({ "resourceSpans": [
        { "resource": resource("checkout"), "scopeSpans": [{ "spans": checkout }] },
        { "resource": resource("inventory"), "scopeSpans": [{ "spans": other }] },
    ]})
}

/// Log records of `service`, each `(minute offset from T0 in ns, severity number)`.
fn log_records(service: &str, records: &[(i64, u32)]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .map(|&(offset, severity)| {
            json!({
                "timeUnixNano": (T0 as i64 + offset).to_string(),
                "severityNumber": severity,
                "body": { "stringValue": format!("severity {severity}") },
            })
        })
        .collect();
    json!({ "resource": resource(service), "scopeLogs": [{ "logRecords": records }] })
}

fn logs() -> Value {
    let m = MINUTE as i64;
    json!({ "resourceLogs": [
        log_records("checkout", &[
            (2 * m + 1, 9), (2 * m + 2, 10), (2 * m + 3, 12), (2 * m + 4, 17),
            (5 * m, 13), (5 * m + 59_000_000_000, 16), (5 * m + 7, 0),
            (59 * m + 1, 21), (59 * m + 2, 1), (59 * m + 3, 8),
            (-m, 17), (60 * m, 17),
        ]),
        log_records("inventory", &[(2 * m, 17)]),
    ]})
}

fn post(weft: &Weft, path: &str, body: &Value) {
    let response = reqwest::blocking::Client::new()
        .post(weft.http_url(path))
        .json(body)
        .send()
        .expect("OTLP/HTTP answers");
    assert_eq!(
        response.status().as_u16(),
        200,
        "{path}: {:?}",
        response.text()
    );
}

fn weft_with_traffic(dir: &std::path::Path) -> Weft {
    let weft = Weft::start(dir, &[]);
    post(&weft, "/v1/traces", &traffic());
    post(&weft, "/v1/logs", &logs());
    weft
}

const HOUR: &str = "start=2026-11-20T10:00:00Z&end=2026-11-20T11:00:00Z&step=1m";

fn trends(weft: &Weft, query: &str) -> Value {
    let (status, body) = weft.get_json(&format!("/api/v1/analysis/trends?{query}"));
    assert_eq!(status, 200, "{query}: {body}");
    body
}

fn minute(i: u64) -> String {
    format!("2026-11-20T{:02}:{:02}:00Z", 10 + i / 60, i % 60)
}

/// Asserts the series has one point a minute with the values `expected`
/// gives (`None`: null). Values are compared to the last few bits, which
/// `serde_json`'s fast float parsing may round differently.
fn assert_series(body: &Value, expected: impl Fn(u64) -> Option<f64>) {
    let series = body["series"].as_array().expect("series");
    assert_eq!(series.len(), STEPS as usize, "{body}");
    for (i, point) in (0..STEPS).zip(series) {
        assert_eq!(point["time"], minute(i));
        match (point["value"].as_f64(), expected(i)) {
            (None, None) => assert!(point["value"].is_null()),
            (Some(got), Some(want)) => assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "minute {i}: {got} != {want}"
            ),
            (got, want) => panic!("minute {i}: {got:?} != {want:?}"),
        }
    }
}

#[test]
fn the_series_are_exact_per_minute_counts_of_the_services_requests() {
    let dir = tempfile::tempdir().unwrap();
    let weft = weft_with_traffic(dir.path());

    let body = trends(
        &weft,
        &format!("service=checkout&metric=rate&{HOUR}&horizon=10m"),
    );
    assert_eq!(body["service"], "checkout");
    assert_eq!(body["operation"], Value::Null);
    assert_eq!(body["metric"], "rate");
    assert_eq!(body["start"], "2026-11-20T10:00:00Z");
    assert_eq!(body["end"], "2026-11-20T11:00:00Z");
    assert_eq!(body["step_seconds"], 60);
    assert_series(&body, |i| Some(requests(i) as f64 / 60.0));

    let body = trends(&weft, &format!("service=checkout&metric=errors&{HOUR}"));
    assert_series(&body, |i| match requests(i) {
        0 => None,
        n => Some(errors(i) as f64 / n as f64),
    });

    let body = trends(&weft, &format!("service=checkout&metric=p95&{HOUR}"));
    assert_series(&body, |i| match requests(i) {
        0 => None,
        _ => Some(((i + 1) * 1_000_000) as f64),
    });

    let body = trends(
        &weft,
        &format!("service=checkout&operation=POST%20/pay&{HOUR}"),
    );
    assert_eq!(body["operation"], "POST /pay");
    assert_eq!(body["metric"], "rate", "rate is the default metric");
    assert_series(&body, |i| Some((requests(i) / 2) as f64 / 60.0));
}

#[test]
fn log_volume_counts_the_services_records_per_minute_and_level() {
    let dir = tempfile::tempdir().unwrap();
    let weft = weft_with_traffic(dir.path());
    let body = trends(&weft, &format!("service=checkout&{HOUR}"));
    let volume = |i: u64, severity: &str, count: u64| json!({ "time": minute(i), "severity": severity, "count": count });
    assert_eq!(
        body["log_volume"],
        json!([
            volume(2, "INFO", 3),
            volume(2, "ERROR", 1),
            volume(5, "WARN", 2),
            volume(5, "UNSPECIFIED", 1),
            volume(59, "TRACE", 1),
            volume(59, "DEBUG", 1),
            volume(59, "FATAL", 1),
        ])
    );
}

#[test]
fn an_hour_is_forecast_without_seasonality_with_its_burst_as_the_anomaly_and_eight_minutes_are_too_few(
) {
    let dir = tempfile::tempdir().unwrap();
    let weft = weft_with_traffic(dir.path());

    let body = trends(&weft, &format!("service=checkout&{HOUR}&horizon=10m"));
    let forecast = &body["forecast"];
    assert_eq!(forecast["model"], "AutoETS", "{body}");
    assert_eq!(forecast["level"], 0.95);
    assert_eq!(
        body["forecast_note"],
        "no seasonality modelled: 60 measured points cover fewer than two daily cycles (2880 points)"
    );
    let points = forecast["points"].as_array().unwrap();
    let times: Vec<&str> = points.iter().map(|p| p["time"].as_str().unwrap()).collect();
    let next: Vec<String> = (60..70).map(minute).collect();
    assert_eq!(times, next);
    for point in points {
        let (value, lower, upper) = (
            point["value"].as_f64().unwrap(),
            point["lower"].as_f64().unwrap(),
            point["upper"].as_f64().unwrap(),
        );
        assert!(0.0 <= lower && lower <= value && value <= upper, "{point}");
    }
    // The burst is the one minute the model did not expect; quiet minutes
    // are within its interval of a service this small.
    let anomalies = body["anomalies"].as_array().unwrap();
    assert_eq!(anomalies.len(), 1, "{body}");
    let burst = &anomalies[0];
    assert_eq!(burst["time"], minute(BURST));
    let value = burst["value"].as_f64().unwrap();
    assert!((value - 40.0 / 60.0).abs() < 1e-12, "{burst}");
    let (expected, lower, upper) = (
        burst["expected"].as_f64().unwrap(),
        burst["lower"].as_f64().unwrap(),
        burst["upper"].as_f64().unwrap(),
    );
    assert!(
        0.0 <= lower && lower <= expected && expected <= upper && upper < value,
        "{burst}"
    );

    let body = trends(
        &weft,
        "service=checkout&start=2026-11-20T10:00:00Z&end=2026-11-20T10:08:00Z&step=1m",
    );
    assert_eq!(body["series"].as_array().unwrap().len(), 8);
    assert_eq!(body["forecast"], Value::Null);
    assert_eq!(
        body["forecast_note"],
        "too little data for a forecast: 8 measured points of 8, at least 10 needed"
    );
    assert_eq!(body["anomalies"], json!([]));
}

#[test]
fn without_a_window_the_last_day_is_cut_into_ten_minute_steps() {
    let dir = tempfile::tempdir().unwrap();
    let weft = weft_with_traffic(dir.path());
    // The test traffic is days old: the last day has no requests at all.
    let body = trends(&weft, "service=checkout");
    assert_eq!(body["step_seconds"], 600);
    let series = body["series"].as_array().unwrap();
    assert_eq!(series.len(), 144);
    assert!(series.iter().all(|p| p["value"] == 0.0), "{body}");
    let forecast = body["forecast"]["points"].as_array().expect("a forecast");
    assert!(
        forecast
            .iter()
            .all(|p| p["value"].as_f64().unwrap().abs() < 1e-9),
        "{body}"
    );
}

#[test]
fn bad_parameters_are_400s_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let window = "start=2026-11-20T10:00:00Z&end=2026-11-20T11:00:00Z";
    for (query, message) in [
        (window.to_string(), "service is required".to_string()),
        (
            format!("service=checkout&metric=latency&{window}"),
            "metric=\"latency\" is not a metric: use rate, errors or p95".to_string(),
        ),
        (
            format!("service=checkout&step=often&{window}"),
            "step=\"often\" is not a duration".to_string(),
        ),
        (
            format!("service=checkout&step=500ms&{window}"),
            "step=\"500ms\" must be a whole number of seconds, at least 1s".to_string(),
        ),
        (
            "service=checkout&start=2026-11-13T10:00:00Z&end=2026-11-20T10:00:00Z&step=1m"
                .to_string(),
            "step=60s makes 10080 points from start to end, more than 10000: use a larger step"
                .to_string(),
        ),
        (
            format!("service=checkout&horizon=2h&{window}"),
            "horizon=\"2h\" is longer than the window from start to end".to_string(),
        ),
        (
            "service=checkout&start=2026-11-20T11:00:00Z&end=2026-11-20T10:00:00Z".to_string(),
            "start must be before end".to_string(),
        ),
        (
            "service=checkout&start=yesterday".to_string(),
            "start=\"yesterday\" is not a time".to_string(),
        ),
    ] {
        let (status, body) = weft.get_json(&format!("/api/v1/analysis/trends?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.starts_with(&message), "{query}: {error}");
    }
}
