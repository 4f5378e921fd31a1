//! CRM-shaped traffic with injected faults whose root cause is known.
//!
//! Each request is `crm-mobile` → `crm-conductor` (which transforms the data
//! and then calls `crm-salesforce` and `crm-database` concurrently), with
//! realistic attributes (`customer.tier`, `http.route`, the database pod,
//! service versions) and log records carrying trace and span ids. A
//! [`Fault`] slows or fails one service for a share of the requests,
//! optionally only where an attribute has a given value; a timeout fault
//! makes the conductor give up on a slow database, so the error shows in
//! the conductor and the mobile API while the cause is the database.
//!
//! Used by the root-cause tests (`tests/analysis_rca.rs`) and the accuracy
//! benchmark (`src/main.rs`), over real OTLP/HTTP.

use serde_json::{json, Value};

pub const MOBILE: &str = "crm-mobile";
pub const CONDUCTOR: &str = "crm-conductor";
pub const SALESFORCE: &str = "crm-salesforce";
pub const DATABASE: &str = "crm-database";

/// What goes wrong, for which requests.
#[derive(Debug, Clone)]
pub enum Fault {
    /// `service` takes `extra_ms` longer.
    Latency {
        service: &'static str,
        extra_ms: u64,
    },
    /// `service` fails.
    Error { service: &'static str },
    /// The database takes `extra_ms` longer and the conductor gives up after
    /// `timeout_ms`, failing with a timeout; the mobile API answers 504.
    DatabaseTimeout { extra_ms: u64, timeout_ms: u64 },
}

/// Which requests a fault hits.
#[derive(Debug, Clone)]
pub struct Injection {
    pub fault: Fault,
    /// Share of the matching requests hit.
    pub probability: f64,
    /// Only requests with this attribute value (`customer.tier`, `k8s.pod.name`
    /// of the database, `salesforce.api.version`, `http.route`).
    pub when: Option<(&'static str, &'static str)>,
}

/// A run of traffic with its known cause.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub name: String,
    pub requests: usize,
    pub injection: Injection,
    pub seed: u64,
    /// Where the analysis should point: service and kind (`error`/`latency`).
    pub expected_service: &'static str,
    pub expected_kind: &'static str,
    /// The attribute value it should name, when the fault has one.
    pub expected_attribute: Option<(&'static str, &'static str)>,
}

/// One request's shape, drawn before faults.
struct Request {
    route: &'static str,
    conductor_op: &'static str,
    salesforce_op: &'static str,
    database_op: &'static str,
    tier: &'static str,
    pod: &'static str,
    salesforce_version: &'static str,
}

const ROUTES: [(&str, &str, &str, &str); 3] = [
    (
        "/api/accounts/{id}",
        "sync account",
        "GET /services/data/accounts",
        "SELECT accounts",
    ),
    (
        "/api/contacts",
        "list contacts",
        "GET /services/data/contacts",
        "SELECT contacts",
    ),
    (
        "/api/opportunities",
        "list opportunities",
        "GET /services/data/opportunities",
        "SELECT opportunities",
    ),
];

/// Spans and logs as OTLP/JSON request bodies, by service.
#[derive(Debug, Default)]
pub struct Workload {
    /// `(service, span)`; the service becomes the resource.
    pub spans: Vec<(String, Value)>,
    pub logs: Vec<(String, Value)>,
}

/// Generates the scenario's traffic, `start_ms` being the first request's
/// unix time in milliseconds; requests come every 100 ms.
pub fn generate(scenario: &Scenario, start_ms: u64) -> Workload {
    generate_every(scenario, start_ms, 100.0)
}

/// [`generate`] with requests `every_ms` apart.
pub fn generate_every(scenario: &Scenario, start_ms: u64, every_ms: f64) -> Workload {
    let mut rng = fastrand::Rng::with_seed(scenario.seed);
    let mut workload = Workload::default();
    for i in 0..scenario.requests {
        let route = ROUTES[rng.usize(..ROUTES.len())];
        let request = Request {
            route: route.0,
            conductor_op: route.1,
            salesforce_op: route.2,
            database_op: route.3,
            tier: match rng.u8(..10) {
                0..=1 => "gold",
                2..=4 => "silver",
                _ => "bronze",
            },
            pod: ["crm-database-0", "crm-database-1", "crm-database-2"][rng.usize(..3)],
            salesforce_version: if rng.u8(..4) == 0 { "2.0.0" } else { "1.9.3" },
        };
        let hit =
            matches(&scenario.injection, &request) && rng.f64() < scenario.injection.probability;
        emit(
            &mut workload,
            &mut rng,
            &request,
            hit.then_some(&scenario.injection.fault),
            scenario.seed,
            i,
            start_ms + (i as f64 * every_ms) as u64,
        );
    }
    workload
}

