//! Authentication, tenants and quotas, end to end: credentials made with
//! `weft token` and `weft user`, telemetry from the official OpenTelemetry
//! SDK and from raw OTLP clients, answers from the query API — all over real
//! sockets to a real `weft serve --auth`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig, WithTonicConfig};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use support::*;

/// Runs a `weft` subcommand to completion: its stdout, stderr and success.
fn weft_command(args: &[&str], stdin: &str) -> (String, String, bool) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weft runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
        output.status.success(),
    )
}

/// A token made by `weft token create`.
struct Token {
    id: String,
    text: String,
}

fn create_token(data_dir: &Path, tenant: &str, role: &str) -> Token {
    let dir = data_dir.to_str().unwrap();
    let (stdout, stderr, ok) = weft_command(
        &[
            "token",
            "create",
            "--data-dir",
            dir,
            "--tenant",
            tenant,
            "--role",
            role,
        ],
        "",
    );
    assert!(ok, "weft token create failed: {stderr}");
    // "created token <id> (...)"
    let id = stderr.split_whitespace().nth(2).unwrap().to_string();
    Token {
        id,
        text: stdout.trim().to_string(),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

fn string_attribute(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

/// One trace of the randomized test: its spans' services, and a word only
/// its log line contains.
#[derive(Clone, Debug)]
struct TestTrace {
    trace_id: [u8; 16],
    services: Vec<String>,
    word: String,
}

impl TestTrace {
    fn hex_id(&self) -> String {
        self.trace_id.iter().map(|b| format!("{b:02x}")).collect()
    }
}

fn traces_request(traces: &[TestTrace]) -> ExportTraceServiceRequest {
    let start = now_ns() - 60_000_000_000;
    let mut by_service: BTreeMap<&str, Vec<Span>> = BTreeMap::new();
    for trace in traces {
        for (i, service) in trace.services.iter().enumerate() {
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&trace.trace_id[..4]);
            span_id[7] = i as u8 + 1;
            by_service.entry(service).or_default().push(Span {
                trace_id: trace.trace_id.to_vec(),
                span_id: span_id.to_vec(),
                parent_span_id: if i == 0 {
                    Vec::new()
                } else {
                    let mut parent = span_id;
                    parent[7] = i as u8;
                    parent.to_vec()
                },
                name: format!("GET /{}", trace.word),
                kind: if i == 0 { 2 } else { 3 },
                start_time_unix_nano: start + i as u64 * 1_000,
                end_time_unix_nano: start + 1_000_000 - i as u64 * 1_000,
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", service)],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn logs_request(traces: &[TestTrace]) -> ExportLogsServiceRequest {
    let time = now_ns() - 60_000_000_000;
    ExportLogsServiceRequest {
        resource_logs: traces
            .iter()
            .map(|trace| ResourceLogs {
                resource: Some(Resource {
                    attributes: vec![string_attribute("service.name", &trace.services[0])],
                    ..Default::default()
                }),
                scope_logs: vec![ScopeLogs {
                    log_records: vec![LogRecord {
                        time_unix_nano: time,
                        severity_number: 17,
                        body: Some(AnyValue {
                            value: Some(Value::StringValue(format!(
                                "request failed: {} timed out",
                                trace.word
                            ))),
                        }),
                        trace_id: trace.trace_id.to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

/// POSTs an OTLP protobuf message to weft's OTLP/HTTP port.
fn post_otlp(
    weft: &Weft,
    path: &str,
    token: Option<&str>,
    message: &impl Message,
) -> reqwest::blocking::Response {
    let mut request = client()
        .post(weft.http_url(path))
        .header("content-type", "application/x-protobuf")
        .body(message.encode_to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().expect("OTLP/HTTP answers")
}

/// GET on the query API as `token`: status and JSON body.
fn get_as(weft: &Weft, token: Option<&str>, path: &str) -> (u16, serde_json::Value) {
    let mut request = client().get(weft.api_url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    get_json(request.send().expect("query API answers"))
}

/// The rows of a SQL query run as `token`, which must succeed.
fn sql_as(weft: &Weft, token: &str, sql: &str) -> (u16, serde_json::Value) {
    get_json(
        client()
            .post(weft.api_url("/api/v1/sql"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .expect("query API answers"),
    )
}

fn write_config(dir: &Path, toml: &str) -> String {
    let path = dir.join("weft.toml");
    std::fs::write(&path, toml).unwrap();
    path.to_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listener_needs_credentials_of_the_right_role_and_revoked_ones_stop_working() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let ingest = create_token(&data, "acme", "ingest");
    let read = create_token(&data, "acme", "read");
    let admin = create_token(&data, "acme", "admin");
    let (_, stderr, ok) = weft_command(
        &[
            "user",
            "add",
            "alice",
            "--data-dir",
            data.to_str().unwrap(),
            "--tenant",
            "acme",
            "--role",
            "read",
        ],
        "correct horse battery\n",
    );
    assert!(ok, "{stderr}");
    let stored = std::fs::read_to_string(data.join("credentials.toml")).unwrap();
    assert!(!stored.contains(&ingest.text) && !stored.contains("correct horse"));

    // Failures are throttled per address; this test makes a few on purpose.
    let config = write_config(dir.path(), "[auth]\nmax_failures_per_minute = 1000\n");
    let weft = tokio::task::block_in_place(|| Weft::start(&data, &["--auth", "--config", &config]));

    // The official SDK with a token: over gRPC (metadata) and HTTP (a header).
    let mut metadata = tonic::metadata::MetadataMap::new();
    metadata.insert(
        "authorization",
        format!("Bearer {}", ingest.text).parse().unwrap(),
    );
    let grpc_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(weft.grpc_url())
        .with_metadata(metadata)
        .build()
        .unwrap();
    let http_exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(weft.http_url("/v1/traces"))
        .with_headers(
            [(
                "authorization".to_string(),
                format!("Bearer {}", ingest.text),
            )]
            .into(),
        )
        .build()
        .unwrap();
    for (exporter, service) in [(grpc_exporter, "crm-grpc"), (http_exporter, "crm-http")] {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(service)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("security-test");
        tracer.in_span("GET /accounts", |cx| {
            cx.span()
                .set_attribute(opentelemetry::KeyValue::new("customer.tier", "gold"))
        });
        tokio::task::spawn_blocking(move || provider.shutdown().expect("spans exported"))
            .await
            .unwrap();
    }
    tokio::task::block_in_place(|| {
        eventually("both SDK exports to be readable by acme", || {
            let (status, body) = get_as(&weft, Some(&read.text), "/api/v1/services");
            status == 200 && body["services"] == serde_json::json!(["crm-grpc", "crm-http"])
        })
    });

    // Raw gRPC: no token, a wrong one, and one whose role may not ingest.
    let mut grpc = TraceServiceClient::connect(weft.grpc_url()).await.unwrap();
    let spans = spans_request("crm-raw", 0..3);
    let export = |token: Option<String>| {
        let mut request = tonic::Request::new(spans.clone());
        if let Some(token) = token {
            request
                .metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
        }
        request
    };
    let status = grpc.export(export(None)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = grpc
        .export(export(Some(format!("{}x", ingest.text))))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    let status = grpc
        .export(export(Some(read.text.clone())))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    grpc.export(export(Some(ingest.text.clone())))
        .await
        .unwrap();

    tokio::task::block_in_place(|| {
        // OTLP/HTTP: the same three refusals, and a pass.
        assert_eq!(post_otlp(&weft, "/v1/traces", None, &spans).status(), 401);
        let wrong = format!("weft_{}", "A".repeat(43));
        assert_eq!(
            post_otlp(&weft, "/v1/traces", Some(&wrong), &spans).status(),
            401
        );
        assert_eq!(
            post_otlp(&weft, "/v1/traces", Some(&read.text), &spans).status(),
            403
        );
        assert_eq!(
            post_otlp(&weft, "/v1/traces", Some(&ingest.text), &spans).status(),
            200
        );

        // The query API and UI: a browser is asked to log in; an ingest
        // token may not read; a read token, a token as the basic-auth
        // password (Grafana's way) and a user's password may.
        let response = client().get(weft.api_url("/search")).send().unwrap();
        assert_eq!(response.status(), 401);
        let challenges: Vec<_> = response
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic")),
            "{challenges:?}"
        );
        let (status, body) = get_as(&weft, None, "/api/v1/services");
        assert_eq!(status, 401);
        let message = body["error"].as_str().unwrap();
        assert!(message.contains("authentication required"), "{message}");
        assert_eq!(get_as(&weft, Some(&ingest.text), "/api/v1/services").0, 403);
        assert_eq!(get_as(&weft, Some(&read.text), "/api/services").0, 200);
        let grafana = client()
            .get(weft.api_url("/api/services"))
            .basic_auth("grafana", Some(&read.text))
            .send()
            .unwrap();
        assert_eq!(grafana.status(), 200);
        let alice = client()
            .get(weft.api_url("/api/v1/services"))
            .basic_auth("alice", Some("correct horse battery"))
            .send()
            .unwrap();
        let (status, body) = get_json(alice);
        assert_eq!(status, 200);
        assert_eq!(
            body["services"],
            serde_json::json!(["crm-grpc", "crm-http", "crm-raw"])
        );
        let mallory = client()
            .get(weft.api_url("/api/v1/services"))
            .basic_auth("alice", Some("wrong horse battery"))
            .send()
            .unwrap();
        assert_eq!(mallory.status(), 401);

        // weft's own metrics are for admins.
        assert_eq!(get_status(&weft.api_url("/metrics"), Some(&read.text)), 403);
        assert_eq!(
            get_status(&weft.api_url("/metrics"), Some(&admin.text)),
            200
        );
        assert_eq!(
            get_status(&weft.http_url("/metrics"), Some(&ingest.text)),
            403
        );
        assert_eq!(
            get_status(&weft.http_url("/metrics"), Some(&admin.text)),
            200
        );

        // Revoking takes effect on the running weft, without a restart.
        let (_, stderr, ok) = weft_command(
            &[
                "token",
                "revoke",
                &ingest.id,
                "--data-dir",
                data.to_str().unwrap(),
            ],
            "",
        );
        assert!(ok, "{stderr}");
        eventually("the revoked token to be refused", || {
            post_otlp(&weft, "/v1/traces", Some(&ingest.text), &spans).status() == 401
        });
        let log = weft.log();
        for secret in [&ingest.text, &read.text, &admin.text] {
            assert!(!log.contains(secret.as_str()), "a token is in the log");
        }
    });
}

fn get_status(url: &str, token: Option<&str>) -> u16 {
    let mut request = client().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().unwrap().status().as_u16()
}

/// Random traces (with overlapping service names) split at random across
/// three tenants: whatever a tenant asks — SQL, search, trace by id, logs,
/// services, analysis — it gets exactly its own rows, before and after a
/// restart moves everything into Parquet.
#[test]
fn tenants_see_exactly_their_own_data_whatever_they_ask() {
    let seed = std::env::var("WEFT_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fastrand::u64(..));
    eprintln!("seed {seed} (WEFT_TEST_SEED={seed} repeats this run)");
    let mut rng = fastrand::Rng::with_seed(seed);

    let dir = tempfile::tempdir().unwrap();
    let tenants = ["acme", "beta", "default"];
    let tokens: BTreeMap<&str, (Token, Token)> = tenants
        .iter()
        .map(|&t| {
            (
                t,
                (
                    create_token(dir.path(), t, "ingest"),
                    create_token(dir.path(), t, "read"),
                ),
            )
        })
        .collect();
    let services = [
        "crm-mobile",
        "crm-conductor",
        "crm-salesforce",
        "crm-database",
    ];
    let mut owned: BTreeMap<&str, Vec<TestTrace>> = BTreeMap::new();
    for n in 0..rng.usize(30..80) {
        let mut trace_id = [0u8; 16];
        rng.fill(&mut trace_id);
        let span_count = rng.usize(1..4);
        let trace = TestTrace {
            trace_id,
            services: (0..span_count)
                .map(|_| services[rng.usize(..services.len())].to_string())
                .collect(),
            word: format!("word{n}x{}", rng.u32(..)),
        };
        owned
            .entry(tenants[rng.usize(..tenants.len())])
            .or_default()
            .push(trace);
    }

    let weft = Weft::start(dir.path(), &["--auth"]);
    for (tenant, traces) in &owned {
        let token = &tokens[tenant].0.text;
        assert_eq!(
            post_otlp(&weft, "/v1/traces", Some(token), &traces_request(traces)).status(),
            200
        );
        assert_eq!(
            post_otlp(&weft, "/v1/logs", Some(token), &logs_request(traces)).status(),
            200
        );
    }
    check_isolation(&weft, &tenants, &tokens, &owned);
    weft.stop();

    let weft = Weft::start(dir.path(), &["--auth"]);
    check_isolation(&weft, &tenants, &tokens, &owned);
}

fn check_isolation(
    weft: &Weft,
    tenants: &[&str],
    tokens: &BTreeMap<&str, (Token, Token)>,
    owned: &BTreeMap<&str, Vec<TestTrace>>,
) {
    let none = Vec::new();
    for tenant in tenants {
        let read = &tokens[tenant].1.text;
        let mine = owned.get(tenant).unwrap_or(&none);
        let others: Vec<&TestTrace> = owned
            .iter()
            .filter(|(t, _)| *t != tenant)
            .flat_map(|(_, traces)| traces)
            .collect();
        let my_ids: BTreeSet<String> = mine.iter().map(TestTrace::hex_id).collect();

        let (status, body) = sql_as(weft, read, "SELECT DISTINCT trace_id FROM spans");
        assert_eq!(status, 200, "{body}");
        let seen: BTreeSet<String> = body["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|row| row[0].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seen, my_ids, "{tenant}: SQL over spans");
        let (_, body) = sql_as(weft, read, "SELECT count(*) FROM logs");
        assert_eq!(body["rows"][0][0], mine.len(), "{tenant}: SQL over logs");

        let my_services: BTreeSet<&str> = mine
            .iter()
            .flat_map(|t| t.services.iter().map(String::as_str))
            .collect();
        let (_, body) = get_as(weft, Some(read), "/api/v1/services");
        let listed: BTreeSet<&str> = body["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap())
            .collect();
        assert_eq!(listed, my_services, "{tenant}: services");

        for service in &my_services {
            let (status, body) = get_as(
                weft,
                Some(read),
                &format!("/api/v1/traces?service={service}&limit=1000"),
            );
            assert_eq!(status, 200, "{body}");
            let found: BTreeSet<String> = body["traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["trace_id"].as_str().unwrap().to_string())
                .collect();
            let expected: BTreeSet<String> = mine
                .iter()
                .filter(|t| t.services.iter().any(|s| s == service))
                .map(TestTrace::hex_id)
                .collect();
            assert_eq!(found, expected, "{tenant}: search by {service}");
        }

        for trace in mine.iter().take(5) {
            let id = trace.hex_id();
            let (status, body) = get_as(weft, Some(read), &format!("/api/v1/traces/{id}"));
            assert_eq!(status, 200, "{tenant}: own trace {id}: {body}");
            assert_eq!(
                body["spans"].as_array().unwrap().len(),
                trace.services.len()
            );
            let (_, body) = get_as(weft, Some(read), &format!("/api/v1/logs?q={}", trace.word));
            assert_eq!(
                body["logs"].as_array().unwrap().len(),
                1,
                "{tenant}: own log"
            );
        }
        for trace in others.iter().take(8) {
            let id = trace.hex_id();
            for path in [
                format!("/api/v1/traces/{id}"),
                format!("/api/traces/{id}"),
                format!("/api/v1/analysis/rca?trace_id={id}"),
            ] {
                let (status, body) = get_as(weft, Some(read), &path);
                assert_eq!(
                    status, 404,
                    "{tenant} reached another tenant's trace: {path}: {body}"
                );
            }
            let (_, body) = get_as(weft, Some(read), &format!("/api/v1/logs?q={}", trace.word));
            assert_eq!(
                body["logs"],
                serde_json::json!([]),
                "{tenant}: another's log"
            );
            let (_, body) = sql_as(
                weft,
                read,
                &format!("SELECT count(*) FROM spans WHERE trace_id = '{id}'"),
            );
            assert_eq!(body["rows"][0][0], 0, "{tenant}: another's spans by SQL");
        }
    }
}

/// SQL that would read files, write, or change the session is refused, so a
/// tenant cannot reach another tenant's Parquet by path either.
#[test]
fn sql_cannot_read_files_or_escape_the_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let acme = create_token(dir.path(), "acme", "ingest");
    let beta = create_token(dir.path(), "beta", "read");
    let weft = Weft::start(dir.path(), &["--auth"]);
    let trace = TestTrace {
        trace_id: [7; 16],
        services: vec!["crm-database".into()],
        word: "secret".into(),
    };
    assert_eq!(
        post_otlp(
            &weft,
            "/v1/traces",
            Some(&acme.text),
            &traces_request(&[trace])
        )
        .status(),
        200
    );
    let acme_dir = dir.path().join("tenants/acme");
    let acme_spans = acme_dir.join("spans").display().to_string();
    let statements = [
        format!("CREATE EXTERNAL TABLE stolen STORED AS PARQUET LOCATION '{acme_spans}'"),
        format!("SELECT * FROM '{acme_spans}'"),
        "SELECT * FROM '/etc/passwd'".to_string(),
        format!("SELECT * FROM read_parquet('{acme_spans}')"),
        format!("COPY spans TO '{}/out.parquet'", dir.path().display()),
        "INSERT INTO spans SELECT * FROM spans".to_string(),
        "DROP TABLE spans".to_string(),
        "SET datafusion.execution.target_partitions = 1".to_string(),
        "CREATE VIEW v AS SELECT 1".to_string(),
    ];
    for sql in &statements {
        let (status, body) = sql_as(&weft, &beta.text, sql);
        assert_eq!(status, 400, "{sql} was not refused: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    assert!(!dir.path().join("out.parquet").exists());
    let (_, body) = sql_as(
        &weft,
        &beta.text,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
    );
    assert_eq!(body["rows"], serde_json::json!([["logs"], ["spans"]]));
    let (_, body) = sql_as(&weft, &beta.text, "SELECT count(*) FROM spans");
    assert_eq!(body["rows"][0][0], 0);

    // `weft sql`: against the server with a token (and refused without
    // one), and on the data directory for a chosen tenant.
    let server = format!("http://{}", weft.http);
    let count = "SELECT count(*) AS n FROM spans";
    let args = ["sql", "--format", "csv", "--server", &server, count];
    let (_, stderr, ok) = weft_command(&args, "");
    assert!(!ok && stderr.contains("401"), "{stderr}");
    let (stdout, stderr, ok) = weft_command(&[&args[..], &["--token", &beta.text]].concat(), "");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "n\n0\n");
    let data_dir = dir.path().to_str().unwrap();
    let local = [
        "sql",
        "--format",
        "csv",
        "--data-dir",
        data_dir,
        "--tenant",
        "acme",
        count,
    ];
    let (stdout, stderr, ok) = weft_command(&local, "");
    assert!(ok, "{stderr}");
    assert_eq!(stdout, "n\n1\n");
}

/// A tenant over its ingest rate or storage quota gets 429 / RESOURCE_EXHAUSTED
/// with a retry delay while other tenants keep ingesting; an address that
/// keeps failing to authenticate is slowed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_and_failed_logins_are_per_tenant_and_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let acme = create_token(dir.path(), "acme", "ingest");
    let beta = create_token(dir.path(), "beta", "ingest");
    let gamma = create_token(dir.path(), "gamma", "ingest");
    let config = write_config(
        dir.path(),
        "[auth]\nmax_failures_per_minute = 3\n\
         [quotas.tenants.acme]\ningest_bytes_per_second = 2000\n\
         [quotas.tenants.gamma]\nmax_stored_bytes = 1\n",
    );
    let weft =
        tokio::task::block_in_place(|| Weft::start(dir.path(), &["--auth", "--config", &config]));
    let request = spans_request("crm-mobile", 0..40);
    assert!(request.encoded_len() > 2000);

    tokio::task::block_in_place(|| {
        assert_eq!(
            post_otlp(&weft, "/v1/traces", Some(&acme.text), &request).status(),
            200
        );
        let refused = post_otlp(&weft, "/v1/traces", Some(&acme.text), &request);
        assert_eq!(refused.status(), 429);
        let retry_after: u64 = refused.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry_after), "{retry_after}");
        for _ in 0..5 {
            assert_eq!(
                post_otlp(&weft, "/v1/traces", Some(&beta.text), &request).status(),
                200
            );
        }
        assert_eq!(
            post_otlp(&weft, "/v1/traces", Some(&gamma.text), &request).status(),
            200
        );
        let refused = post_otlp(&weft, "/v1/traces", Some(&gamma.text), &request);
        assert_eq!(refused.status(), 429);
        assert!(refused.text().unwrap().contains("quota"));
    });

    let mut grpc = TraceServiceClient::connect(weft.grpc_url()).await.unwrap();
    let mut export = tonic::Request::new(request.clone());
    export.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", acme.text).parse().unwrap(),
    );
    let status = grpc.export(export).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");

    tokio::task::block_in_place(|| {
        for _ in 0..3 {
            assert_eq!(
                post_otlp(&weft, "/v1/traces", Some("weft_nope"), &request).status(),
                401
            );
        }
        // Past the failures allowed, even a good token waits.
        let throttled = post_otlp(&weft, "/v1/traces", Some(&beta.text), &request);
        assert_eq!(throttled.status(), 429);
        assert!(throttled.headers().contains_key("retry-after"));
    });
}

/// A query past its own memory limit fails with 400 naming the limit, while
/// the memory all queries share is far from used up and the next query runs.
#[test]
fn one_query_cannot_take_the_memory_all_queries_share() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(
        dir.path(),
        &["--query-memory-limit-per-query-bytes", "8000000"],
    );
    // An aggregate that cannot spill to disk: it must hold every value.
    let (status, body) =
        weft.sql("SELECT cardinality(array_agg(v)) FROM generate_series(1, 3000000) t(v)");
    assert_eq!(status, 400, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("per-query limit of 8000000 bytes"),
        "{error}"
    );
    assert_eq!(
        weft.sql_rows("SELECT count(*) FROM generate_series(1, 1000) t(v)"),
        vec![vec![serde_json::json!(1000)]]
    );
}
