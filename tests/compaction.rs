//! Compaction and retention on a running weft: small segments are merged and
//! expired ones dropped while queries run, and no query ever sees a row twice
//! or misses one.

mod support;

use std::time::Duration;

use support::*;

fn spans_metric(weft: &Weft, name: &str) -> f64 {
    weft.metric(&format!("{name}{{table=\"spans\"}}"))
}

/// What the queries that must stay exact answer: every span, the distinct
/// span ids, a full-text search, and one trace by id.
fn answers(weft: &Weft) -> (i64, i64, i64, usize) {
    let rows = weft.sql_rows(
        "SELECT count(*), count(DISTINCT span_id), \
         count(*) FILTER (WHERE text_match(name, 'op-3')) FROM spans",
    );
    let count = |i: usize| rows[0][i].as_i64().unwrap();
    let (status, trace) = weft.get_json("/api/v1/traces/0000000000000005000000000000feed");
    assert_eq!(status, 200, "{trace}");
    let trace_spans = trace["spans"].as_array().unwrap().len();
    (count(0), count(1), count(2), trace_spans)
}

#[test]
fn small_segments_merge_and_expired_ones_go_while_every_answer_stays_exact() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--flush-interval", "50ms", "--compaction-interval", "100ms"];
    args.extend([
        "--retention",
        "7d",
        "--query-timeout",
        "5s",
        "--deletion-grace",
        "5s",
    ]);
    let weft = Weft::start(dir.path(), &args);

    // Twelve flushes of recent spans, and one of spans ten days old.
    for i in 0..12u64 {
        weft.post_spans(&spans_aged(
            "crm-conductor",
            i * 10..i * 10 + 10,
            Duration::from_secs(60),
        ));
        eventually("the flush", || {
            spans_metric(&weft, "weft_store_segments_written_total") > i as f64
        });
    }
    weft.post_spans(&spans_aged(
        "crm-conductor",
        1000..1010,
        Duration::from_secs(10 * 86_400),
    ));

    let op_3 = |ids: std::ops::Range<u64>| ids.filter(|id| id % 7 == 3).count() as i64;
    let (recent_op_3, old_op_3) = (op_3(0..120), op_3(1000..1010));
    eventually("a merge and the expiry", || {
        let (count, distinct, searched, trace_spans) = answers(&weft);
        assert_eq!(count, distinct, "a span was seen twice");
        assert!(count == 120 || count == 130, "{count} spans");
        let old = if count == 130 { old_op_3 } else { 0 };
        assert_eq!(searched, recent_op_3 + old);
        assert_eq!(trace_spans, 10);
        count == 120 && spans_metric(&weft, "weft_store_compactions_total") >= 1.0
    });
    assert_eq!(
        spans_metric(&weft, "weft_store_segments_expired_total"),
        1.0
    );
    // Ten of the twelve recent segments became one.
    assert_eq!(spans_metric(&weft, "weft_store_segments"), 3.0);
    assert_eq!(
        spans_metric(&weft, "weft_store_segments_merged_total"),
        10.0
    );

    // Once their grace is over, replaced files leave the directory, which
    // any Parquet reader then sees exactly as the catalog does.
    let segment_files = || {
        std::fs::read_dir(dir.path().join("spans/segments"))
            .unwrap()
            .count()
    };
    eventually("the replaced files' deletion", || segment_files() == 3);
    let mut ids = stored_span_ids(dir.path());
    ids.sort_unstable();
    assert_eq!(ids, (0..120).collect::<Vec<_>>());

    // The merged table survives a restart as it is.
    assert!(weft.stop().success());
    let weft = Weft::start(dir.path(), &["--retention", "7d"]);
    assert_eq!(answers(&weft), (120, 120, recent_op_3, 10));
    assert!(weft.stop().success());
}