fn matches(injection: &Injection, request: &Request) -> bool {
    match injection.when {
        None => true,
        Some(("customer.tier", value)) => request.tier == value,
        Some(("k8s.pod.name", value)) => request.pod == value,
        Some(("salesforce.api.version", value)) => request.salesforce_version == value,
        Some(("http.route", value)) => request.route == value,
        Some(_) => false,
    }
}

/// Milliseconds drawn around `mean`, skewed right as latencies are.
fn latency(rng: &mut fastrand::Rng, mean: f64) -> f64 {
    let u = rng.f64().max(1e-9);
    mean * (0.6 + 0.8 * u + 0.4 * (-u.ln()).min(3.0) * rng.f64())
}

fn emit(
    out: &mut Workload,
    rng: &mut fastrand::Rng,
    request: &Request,
    fault: Option<&Fault>,
    seed: u64,
    index: usize,
    start_ms: u64,
) {
    let trace_id = format!(
        "{:016x}{:016x}",
        seed.wrapping_mul(0x9e37_79b9),
        index as u64 + 1
    );
    let span_id = |n: u64| format!("{:012x}{:04x}", index as u64 + 1, n);
    let extra = |service: &str| match fault {
        Some(Fault::Latency {
            service: s,
            extra_ms,
        }) if *s == service => *extra_ms as f64,
        Some(Fault::DatabaseTimeout { extra_ms, .. }) if service == DATABASE => *extra_ms as f64,
        _ => 0.0,
    };
    let fails = |service: &str| matches!(fault, Some(Fault::Error { service: s }) if *s == service);

    // Conductor: transform (sequential), then salesforce ‖ database.
    let transform_ms = latency(rng, 4.0);
    let salesforce_ms = latency(rng, 45.0) + extra(SALESFORCE);
    let database_ms = latency(rng, 15.0) + extra(DATABASE);
    let fan_out_start = 3.0 + transform_ms + 1.0;
    let timeout = match fault {
        Some(Fault::DatabaseTimeout { timeout_ms, .. }) => Some(*timeout_ms as f64),
        _ => None,
    };
    let waited = salesforce_ms.max(database_ms);
    let (conductor_wait, timed_out) = match timeout {
        Some(limit) if database_ms > limit => (limit, true),
        _ => (waited, false),
    };
    let conductor_ms = fan_out_start + conductor_wait + 2.0 + extra(CONDUCTOR);
    let mobile_ms = 2.0 + conductor_ms + 3.0 + extra(MOBILE);
    let salesforce_failed = fails(SALESFORCE);
    let database_failed = fails(DATABASE);
    let conductor_failed = fails(CONDUCTOR) || salesforce_failed || database_failed || timed_out;
    let mobile_failed = conductor_failed || fails(MOBILE);

    let at = |offset_ms: f64| ((start_ms as f64 + offset_ms) * 1e6).round() as u64;
    let span = |service: &str,
                n: u64,
                parent: Option<u64>,
                name: &str,
                kind: u8,
                from: f64,
                to: f64,
                failed: Option<&str>,
                attributes: Value| {
        let mut span = json!({
            "traceId": trace_id,
            "spanId": span_id(n),
            "name": name,
            "kind": kind,
            "startTimeUnixNano": at(from).to_string(),
            "endTimeUnixNano": at(to).to_string(),
            "attributes": attributes,
        });
        if let Some(parent) = parent {
            span["parentSpanId"] = json!(span_id(parent));
        }
        if let Some(message) = failed {
            span["status"] = json!({ "code": 2, "message": message });
        }
        (service.to_string(), span)
    };
    let log = |service: &str, n: u64, at_ms: f64, severity: (u8, &str), body: String| {
        (
            service.to_string(),
            json!({
                "timeUnixNano": at(at_ms).to_string(),
                "severityNumber": severity.0,
                "severityText": severity.1,
                "body": { "stringValue": body },
                "traceId": trace_id,
                "spanId": span_id(n),
            }),
        )
    };
    let status = if mobile_failed {
        if timed_out {
            504
        } else {
            500
        }
    } else {
        200
    };
    out.spans.push(span(
        MOBILE,
        1,
        None,
        &format!("GET {}", request.route),
        2,
        0.0,
        mobile_ms,
        mobile_failed.then_some("upstream failed"),
        attributes(&[
            ("http.request.method", "GET"),
            ("http.route", request.route),
            ("http.response.status_code", &status.to_string()),
            ("customer.tier", request.tier),
        ]),
    ));
    let conductor_start = 2.0;
    out.spans.push(span(
        CONDUCTOR,
        2,
        Some(1),
        request.conductor_op,
        2,
        conductor_start,
        conductor_start + conductor_ms,
        conductor_failed.then_some(if timed_out {
            "timeout"
        } else {
            "downstream call failed"
        }),
        attributes(&[("customer.tier", request.tier)]),
    ));
    out.spans.push(span(
        CONDUCTOR,
        3,
        Some(2),
        "transform payload",
        1,
        conductor_start + 3.0,
        conductor_start + 3.0 + transform_ms,
        None,
        attributes(&[("crm.format", "salesforce-v2")]),
    ));
    let fan_out = conductor_start + fan_out_start;
    out.spans.push(span(
        SALESFORCE,
        4,
        Some(2),
        request.salesforce_op,
        2,
        fan_out,
        fan_out + salesforce_ms,
        salesforce_failed.then_some("salesforce API returned 503"),
        attributes(&[
            ("http.request.method", "GET"),
            ("salesforce.api.version", request.salesforce_version),
        ]),
    ));
    out.spans.push(span(
        DATABASE,
        5,
        Some(2),
        request.database_op,
        2,
        fan_out,
        fan_out + database_ms,
        database_failed.then_some("deadlock detected"),
        attributes(&[
            ("db.system", "sqlite"),
            ("db.query.text", "SELECT * FROM t WHERE id = ?"),
            ("k8s.pod.name", request.pod),
        ]),
    ));
    out.logs.push(log(
        CONDUCTOR,
        2,
        conductor_start + 1.0,
        (9, "INFO"),
        format!("{} for {} customer", request.conductor_op, request.tier),
    ));
    if database_ms > 200.0 {
        out.logs.push(log(
            DATABASE,
            5,
            fan_out + database_ms - 1.0,
            (13, "WARN"),
            format!(
                "slow query: {} took {:.0}ms",
                request.database_op, database_ms
            ),
        ));
    }
    if database_failed {
        out.logs.push(log(
            DATABASE,
            5,
            fan_out + database_ms - 1.0,
            (17, "ERROR"),
            "deadlock detected; transaction rolled back".into(),
        ));
    }
    if salesforce_failed {
        out.logs.push(log(
            SALESFORCE,
            4,
            fan_out + salesforce_ms - 1.0,
            (17, "ERROR"),
            "upstream salesforce returned 503 Service Unavailable".into(),
        ));
    }
    if timed_out {
        out.logs.push(log(
            CONDUCTOR,
            2,
            fan_out + conductor_wait,
            (17, "ERROR"),
            format!(
                "timeout waiting for crm-database after {:.0}ms",
                conductor_wait
            ),
        ));
    } else if conductor_failed {
        out.logs.push(log(
            CONDUCTOR,
            2,
            conductor_start + conductor_ms - 1.0,
            (17, "ERROR"),
            "downstream call failed".into(),
        ));
    }
}

