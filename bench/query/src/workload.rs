//! CRM traces and logs for the query benchmark: realistic shapes and
//! cardinalities spread over a fixed six-hour window, so time filters,
//! percentiles and error rates mean something and every run stores the
//! same kind of data.
//!
//! A trace: crm-mobile serves a request, crm-conductor orchestrates it with
//! internal transform spans, calls crm-salesforce once or twice and
//! crm-database one to three times. About 2% of traces fail in the database
//! and the error propagates up; gold customers are slower. Every span logs
//! one record with its trace and span id.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

/// 2026-11-25T00:00:00Z: the start of the window all data falls in.
pub const WINDOW_START_NS: u64 = 1_795_564_800_000_000_000;
/// Six hours.
pub const WINDOW_NS: u64 = 6 * 3600 * 1_000_000_000;

pub const SERVICES: [&str; 4] = [
    "crm-mobile",
    "crm-conductor",
    "crm-salesforce",
    "crm-database",
];
const ROUTES: [&str; 6] = [
    "/api/accounts/{id}",
    "/api/accounts",
    "/api/contacts/{id}",
    "/api/contacts",
    "/api/opportunities",
    "/api/opportunities/{id}",
];
const TABLES: [&str; 3] = ["accounts", "contacts", "opportunities"];

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(value: impl Into<String>) -> Value {
    Value::StringValue(value.into())
}

/// One batch of traces as the two export requests a collector would send.
pub struct Batch {
    pub traces: ExportTraceServiceRequest,
    pub logs: ExportLogsServiceRequest,
    pub spans: u64,
    /// A few of the batch's trace ids, for lookups.
    pub sample_trace_ids: Vec<String>,
}

struct Builder<'a> {
    rng: &'a mut fastrand::Rng,
    trace_id: Vec<u8>,
    tier: &'static str,
    customer: String,
    spans: [Vec<Span>; 4],
    logs: [Vec<LogRecord>; 4],
}

impl Builder<'_> {
    fn id(&mut self) -> Vec<u8> {
        (0..8).map(|_| self.rng.u8(..)).collect()
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        service: usize,
        name: String,
        kind: span::SpanKind,
        parent: &[u8],
        start: u64,
        duration: u64,
        error: Option<&str>,
        mut attributes: Vec<KeyValue>,
    ) -> Vec<u8> {
        let span_id = self.id();
        attributes.push(kv("customer.tier", s(self.tier)));
        attributes.push(kv("customer.id", s(self.customer.clone())));
        attributes.push(kv(
            "k8s.pod.name",
            s(format!(
                "{}-7d9f8c6b5-{}",
                SERVICES[service],
                self.rng.u8(0..5)
            )),
        ));
        let (severity_number, severity_text, body) = match error {
            Some(message) => (
                17,
                "ERROR",
                format!("{message} in {} while handling {name}", SERVICES[service]),
            ),
            None if duration > 400_000_000 => (
                13,
                "WARN",
                format!(
                    "slow {name} for customer {} took {}ms",
                    self.customer,
                    duration / 1_000_000
                ),
            ),
            None => (
                9,
                "INFO",
                format!(
                    "handled {name} for customer {} in {}ms",
                    self.customer,
                    duration / 1_000_000
                ),
            ),
        };
        self.logs[service].push(LogRecord {
            time_unix_nano: start + duration / 2,
            observed_time_unix_nano: start + duration / 2 + 1_000_000,
            severity_number,
            severity_text: severity_text.into(),
            body: Some(AnyValue {
                value: Some(s(body)),
            }),
            attributes: vec![kv(
                "log.logger",
                s(format!("{}.handler", SERVICES[service])),
            )],
            trace_id: self.trace_id.clone(),
            span_id: span_id.clone(),
            ..Default::default()
        });
        self.spans[service].push(Span {
            trace_id: self.trace_id.clone(),
            span_id: span_id.clone(),
            parent_span_id: parent.to_vec(),
            name,
            kind: kind as i32,
            start_time_unix_nano: start,
            end_time_unix_nano: start + duration,
            attributes,
            status: Some(match error {
                Some(message) => Status {
                    code: status::StatusCode::Error as i32,
                    message: message.into(),
                },
                None => Status::default(),
            }),
            ..Default::default()
        });
        span_id
    }
}

fn lognormal_ms(rng: &mut fastrand::Rng, median_ms: f64) -> u64 {
    // Sum of uniforms as a cheap normal, exponentiated: a long right tail.
    let normal: f64 = (0..6).map(|_| rng.f64()).sum::<f64>() - 3.0;
    (median_ms * (normal * 0.5).exp() * 1e6) as u64
}

