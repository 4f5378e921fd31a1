//! Root-cause accuracy and speed against a running weft.
//!
//! Each scenario of [`weft_bench_rca::suite`] is sent over OTLP/HTTP into its
//! own time window; then the window is analysed (`GET /api/v1/analysis/rca`)
//! and the answer compared with the injected cause: top-1 when the first
//! suspect is the faulty service with the right kind, top-3 when it is among
//! the first three. `--speed-traces N` then adds N traces spread over
//! `--speed-days` (7) in one more window and times the root-cause, trend and
//! latency analyses over all of it.
//!
//! ```sh
//! weft serve --data-dir /tmp/rca-bench &
//! cargo run --release -p weft-bench-rca -- --api http://127.0.0.1:16686 --otlp http://127.0.0.1:4318
//! ```

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde_json::Value;
use weft_bench_rca::{generate_every, send, suite, Fault, Injection, Scenario, DATABASE};

#[derive(Parser)]
struct Args {
    /// weft's query API.
    #[arg(long, default_value = "http://127.0.0.1:16686")]
    api: String,
    /// weft's OTLP/HTTP receiver.
    #[arg(long, default_value = "http://127.0.0.1:4318")]
    otlp: String,
    /// After the accuracy suite, time the analyses over this many traces (0: skip).
    #[arg(long, default_value_t = 0)]
    speed_traces: usize,
    /// The days the `--speed-traces` are spread over.
    #[arg(long, default_value_t = 7)]
    speed_days: u64,
    /// Skip the accuracy suite (with `--speed-traces`: time only).
    #[arg(long)]
    speed_only: bool,
}

/// Scenario windows start here, one after another, so they never overlap.
const FIRST_WINDOW_MS: u64 = 1_763_596_800_000; // 2025-11-20T00:00:00Z

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    let mut start_ms = FIRST_WINDOW_MS;
    if !args.speed_only {
        start_ms = accuracy(&client, &args, start_ms)?;
    }
    if args.speed_traces > 0 {
        speed(&client, &args, start_ms)?;
    }
    Ok(())
}

/// Runs the accuracy suite, its windows one after another from `start_ms`;
/// returns where the next window may start.
fn accuracy(
    client: &reqwest::blocking::Client,
    args: &Args,
    mut start_ms: u64,
) -> anyhow::Result<u64> {
    let scenarios = suite();
    let (mut top1, mut top3, mut attribute_hits, mut attribute_cases) = (0, 0, 0, 0);
    let mut timings = Vec::new();
    println!("| scenario | first suspect | rank of the cause | attribute named | answer |");
    println!("|---|---|---|---|---|");
    for scenario in &scenarios {
        let (report, elapsed) = run(client, args, scenario, start_ms)?;
        start_ms += scenario.requests as u64 * 100 + 60_000;
        timings.push(elapsed);
        let causes = report["causes"].as_array().cloned().unwrap_or_default();
        let rank = causes.iter().position(|c| {
            c["service"] == scenario.expected_service && c["kind"] == scenario.expected_kind
        });
        top1 += usize::from(rank == Some(0));
        top3 += usize::from(rank.is_some_and(|r| r < 3));
        let attribute = scenario.expected_attribute.map(|(key, value)| {
            attribute_cases += 1;
            let named = causes.first().is_some_and(|c| {
                c["evidence"]["attributes"]
                    .as_array()
                    .and_then(|a| a.first())
                    .is_some_and(|a| a["key"] == key && a["value"] == value)
            });
            attribute_hits += usize::from(named);
            named
        });
        let first = causes.first().map_or("none".to_string(), |c| {
            format!(
                "{} {} ({})",
                c["service"].as_str().unwrap_or("?"),
                c["kind"].as_str().unwrap_or("?"),
                c["operation"].as_str().unwrap_or("?")
            )
        });
        println!(
            "| {} | {first} | {} | {} | {} ms |",
            scenario.name,
            rank.map_or("not found".to_string(), |r| (r + 1).to_string()),
            attribute.map_or("–", |named| if named { "yes" } else { "no" }),
            elapsed.as_millis()
        );
    }
    let n = scenarios.len() as f64;
    println!();
    println!(
        "top-1 {:.2} ({top1}/{}), top-3 {:.2} ({top3}/{}), attribute named first {attribute_hits}/{attribute_cases}",
        top1 as f64 / n,
        scenarios.len(),
        top3 as f64 / n,
        scenarios.len()
    );
    timings.sort();
    println!(
        "analysis time per window of 3,000 traces: median {} ms, max {} ms",
        timings[timings.len() / 2].as_millis(),
        timings.last().map_or(0, Duration::as_millis)
    );

    Ok(start_ms)
}

