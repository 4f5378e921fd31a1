//! Root-cause analysis on traffic with injected faults whose cause is known,
//! sent over OTLP/HTTP to a real `weft serve`: the analysis must name the
//! injected cause first, for latency, errors, a fault limited to one
//! attribute value and a timeout cascade whose errors surface upstream.

mod support;

use serde_json::Value;
use support::Weft;
use weft_bench_rca::{generate, send, Fault, Injection, Scenario, CONDUCTOR, DATABASE, SALESFORCE};

const FIRST_WINDOW_MS: u64 = 1_764_000_000_000;
const REQUESTS: usize = 1200;

fn scenario(
    name: &str,
    injection: Injection,
    service: &'static str,
    kind: &'static str,
) -> Scenario {
    Scenario {
        name: name.to_string(),
        requests: REQUESTS,
        expected_attribute: injection.when,
        injection,
        // Trace ids derive from the seed: every scenario needs its own.
        seed: name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        }),
        expected_service: service,
        expected_kind: kind,
    }
}

/// Sends each scenario into a window of its own, then analyses each window.
fn analyse(weft: &Weft, scenarios: &[Scenario]) -> Vec<Value> {
    let client = reqwest::blocking::Client::new();
    let windows: Vec<(u64, u64)> = scenarios
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let start = FIRST_WINDOW_MS + i as u64 * 3_600_000;
            send(&client, &weft.http_url(""), &generate(s, start), 1000)
                .expect("weft takes the traffic");
            (start, start + s.requests as u64 * 100 + 10_000)
        })
        .collect();
    windows
        .iter()
        .map(|(start, end)| {
            let (status, body) = weft.get_json(&format!(
                "/api/v1/analysis/rca?start={}&end={}",
                start * 1_000_000,
                end * 1_000_000
            ));
            assert_eq!(status, 200, "{body}");
            body
        })
        .collect()
}

fn first_cause(report: &Value) -> &Value {
    &report["causes"][0]
}