/// `traces` traces with start times spread over the window.
pub fn batch(rng: &mut fastrand::Rng, traces: usize) -> Batch {
    let mut spans: [Vec<Span>; 4] = Default::default();
    let mut logs: [Vec<LogRecord>; 4] = Default::default();
    let mut sample_trace_ids = Vec::new();
    let mut count = 0u64;
    for t in 0..traces {
        let trace_id: Vec<u8> = (0..16).map(|_| rng.u8(..)).collect();
        if t == 0 {
            sample_trace_ids.push(hex::encode(&trace_id));
        }
        let tier = match rng.u8(0..10) {
            0 => "gold",
            1..=3 => "silver",
            _ => "bronze",
        };
        let customer = format!("acc-{}", rng.u32(1..200_000));
        let mut b = Builder {
            rng,
            trace_id,
            tier,
            customer,
            spans: std::mem::take(&mut spans),
            logs: std::mem::take(&mut logs),
        };
        let failing = b.rng.u8(0..50) == 0;
        let route = ROUTES[b.rng.usize(0..ROUTES.len())];
        let method = if route.ends_with("{id}") || b.rng.bool() {
            "GET"
        } else {
            "POST"
        };
        let start = WINDOW_START_NS + b.rng.u64(0..WINDOW_NS);
        let slow = if tier == "gold" { 2.0 } else { 1.0 };
        let db_calls = b.rng.usize(1..4);
        let sf_calls = b.rng.usize(1..3);
        let db_ms: Vec<u64> = (0..db_calls)
            .map(|_| lognormal_ms(b.rng, 8.0 * slow))
            .collect();
        let sf_ms: Vec<u64> = (0..sf_calls).map(|_| lognormal_ms(b.rng, 60.0)).collect();
        let work: u64 = db_ms.iter().chain(&sf_ms).sum::<u64>() + 3_000_000;
        let total = work + 2_000_000;
        let error = failing.then_some("timeout waiting for crm-database after 500ms");
        let status = if failing {
            500
        } else if method == "POST" {
            201
        } else {
            200
        };
        let root = b.span(
            0,
            format!("{method} {route}"),
            span::SpanKind::Server,
            &[],
            start,
            total,
            error,
            vec![
                kv("http.request.method", s(method)),
                kv("http.route", s(route)),
                kv("http.response.status_code", Value::IntValue(status)),
            ],
        );
        let conductor = b.span(
            1,
            format!("orchestrate {route}"),
            span::SpanKind::Server,
            &root,
            start + 1_000_000,
            work,
            error,
            vec![kv("rpc.method", s("Orchestrate"))],
        );
        let mut at = start + 1_500_000;
        for ms in sf_ms {
            b.span(
                2,
                "GET /services/data/v59.0/sobjects".into(),
                span::SpanKind::Server,
                &conductor,
                at,
                ms,
                None,
                vec![
                    kv("http.request.method", s("GET")),
                    kv("http.response.status_code", Value::IntValue(200)),
                ],
            );
            at += ms;
        }
        let transform = b.rng.u64(200_000..900_000);
        b.span(
            1,
            "transform salesforce → crm".into(),
            span::SpanKind::Internal,
            &conductor,
            at,
            transform,
            None,
            vec![],
        );
        for (i, ms) in db_ms.iter().enumerate() {
            let table = TABLES[b.rng.usize(0..TABLES.len())];
            let last = i + 1 == db_calls;
            b.span(
                3,
                format!("SELECT {table}"),
                span::SpanKind::Server,
                &conductor,
                at,
                *ms,
                if last { error } else { None },
                vec![
                    kv("db.system", s("sqlite")),
                    kv(
                        "db.query.text",
                        s(format!("SELECT * FROM {table} WHERE id = ?")),
                    ),
                ],
            );
            at += ms;
        }
        count += 3 + sf_calls as u64 + db_calls as u64;
        spans = b.spans;
        logs = b.logs;
    }
    let resource = |service: &str| Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("service.version", s("2.4.1")),
            kv("deployment.environment.name", s("production")),
        ],
        ..Default::default()
    };
    let traces = ExportTraceServiceRequest {
        resource_spans: spans
            .into_iter()
            .enumerate()
            .map(|(i, spans)| ResourceSpans {
                resource: Some(resource(SERVICES[i])),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: logs
            .into_iter()
            .enumerate()
            .map(|(i, log_records)| ResourceLogs {
                resource: Some(resource(SERVICES[i])),
                scope_logs: vec![ScopeLogs {
                    log_records,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    };
    Batch {
        traces,
        logs,
        spans: count,
        sample_trace_ids,
    }
}