/// Loads `--speed-traces` traces spread over `--speed-days` and times the
/// window analysis over all of them and the trend analysis of each metric
/// over the whole span, three runs each (the first reads a cold cache).
fn speed(client: &reqwest::blocking::Client, args: &Args, start_ms: u64) -> anyhow::Result<()> {
    let scenario = Scenario {
        name: format!("speed: {} traces", args.speed_traces),
        requests: args.speed_traces,
        injection: Injection {
            fault: Fault::Latency {
                service: DATABASE,
                extra_ms: 300,
            },
            probability: 0.1,
            when: None,
        },
        seed: 99,
        expected_service: DATABASE,
        expected_kind: "latency",
        expected_attribute: None,
    };
    let window_ms = args.speed_days * 86_400_000;
    let every_ms = window_ms as f64 / args.speed_traces as f64;
    let loading = Instant::now();
    load(client, args, &scenario, start_ms, every_ms)?;
    println!(
        "loaded {} traces over {} days in {:.0} s",
        args.speed_traces,
        args.speed_days,
        loading.elapsed().as_secs_f64()
    );
    let (start_ns, end_ns) = (
        start_ms * 1_000_000,
        (start_ms + window_ms + 10_000) * 1_000_000,
    );
    let timed = |what: &str, path: String| -> anyhow::Result<Value> {
        let mut runs = Vec::new();
        let mut answer = Value::Null;
        for _ in 0..3 {
            let (body, elapsed) = get(client, &format!("{}{path}", args.api))?;
            runs.push(format!("{} ms", elapsed.as_millis()));
            answer = body;
        }
        println!("| {what} | {} |", runs.join(" / "));
        Ok(answer)
    };
    println!();
    println!("| analysis over the whole window | runs (first: cold cache) |");
    println!("|---|---|");
    let report = timed(
        &format!("root cause, window of {} traces", args.speed_traces),
        format!("/api/v1/analysis/rca?start={start_ns}&end={end_ns}"),
    )?;
    for metric in ["rate", "errors", "p95"] {
        timed(
            &format!("trends of crm-mobile, metric={metric}, {} days", args.speed_days),
            format!(
                "/api/v1/analysis/trends?service=crm-mobile&metric={metric}&start={start_ns}&end={end_ns}"
            ),
        )?;
    }
    timed(
        &format!("latency of crm-mobile, {} days", args.speed_days),
        format!("/api/v1/analysis/latency?service=crm-mobile&start={start_ns}&end={end_ns}"),
    )?;
    println!();
    println!(
        "root cause: {} traces in the window; first suspect {} {}",
        report["traces"], report["causes"][0]["service"], report["causes"][0]["kind"]
    );
    Ok(())
}

/// Sends one scenario into its window and analyses the window.
fn run(
    client: &reqwest::blocking::Client,
    args: &Args,
    scenario: &Scenario,
    start_ms: u64,
) -> anyhow::Result<(Value, Duration)> {
    load(client, args, scenario, start_ms, 100.0)?;
    let end_ms = start_ms + scenario.requests as u64 * 100 + 10_000;
    get(
        client,
        &format!(
            "{}/api/v1/analysis/rca?start={}&end={}",
            args.api,
            start_ms * 1_000_000,
            end_ms * 1_000_000
        ),
    )
}

/// Sends a scenario's requests, `every_ms` apart from `start_ms`.
fn load(
    client: &reqwest::blocking::Client,
    args: &Args,
    scenario: &Scenario,
    start_ms: u64,
    every_ms: f64,
) -> anyhow::Result<()> {
    // In chunks, so a million traces never sit in memory at once.
    const CHUNK: usize = 20_000;
    let mut sent = 0;
    while sent < scenario.requests {
        let part = Scenario {
            requests: CHUNK.min(scenario.requests - sent),
            seed: scenario.seed.wrapping_add(sent as u64),
            ..scenario.clone()
        };
        let workload = generate_every(&part, start_ms + (sent as f64 * every_ms) as u64, every_ms);
        send(client, &args.otlp, &workload, 2000)
            .with_context(|| format!("sending {}", scenario.name))?;
        sent += part.requests;
    }
    Ok(())
}

/// A successful JSON answer and how long it took.
fn get(client: &reqwest::blocking::Client, url: &str) -> anyhow::Result<(Value, Duration)> {
    let started = Instant::now();
    let response = client.get(url).send()?;
    let elapsed = started.elapsed();
    let status = response.status();
    let body: Value = response.json()?;
    anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
    Ok((body, elapsed))
}
