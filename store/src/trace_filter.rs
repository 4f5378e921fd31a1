//! Which trace ids a segment holds: a split-block bloom filter (Parquet's
//! own `Sbbf`, 1% false positives) over the segment's distinct trace ids.
//!
//! A trace-by-id lookup cannot be pruned by time or service, and every
//! segment covers the whole id space, so without this every segment's
//! Parquet footer and per-row-group bloom filters would be read. A querier
//! keeps these small filters (about 1.2 bytes per trace) in memory and opens
//! only the segments that may hold the trace. The filter is written into the
//! segment's index directory (`index/<id>/trace_ids.bloom`), so it is
//! created, committed and deleted with the index.

use std::fs;
use std::path::Path;

use arrow::array::{AsArray, RecordBatch};
use parquet::bloom_filter::Sbbf;

use crate::error::{IoContext, Result};

/// The file name inside a segment's index directory.
pub const FILE_NAME: &str = "trace_ids.bloom";
const FALSE_POSITIVE_RATE: f64 = 0.01;

/// The trace ids one segment may hold.
#[derive(Debug)]
pub struct TraceFilter(Sbbf);

impl TraceFilter {
    /// False means the segment has no row of `trace_id` (lowercase hex, as stored).
    pub fn may_contain(&self, trace_id: &str) -> bool {
        self.0.check(trace_id)
    }

    /// Builds the filter of a batch's `trace_id` column.
    ///
    /// Inserting an id twice changes nothing, so the ids are not made
    /// distinct first (a hash set over every row of every flush): a sorted
    /// segment holds each trace's ids side by side, and only where one run
    /// ends is the next inserted. The filter is sized for one id per run,
    /// more than there are when a trace spans services, then folded to the
    /// size its fill needs for the same false-positive rate.
    pub fn of_batch(batch: &RecordBatch) -> Result<Self> {
        let ids = batch
            .column_by_name("trace_id")
            .expect("trace_id is in both schemas")
            .as_string::<i32>();
        let mut runs: Vec<&str> = Vec::new();
        for id in ids.iter().flatten() {
            if runs.last() != Some(&id) {
                runs.push(id);
            }
        }
        let mut filter = Sbbf::new_with_ndv_fpp(runs.len().max(1) as u64, FALSE_POSITIVE_RATE)?;
        for id in runs {
            filter.insert(id);
        }
        filter.fold_to_target_fpp(FALSE_POSITIVE_RATE);
        Ok(Self(filter))
    }

    /// Writes the filter into the (not yet committed) index directory `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(FILE_NAME);
        let mut bytes = Vec::new();
        self.0.write_bitset(&mut bytes)?;
        crate::catalog::write_synced(&path, &bytes)
    }

    /// Reads the filter of the segment whose index is `index_dir`; `None`
    /// for a segment written before filters existed.
    pub fn read(index_dir: &Path) -> Result<Option<Self>> {
        let path = index_dir.join(FILE_NAME);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(Self(Sbbf::new(&bytes)))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).at(&path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;

    fn batch_of<'a>(ids: impl IntoIterator<Item = Option<&'a str>>) -> RecordBatch {
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new(
                "trace_id",
                DataType::Utf8,
                true,
            )])),
            vec![Arc::new(StringArray::from_iter(ids))],
        )
        .unwrap()
    }

    fn false_positives_in_10000(filter: &TraceFilter) -> usize {
        (0..10_000u32)
            .filter(|i| filter.may_contain(&format!("{:032x}", u64::MAX - *i as u64)))
            .count()
    }

    #[test]
    fn a_filter_holds_every_id_of_its_segment_and_rejects_most_others() {
        let ids: Vec<String> = (0..5000u32).map(|i| format!("{:032x}", i * 7919)).collect();
        let batch = batch_of(ids.iter().map(|s| Some(s.as_str())).chain([None]));
        let dir = tempfile::tempdir().unwrap();
        TraceFilter::of_batch(&batch)
            .unwrap()
            .write(dir.path())
            .unwrap();
        let filter = TraceFilter::read(dir.path()).unwrap().unwrap();
        assert!(ids.iter().all(|id| filter.may_contain(id)));
        let false_positives = false_positives_in_10000(&filter);
        assert!(false_positives < 300, "{false_positives} of 10000");
        assert!(TraceFilter::read(&dir.path().join("none"))
            .unwrap()
            .is_none());
    }

    /// Spans sorted by service, then trace: each trace's ids in a run per
    /// service it crossed. The filter is sized for the runs, then folded to
    /// what the distinct ids need.
    #[test]
    fn ids_repeated_across_services_make_no_larger_a_filter() {
        let ids: Vec<String> = (0..5000u32).map(|i| format!("{:032x}", i * 7919)).collect();
        let sorted = (0..4).flat_map(|_service| {
            ids.iter()
                .flat_map(|id| std::iter::repeat_n(Some(id.as_str()), 3))
        });
        let filter = TraceFilter::of_batch(&batch_of(sorted)).unwrap();
        assert!(ids.iter().all(|id| filter.may_contain(id)));
        let distinct =
            TraceFilter::of_batch(&batch_of(ids.iter().map(|s| Some(s.as_str())))).unwrap();
        assert!(
            filter.0.num_blocks() <= distinct.0.num_blocks(),
            "{} blocks for 5,000 ids against {}",
            filter.0.num_blocks(),
            distinct.0.num_blocks()
        );
        let false_positives = false_positives_in_10000(&filter);
        assert!(false_positives < 300, "{false_positives} of 10000");
    }
}