#[test]
fn the_injected_cause_comes_first() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let scenarios = [
        scenario(
            "salesforce slow for 20% of requests",
            Injection {
                fault: Fault::Latency {
                    service: SALESFORCE,
                    extra_ms: 300,
                },
                probability: 0.2,
                when: None,
            },
            SALESFORCE,
            "latency",
        ),
        scenario(
            "database fails for 10% of requests",
            Injection {
                fault: Fault::Error { service: DATABASE },
                probability: 0.1,
                when: None,
            },
            DATABASE,
            "error",
        ),
        scenario(
            "database slow only for gold customers",
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
        ),
        scenario(
            "database slow, conductor times out, mobile fails",
            Injection {
                fault: Fault::DatabaseTimeout {
                    extra_ms: 900,
                    timeout_ms: 500,
                },
                probability: 0.15,
                when: None,
            },
            DATABASE,
            "latency",
        ),
        // Fewer slowed requests than the slowest 5 %: the chance slow traces
        // around them, each a little over on salesforce, must not outvote them.
        scenario(
            "database +300ms for 2% of requests",
            Injection {
                fault: Fault::Latency {
                    service: DATABASE,
                    extra_ms: 300,
                },
                probability: 0.02,
                when: None,
            },
            DATABASE,
            "latency",
        ),
    ];
    let reports = analyse(&weft, &scenarios);
    for (scenario, report) in scenarios.iter().zip(&reports) {
        let cause = first_cause(report);
        assert_eq!(
            (cause["service"].as_str(), cause["kind"].as_str()),
            (
                Some(scenario.expected_service),
                Some(scenario.expected_kind)
            ),
            "{}: {report:#}",
            scenario.name
        );
        assert!(
            cause["score"].as_f64().unwrap() > 0.5,
            "{}: {cause:#}",
            scenario.name
        );
        assert!(!cause["example_trace_ids"].as_array().unwrap().is_empty());
        assert_eq!(report["traces"], REQUESTS as u64, "{}", scenario.name);
    }

    // Latency evidence: the salesforce call's time grew and explains the increase.
    let evidence = &first_cause(&reports[0])["evidence"];
    assert!(
        evidence["latency_shift_ns"].as_f64().unwrap() > 100e6,
        "{evidence:#}"
    );
    assert!(
        evidence["share_of_increase"].as_f64().unwrap() > 0.5,
        "{evidence:#}"
    );
    assert!(
        evidence["ks_p_value"].as_f64().unwrap() < 0.001,
        "{evidence:#}"
    );

    // Error evidence: the database failed in failed traces, never in healthy
    // ones, significantly; its error log is attached.
    let evidence = &first_cause(&reports[1])["evidence"];
    assert_eq!(evidence["error_rate_baseline"], 0.0, "{evidence:#}");
    assert_eq!(evidence["error_rate_bad"], 1.0, "{evidence:#}");
    assert!(evidence["p_value"].as_f64().unwrap() < 1e-6, "{evidence:#}");
    assert_eq!(
        evidence["error_logs"][0]["message"],
        "deadlock detected; transaction rolled back"
    );

    // The attribute-limited fault names the attribute value.
    let attribute = &first_cause(&reports[2])["evidence"]["attributes"][0];
    assert_eq!(
        (attribute["key"].as_str(), attribute["value"].as_str()),
        (Some("customer.tier"), Some("gold")),
        "{:#}",
        reports[2]
    );
    assert_eq!(attribute["bad_share"], 1.0);

    // The cascade: conductor and mobile report the errors, the database is the cause.
    let cascade = &reports[3];
    assert!(
        cascade["error_traces"].as_u64().unwrap() > 100,
        "{cascade:#}"
    );
    assert!(
        first_cause(cascade)["evidence"]["error_logs"][0]["message"]
            .as_str()
            .unwrap()
            .starts_with("slow query"),
        "{cascade:#}"
    );

    // One of the cascade's traces on its own: the conductor's timeout is the
    // error origin, and the analysis points past it at the database.
    let trace_id = first_cause(cascade)["example_trace_ids"][0]
        .as_str()
        .unwrap()
        .to_string();
    let (status, trace) = weft.get_json(&format!("/api/v1/analysis/rca?trace_id={trace_id}"));
    assert_eq!(status, 200, "{trace}");
    assert_eq!(trace["error_origin"]["service"], CONDUCTOR, "{trace:#}");
    assert_eq!(trace["causes"][0]["service"], DATABASE, "{trace:#}");
    assert_eq!(trace["causes"][0]["kind"], "latency");
    assert!(trace["causes"][0]["logs"][0]["body"]
        .as_str()
        .unwrap()
        .starts_with("slow query"));
    let path: Vec<&str> = trace["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["service"].as_str().unwrap())
        .collect();
    assert!(
        path.contains(&DATABASE) && !path.contains(&SALESFORCE),
        "{path:?}"
    );
    let total: i64 = trace["critical_path"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["self_ns"].as_i64().unwrap())
        .sum();
    assert_eq!(
        total,
        trace["duration_ns"].as_i64().unwrap(),
        "self times add up to the trace"
    );
    assert!(weft.stop().success());
}

#[test]
fn one_trace_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    weft.post_fixture("/v1/traces", "crm_traces.json");
    weft.post_fixture("/v1/logs", "crm_logs.json");

    // The failing fixture trace: mobile → conductor → database all failed; the
    // database is where the error began.
    let (status, report) =
        weft.get_json("/api/v1/analysis/rca?trace_id=a1000000000000000000000000000001");
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report["error_origin"]["service"], "crm-database",
        "{report:#}"
    );
    assert_eq!(report["causes"][0]["service"], "crm-database");
    assert_eq!(report["causes"][0]["kind"], "error");

    for (query, status) in [
        ("trace_id=xyz", 400),
        ("trace_id=ffffffffffffffffffffffffffffffff", 404),
        ("trace_id=a1000000000000000000000000000001&service=x", 400),
        ("start=2026-11-25T11:00:00Z&end=2026-11-25T10:00:00Z", 400),
        ("slow_quantile=1.5", 400),
        ("sample=0", 400),
        ("settle=soon", 400),
        ("trace_id=a1000000000000000000000000000001&settle=5s", 400),
        ("bogus=1", 400),
    ] {
        let (got, body) = weft.get_json(&format!("/api/v1/analysis/rca?{query}"));
        assert_eq!(got, status, "{query}: {body}");
        assert!(body["error"].is_string(), "{query}: {body}");
    }

    // A window with no traffic has nothing to blame.
    let (status, report) =
        weft.get_json("/api/v1/analysis/rca?start=2020-01-01T00:00:00Z&end=2020-01-01T01:00:00Z");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["traces"], 0);
    assert_eq!(report["causes"], serde_json::json!([]));
    assert!(weft.stop().success());
}