fn attributes(pairs: &[(&str, &str)]) -> Value {
    Value::Array(
        pairs
            .iter()
            .map(|(key, value)| json!({ "key": key, "value": { "stringValue": value } }))
            .collect(),
    )
}

fn resource(service: &str) -> Value {
    json!({ "attributes": attributes(&[("service.name", service), ("service.version", "1.4.0")]) })
}

/// Sends the workload to an OTLP/HTTP receiver (`http://host:port`) as
/// OTLP/JSON, in requests of at most `batch` records.
pub fn send(
    client: &reqwest::blocking::Client,
    otlp_http: &str,
    workload: &Workload,
    batch: usize,
) -> anyhow::Result<()> {
    for (path, records, envelope, scope_key, list_key) in [
        (
            "/v1/traces",
            &workload.spans,
            "resourceSpans",
            "scopeSpans",
            "spans",
        ),
        (
            "/v1/logs",
            &workload.logs,
            "resourceLogs",
            "scopeLogs",
            "logRecords",
        ),
    ] {
        for chunk in records.chunks(batch.max(1)) {
            let mut by_service: std::collections::BTreeMap<&str, Vec<&Value>> = Default::default();
            for (service, record) in chunk {
                by_service.entry(service).or_default().push(record);
            }
            let body = json!({
                envelope: by_service.into_iter().map(|(service, list)| json!({
                    "resource": resource(service),
                    scope_key: [{ "scope": { "name": "crm" }, list_key: list }],
                })).collect::<Vec<_>>(),
            });
            let response = client
                .post(format!("{otlp_http}{path}"))
                .json(&body)
                .send()?;
            let status = response.status();
            let text = response.text()?;
            anyhow::ensure!(
                status.is_success() && !text.contains("rejected"),
                "POST {path}: {status} {text}"
            );
        }
    }
    Ok(())
}

