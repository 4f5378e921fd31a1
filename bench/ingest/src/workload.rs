//! The CRM workload as OTLP payloads: traces that cross crm-mobile →
//! crm-conductor → crm-salesforce / crm-database, batched per service the way
//! an SDK's batch exporter sends them, and logs that carry the trace ids.
//!
//! Payloads are encoded once. Every send copies one and rewrites its ids in
//! place (XOR with a per-send number), so each request carries new traces
//! without the load generator spending the CPU weft needs on encoding.

use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};
use prost::Message;

/// One encoded request and where its ids sit in the bytes.
#[derive(Clone)]
pub struct Payload {
    pub bytes: Vec<u8>,
    /// Offsets of the first 8 bytes of every id (trace or span) in `bytes`.
    id_offsets: Vec<usize>,
    pub records: u64,
}

impl Payload {
    fn new(bytes: Vec<u8>, ids: &[Vec<u8>], records: u64) -> Self {
        // One pass over the bytes, looking each 8-byte window up among the
        // ids' first 8 bytes (a search per id took most of the generation).
        let prefixes: std::collections::HashSet<[u8; 8]> = ids
            .iter()
            .filter_map(|id| id.first_chunk::<8>().copied())
            .collect();
        let id_offsets: Vec<usize> = bytes
            .windows(8)
            .enumerate()
            .filter(|(_, window)| {
                prefixes.contains(<&[u8; 8]>::try_from(*window).expect("8-byte window"))
            })
            .map(|(offset, _)| offset)
            .collect();
        Self {
            bytes,
            id_offsets,
            records,
        }
    }

    /// A copy with every id made unique to `send`.
    pub fn instance(&self, send: u64) -> Vec<u8> {
        let mut bytes = self.bytes.clone();
        let mask = send.wrapping_mul(0x9e37_79b9_7f4a_7c15).to_le_bytes();
        for &offset in &self.id_offsets {
            for (b, m) in bytes[offset..offset + 8].iter_mut().zip(mask) {
                *b ^= m;
            }
        }
        bytes
    }
}

fn kv(key: &str, value: Value) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn s(value: &str) -> Value {
    Value::StringValue(value.into())
}

fn resource(service: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", s(service)),
            kv("service.version", s("2.4.1")),
            kv("deployment.environment.name", s("production")),
            kv("host.name", s(&format!("{service}-7d9f8c6b5-x2x4q"))),
            kv("telemetry.sdk.language", s("rust")),
        ],
        ..Default::default()
    }
}

const SERVICES: [&str; 4] = [
    "crm-mobile",
    "crm-conductor",
    "crm-salesforce",
    "crm-database",
];
const TIERS: [&str; 3] = ["gold", "silver", "bronze"];
const ROUTES: [&str; 4] = [
    "/api/accounts/{id}",
    "/api/contacts",
    "/api/opportunities/{id}",
    "/api/accounts/{id}/contacts",
];

/// A span as the given service would emit it for one CRM request.
fn crm_span(
    rng: &mut fastrand::Rng,
    service: usize,
    trace_id: &[u8],
    span_id: &[u8],
    parent: &[u8],
    start: u64,
) -> Span {
    let duration = match service {
        0 => rng.u64(20_000_000..120_000_000),
        1 => rng.u64(10_000_000..80_000_000),
        2 => rng.u64(30_000_000..300_000_000),
        _ => rng.u64(200_000..20_000_000),
    };
    let route = ROUTES[rng.usize(..ROUTES.len())];
    let tier = TIERS[rng.usize(..TIERS.len())];
    let error = rng.u8(..100) < 3;
    let mut attributes = vec![
        kv("customer.tier", s(tier)),
        kv("customer.id", s(&format!("acc-{}", rng.u32(1..200_000)))),
        kv("crm.tenant", s(&format!("tenant-{}", rng.u8(1..40)))),
    ];
    let (name, kind) = match service {
        0 => {
            attributes.extend([
                kv("http.request.method", s("GET")),
                kv("http.route", s(route)),
                kv(
                    "url.path",
                    s(&route.replace("{id}", &rng.u32(1..100_000).to_string())),
                ),
                kv(
                    "http.response.status_code",
                    Value::IntValue(if error { 500 } else { 200 }),
                ),
                kv("server.address", s("api.crm.example.com")),
                kv("user_agent.original", s("CRM-Mobile/5.2.1 (iOS 18.1)")),
                kv("network.protocol.version", s("2")),
            ]);
            (format!("GET {route}"), span::SpanKind::Server)
        }
        1 => {
            attributes.extend([
                kv("crm.operation", s("sync_account")),
                kv("crm.records.transformed", Value::IntValue(rng.i64(1..500))),
                kv("crm.mapping.version", s("v7")),
            ]);
            (
                "transform salesforce→crm".to_string(),
                span::SpanKind::Internal,
            )
        }
        2 => {
            attributes.extend([
                kv("http.request.method", s("POST")),
                kv("server.address", s("eu12.salesforce.example.com")),
                kv(
                    "http.response.status_code",
                    Value::IntValue(if error { 503 } else { 200 }),
                ),
                kv("peer.service", s("salesforce")),
                kv("rpc.method", s("query")),
                kv("sf.api.version", s("v61.0")),
            ]);
            (
                "POST /services/data/v61.0/query".to_string(),
                span::SpanKind::Client,
            )
        }
        _ => {
            attributes.extend([
                kv("db.system", s("sqlite")),
                kv("db.namespace", s("crm")),
                kv("db.operation.name", s("SELECT")),
                kv(
                    "db.query.text",
                    s("SELECT id, name, owner, tier FROM accounts WHERE id = ?1"),
                ),
                kv("db.response.returned_rows", Value::IntValue(rng.i64(0..50))),
            ]);
            ("SELECT crm.accounts".to_string(), span::SpanKind::Client)
        }
    };
    let events = (0..rng.usize(1..=3))
        .map(|i| span::Event {
            time_unix_nano: start + duration / 4 * (i as u64 + 1),
            name: if error && i == 0 {
                "exception".into()
            } else {
                "retry.scheduled".into()
            },
            attributes: vec![
                kv("exception.type", s("UpstreamTimeout")),
                kv("exception.message", s("deadline exceeded after 300ms")),
            ],
            ..Default::default()
        })
        .collect();
    Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        parent_span_id: parent.to_vec(),
        name,
        kind: kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes,
        events,
        status: Some(Status {
            code: if error {
                status::StatusCode::Error
            } else {
                status::StatusCode::Unset
            } as i32,
            message: if error {
                "upstream failed".into()
            } else {
                String::new()
            },
        }),
        ..Default::default()
    }
}

