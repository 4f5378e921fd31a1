//! Compaction and retention: which segments to merge, which have expired, and the merge itself.
//!
//! A flush by timer at low traffic writes a small segment, and every segment
//! costs each query a footer read, a bloom-filter probe and an index search.
//! Compaction merges them the way size-tiered merge policies do (Lucene's,
//! Quickwit's): segments fall into levels by size, a factor of ten apart, and
//! [`MERGE_FACTOR`] segments of one level become one of the next. A row is so
//! rewritten once per level, a handful of times in its life, and segments
//! already as large as a flush makes them are left alone. A merge reads its
//! inputs back, sorts them for locality as a flush does and writes one segment
//! and its index; it holds at most `flush_bytes` of input in memory, as a
//! flush does.
//!
//! Retention drops whole segments whose newest row is older than the
//! retention period.
//!
//! Deciding is pure (this module); committing the result to the catalog and
//! deleting replaced files once no query can still read them is the table's
//! job (see `table.rs`).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::path::Path;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

use crate::catalog::SegmentEntry;
use crate::error::{IoContext, Result, StoreError};
use crate::table::Signal;

/// Segments of one level merged at once.
pub const MERGE_FACTOR: usize = 10;

/// Segments below this size (in memory) are all on the lowest level.
const LEVEL_BASE_BYTES: u64 = 1 << 20;

/// Catalogs written before `arrow_bytes` was recorded: Parquet expands about
/// this much when read back into Arrow.
const PARQUET_TO_ARROW: u64 = 8;

/// Bytes the segment takes once read back into Arrow.
fn memory_size(entry: &SegmentEntry) -> u64 {
    if entry.arrow_bytes > 0 {
        entry.arrow_bytes
    } else {
        entry.bytes.saturating_mul(PARQUET_TO_ARROW)
    }
}

fn level(memory_size: u64) -> u32 {
    (memory_size / LEVEL_BASE_BYTES).max(1).ilog10()
}

/// The segments to merge next, oldest first, or `None` when no level has
/// [`MERGE_FACTOR`] segments. Segments of at least half of `budget` (the
/// table's `flush_bytes`) are left alone, and the merge's inputs take at most
/// `budget` in memory. `skip` holds segments a merge failed to read.
pub fn plan_merge(
    segments: &[SegmentEntry],
    budget: u64,
    skip: &HashSet<String>,
) -> Option<Vec<SegmentEntry>> {
    let mut levels: BTreeMap<u32, Vec<&SegmentEntry>> = BTreeMap::new();
    for entry in segments {
        let size = memory_size(entry);
        if size.saturating_mul(2) >= budget || skip.contains(&entry.id) {
            continue;
        }
        levels.entry(level(size)).or_default().push(entry);
    }
    levels
        .into_values()
        .filter(|members| members.len() >= MERGE_FACTOR)
        .find_map(|members| {
            let mut total = 0;
            let chosen: Vec<SegmentEntry> = members
                .into_iter()
                .take(MERGE_FACTOR)
                .take_while(|entry| {
                    total += memory_size(entry);
                    total <= budget
                })
                .cloned()
                .collect();
            (chosen.len() >= 2).then_some(chosen)
        })
}

/// The segments whose every row is older than `retention` at `now_ns`.
pub fn expired(segments: &[SegmentEntry], retention: Duration, now_ns: i64) -> Vec<SegmentEntry> {
    let cutoff = now_ns.saturating_sub(retention.as_nanos().try_into().unwrap_or(i64::MAX));
    segments
        .iter()
        .filter(|entry| entry.max_time_ns < cutoff)
        .cloned()
        .collect()
}

/// Reads the Parquet files of `inputs` back, in full.
///
/// A segment written with another version's table schema cannot be merged
/// with this version's; that is an error naming the file, and the caller
/// leaves the segment as it is.
pub fn read_segments(
    signal: Signal,
    inputs: &[SegmentEntry],
    segment_path: impl Fn(&str) -> std::path::PathBuf,
) -> Result<Vec<RecordBatch>> {
    let schema = signal.schema();
    let mut batches = Vec::new();
    for entry in inputs {
        let path = segment_path(&entry.id);
        let reader = ParquetRecordBatchReaderBuilder::try_new(File::open(&path).at(&path)?)?
            .with_batch_size(64 * 1024)
            .build()?;
        for batch in reader {
            let batch = batch?;
            if batch.schema() != schema {
                return Err(unmergeable(&path));
            }
            batches.push(batch);
        }
    }
    Ok(batches)
}

fn unmergeable(path: &Path) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::other(
            "segment does not have this version's table schema and is not merged",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(id: usize, arrow_bytes: u64, max_time_ns: i64) -> SegmentEntry {
        SegmentEntry {
            id: id.to_string(),
            rows: 1,
            bytes: arrow_bytes / 8,
            arrow_bytes,
            min_time_ns: 0,
            max_time_ns,
            services: vec![],
        }
    }

    fn ids(segments: &[SegmentEntry]) -> Vec<String> {
        segments.iter().map(|s| s.id.clone()).collect()
    }

    const MIB: u64 = 1 << 20;

    #[test]
    fn ten_small_segments_of_one_level_merge_oldest_first() {
        let budget = 128 * MIB;
        let none = HashSet::new();
        let mut segments: Vec<_> = (0..9).map(|i| segment(i, MIB / 2, 0)).collect();
        assert_eq!(plan_merge(&segments, budget, &none), None);

        // Large segments and segments of the next level do not count.
        segments.push(segment(100, 70 * MIB, 0));
        segments.push(segment(101, 20 * MIB, 0));
        assert_eq!(plan_merge(&segments, budget, &none), None);

        segments.push(segment(9, 2 * MIB, 0));
        segments.push(segment(10, MIB, 0));
        let plan = plan_merge(&segments, budget, &none).unwrap();
        assert_eq!(
            ids(&plan),
            ids(&segments[..9])
                .into_iter()
                .chain(["9".into()])
                .collect::<Vec<_>>()
        );

        // A segment that could not be read is left out of the plan.
        let skip: HashSet<String> = ["3".to_string()].into();
        let plan = plan_merge(&segments, budget, &skip).unwrap();
        assert!(!ids(&plan).contains(&"3".to_string()));
        assert!(ids(&plan).contains(&"10".to_string()));
    }

    #[test]
    fn a_merge_takes_no_more_than_the_budget() {
        let segments: Vec<_> = (0..10).map(|i| segment(i, 40 * MIB, 0)).collect();
        let plan = plan_merge(&segments, 128 * MIB, &HashSet::new()).unwrap();
        assert_eq!(ids(&plan), ["0", "1", "2"]);
    }

    #[test]
    fn old_catalogs_without_memory_sizes_are_estimated_from_file_sizes() {
        let mut old = segment(0, 0, 0);
        old.bytes = 10 * MIB;
        assert_eq!(memory_size(&old), 80 * MIB);
        let segments = vec![old; 10];
        assert_eq!(plan_merge(&segments, 128 * MIB, &HashSet::new()), None);
    }

    #[test]
    fn a_segment_expires_when_its_newest_row_is_older_than_retention() {
        let hour = Duration::from_secs(3600);
        let now = 10 * hour.as_nanos() as i64;
        let segments = vec![
            segment(0, MIB, now - 3 * hour.as_nanos() as i64),
            segment(1, MIB, now - hour.as_nanos() as i64),
        ];
        assert_eq!(ids(&expired(&segments, 2 * hour, now)), ["0"]);
        assert!(expired(&segments, 4 * hour, now).is_empty());
    }
}