/// The benchmark's suite: every fault kind on every service it applies to,
/// at several strengths and with attribute conditions.
pub fn suite() -> Vec<Scenario> {
    let mut scenarios = Vec::new();
    let mut add =
        |name: String, injection: Injection, service: &'static str, kind: &'static str| {
            let expected_attribute = injection.when;
            scenarios.push(Scenario {
                seed: 1000 + scenarios.len() as u64,
                name,
                requests: 3000,
                injection,
                expected_service: service,
                expected_kind: kind,
                expected_attribute,
            });
        };
    for service in [SALESFORCE, DATABASE, CONDUCTOR, MOBILE] {
        // The last: rarer than the slowest 5 %, so chance slow traces outnumber it.
        for (extra_ms, probability) in [(300, 0.2), (150, 0.1), (300, 0.02)] {
            add(
                format!("{service} +{extra_ms}ms for {:.0}%", probability * 100.0),
                Injection {
                    fault: Fault::Latency { service, extra_ms },
                    probability,
                    when: None,
                },
                service,
                "latency",
            );
        }
    }
    for service in [SALESFORCE, DATABASE, CONDUCTOR, MOBILE] {
        for probability in [0.1, 0.03] {
            add(
                format!("{service} fails {:.0}%", probability * 100.0),
                Injection {
                    fault: Fault::Error { service },
                    probability,
                    when: None,
                },
                service,
                "error",
            );
        }
    }
    add(
        "crm-database +500ms for gold customers".into(),
        Injection {
            fault: Fault::Latency {
                service: DATABASE,
                extra_ms: 500,
            },
            probability: 1.0,
            when: Some(("customer.tier", "gold")),
        },
        DATABASE,
        "latency",
    );
    add(
        "crm-database +400ms on pod crm-database-2".into(),
        Injection {
            fault: Fault::Latency {
                service: DATABASE,
                extra_ms: 400,
            },
            probability: 0.8,
            when: Some(("k8s.pod.name", "crm-database-2")),
        },
        DATABASE,
        "latency",
    );
    add(
        "crm-salesforce fails on API version 2.0.0".into(),
        Injection {
            fault: Fault::Error {
                service: SALESFORCE,
            },
            probability: 0.5,
            when: Some(("salesforce.api.version", "2.0.0")),
        },
        SALESFORCE,
        "error",
    );
    add(
        "crm-database fails for gold customers".into(),
        Injection {
            fault: Fault::Error { service: DATABASE },
            probability: 0.4,
            when: Some(("customer.tier", "gold")),
        },
        DATABASE,
        "error",
    );
    for (probability, extra_ms) in [(0.2, 900), (0.05, 1500)] {
        add(
            format!(
                "crm-database slow ({extra_ms}ms) for {:.0}%, conductor times out at 500ms",
                probability * 100.0
            ),
            Injection {
                fault: Fault::DatabaseTimeout {
                    extra_ms,
                    timeout_ms: 500,
                },
                probability,
                when: None,
            },
            DATABASE,
            "latency",
        );
    }
    scenarios
}