/// Builds `count` trace payloads (one service each, `spans` spans) and the
/// logs payloads that go with them.
pub fn generate(count: usize, spans_per_request: usize, seed: u64) -> (Vec<Payload>, Vec<Payload>) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64;
    let mut traces = Vec::new();
    let mut logs = Vec::new();
    for i in 0..count {
        let service = i % SERVICES.len();
        let mut ids = Vec::new();
        let mut spans = Vec::new();
        let mut records = Vec::new();
        for _ in 0..spans_per_request {
            let trace_id: Vec<u8> = (0..16).map(|_| rng.u8(..)).collect();
            let span_id: Vec<u8> = (0..8).map(|_| rng.u8(..)).collect();
            let parent: Vec<u8> = if service == 0 {
                vec![]
            } else {
                (0..8).map(|_| rng.u8(..)).collect()
            };
            let start = now - rng.u64(0..60_000_000_000);
            let span = crm_span(&mut rng, service, &trace_id, &span_id, &parent, start);
            if rng.bool() {
                records.push(LogRecord {
                    time_unix_nano: start + 1_000_000,
                    observed_time_unix_nano: start + 1_100_000,
                    severity_number: if span.status.as_ref().is_some_and(|s| s.code == 2) {
                        17
                    } else {
                        9
                    },
                    severity_text: if span.status.as_ref().is_some_and(|s| s.code == 2) {
                        "ERROR"
                    } else {
                        "INFO"
                    }
                    .into(),
                    body: Some(AnyValue {
                        value: Some(s(&format!(
                            "{} handled {} for customer acc-{} in {}ms",
                            SERVICES[service],
                            span.name,
                            rng.u32(1..200_000),
                            (span.end_time_unix_nano - span.start_time_unix_nano) / 1_000_000
                        ))),
                    }),
                    attributes: vec![
                        kv("log.logger", s("crm.handler")),
                        kv("thread.name", s("tokio-runtime-worker")),
                    ],
                    trace_id: trace_id.clone(),
                    span_id: span_id.clone(),
                    ..Default::default()
                });
            }
            ids.push(trace_id);
            ids.push(span_id);
            if !parent.is_empty() {
                ids.push(parent);
            }
            spans.push(span);
        }
        let scope = Some(InstrumentationScope {
            name: format!("{}.instrumentation", SERVICES[service]),
            version: "1.0.0".into(),
            ..Default::default()
        });
        let trace_request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(resource(SERVICES[service])),
                scope_spans: vec![ScopeSpans {
                    scope: scope.clone(),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let log_count = records.len() as u64;
        let logs_request = ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                resource: Some(resource(SERVICES[service])),
                scope_logs: vec![ScopeLogs {
                    scope,
                    log_records: records,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        traces.push(Payload::new(
            trace_request.encode_to_vec(),
            &ids,
            spans_per_request as u64,
        ));
        logs.push(Payload::new(logs_request.encode_to_vec(), &ids, log_count));
    }
    (traces, logs)
}