/// Traces that ended moments ago may still miss spans that sit in an
/// exporter's batch: a window ending now leaves them out until they settle.
#[test]
fn traces_that_just_ended_wait_to_settle() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let mut just_now = scenario(
        "requests of the last three seconds",
        Injection {
            fault: Fault::Error { service: DATABASE },
            probability: 0.5,
            when: None,
        },
        DATABASE,
        "error",
    );
    just_now.requests = 20; // 100 ms apart: they ended within the last 3 s
    send(
        &reqwest::blocking::Client::new(),
        &weft.http_url(""),
        &generate(&just_now, now_ms - 3_000),
        1000,
    )
    .expect("weft takes the traffic");

    let (status, report) = weft.get_json("/api/v1/analysis/rca");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["traces"], 0, "{report:#}");
    assert_eq!(report["unsettled_traces"], 20, "{report:#}");
    assert_eq!(report["causes"], serde_json::json!([]));

    let (status, report) = weft.get_json("/api/v1/analysis/rca?settle=0s");
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["traces"], 20, "{report:#}");
    assert_eq!(report["unsettled_traces"], 0, "{report:#}");
    assert_eq!(first_cause(&report)["service"], DATABASE, "{report:#}");
    assert!(weft.stop().success());
}

#[test]
fn latency_shows_percentiles_a_heatmap_and_where_the_time_goes() {
    let dir = tempfile::tempdir().unwrap();
    let weft = Weft::start(dir.path(), &[]);
    let slow_salesforce = scenario(
        "salesforce slow for half of the requests",
        Injection {
            fault: Fault::Latency {
                service: SALESFORCE,
                extra_ms: 200,
            },
            probability: 0.5,
            when: None,
        },
        SALESFORCE,
        "latency",
    );
    let start = FIRST_WINDOW_MS;
    send(
        &reqwest::blocking::Client::new(),
        &weft.http_url(""),
        &generate(&slow_salesforce, start),
        1000,
    )
    .unwrap();
    let end = start + REQUESTS as u64 * 100;
    let (status, report) = weft.get_json(&format!(
        "/api/v1/analysis/latency?service=crm-mobile&start={}&end={}&step=30s",
        start * 1_000_000,
        end * 1_000_000
    ));
    assert_eq!(status, 200, "{report}");
    let series = report["series"].as_array().unwrap();
    assert_eq!(series.len(), 4, "120 s in 30 s steps");
    let counted: u64 = series.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(counted, REQUESTS as u64);
    assert_eq!(report["requests"], REQUESTS as u64);
    for point in series {
        let (p50, p99) = (
            point["p50_ns"].as_f64().unwrap(),
            point["p99_ns"].as_f64().unwrap(),
        );
        assert!(p50 <= p99, "{point}");
        assert!(p99 > 200e6, "half the requests waited 200 ms more: {point}");
    }
    let in_heatmap: u64 = report["heatmap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["count"].as_u64().unwrap())
        .sum();
    assert_eq!(in_heatmap, REQUESTS as u64);
    let buckets = report["buckets"].as_array().unwrap();
    assert!(
        buckets
            .windows(2)
            .all(|w| w[0]["upper_ns"] == w[1]["lower_ns"]),
        "contiguous buckets"
    );

    // The salesforce call is where most of the time goes.
    let breakdown = report["breakdown"].as_array().unwrap();
    assert_eq!(breakdown[0]["service"], SALESFORCE, "{report:#}");
    let shares: f64 = breakdown
        .iter()
        .map(|row| row["share"].as_f64().unwrap())
        .sum();
    assert!(
        (shares - 1.0).abs() < 1e-6,
        "the breakdown covers the whole request: {shares}"
    );
    assert_eq!(report["breakdown_sample"], 500);

    for query in [
        "",
        "service=crm-mobile&step=1ms",
        "service=crm-mobile&sample=0",
        "service=crm-mobile&bogus=1",
    ] {
        let (status, body) = weft.get_json(&format!("/api/v1/analysis/latency?{query}"));
        assert_eq!(status, 400, "{query}: {body}");
    }
    assert!(weft.stop().success());
}
