//! Where the time of ingest goes: each stage of the write path timed over the
//! same spans, in µs of wall time per span. Stages run one after another,
//! each as the store runs it: conversion, WAL encoding and the index on one
//! thread, the sort's and the Parquet write's columns on every core. The
//! whole pipeline runs several times and each stage reports its fastest run,
//! the one least disturbed by whatever else shares the machine.

use std::time::Instant;

use weft_store::convert::spans_from_protobuf;
use weft_store::{index, segment, wal, Signal};

use crate::workload::Payload;

const RUNS: usize = 3;

pub fn run(payloads: &[Payload]) -> anyhow::Result<()> {
    let spans: u64 = payloads.iter().map(|p| p.records).sum();
    let mut fastest: Vec<(&'static str, f64)> = Vec::new();
    let mut sizes = (0, 0);
    for _ in 0..RUNS {
        let (stages, wal_bytes, parquet_bytes) = time_stages(payloads, spans)?;
        sizes = (wal_bytes, parquet_bytes);
        if fastest.is_empty() {
            fastest = stages;
        } else {
            for ((_, best), (_, us)) in fastest.iter_mut().zip(stages) {
                *best = best.min(us);
            }
        }
    }
    let total: f64 = fastest.iter().map(|(_, us)| us).sum();
    println!("| stage ({spans} spans, wall time, fastest of {RUNS}) | µs/span | share |");
    println!("|---|---|---|");
    for (stage, us) in &fastest {
        println!("| {stage} | {us:.2} | {:.0}% |", us / total * 100.0);
    }
    println!("| **total** | **{total:.2}** | 100% |");
    println!();
    println!(
        "WAL bytes per span: {:.0}; Parquet bytes per span: {:.1}",
        sizes.0 as f64 / spans as f64,
        sizes.1 as f64 / spans as f64
    );
    Ok(())
}

type Stages = Vec<(&'static str, f64)>;

/// Runs the write path once; returns µs/span per stage, WAL bytes and Parquet bytes.
fn time_stages(payloads: &[Payload], spans: u64) -> anyhow::Result<(Stages, usize, u64)> {
    let per_span = |started: Instant| started.elapsed().as_secs_f64() * 1e6 / spans as f64;
    let mut stages = Vec::new();

    let started = Instant::now();
    let batches = payloads
        .iter()
        .map(|p| spans_from_protobuf(&p.bytes).map(|converted| converted.batch))
        .collect::<Result<Vec<_>, _>>()?;
    stages.push(("OTLP protobuf → Arrow, read in place", per_span(started)));

    let started = Instant::now();
    let mut wal_bytes = 0;
    let mut record = Vec::new();
    for payload in payloads {
        record.clear();
        wal::append_request_record(&payload.bytes, &mut record)?;
        wal_bytes += record.len();
    }
    stages.push((
        "WAL record (the request's protobuf, checksummed)",
        per_span(started),
    ));

    let started = Instant::now();
    let sorted = segment::sort_for_locality(Signal::Spans, &batches)?;
    stages.push((
        "sort for locality (row format, rows moved as runs, columns on every core)",
        per_span(started),
    ));

    let dir = tempfile::tempdir()?;
    let started = Instant::now();
    let written = segment::write_segment(Signal::Spans, &sorted, &dir.path().join("s.parquet"))?;
    stages.push((
        "Parquet write (zstd, stats, bloom filters, fsync; columns on every core)",
        per_span(started),
    ));

    let started = Instant::now();
    index::build_index(Signal::Spans, &sorted, &dir.path().join("index"))?;
    stages.push(("full-text index (tantivy)", per_span(started)));

    Ok((stages, wal_bytes, written.bytes))
}
