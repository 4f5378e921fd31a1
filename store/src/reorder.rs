//! Reordering a batch's rows for the segment sort, nested columns included.
//!
//! Arrow's `take` moves a map or list column entry by entry: it expands every
//! row into one index per entry and copies each key and value string on its
//! own. A row's entries are contiguous at every level, though, so the rows of
//! a new order can be copied as ranges: one copy of a row's key bytes, one of
//! its value bytes, and its offsets shifted. With spans carrying 10–20 map
//! entries each (attributes, resource attributes, events), that is what most
//! of a flush's sort spends its time on. Leaf columns other than strings go
//! to `take`, which gathers fixed-width values as fast as anything.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBufferBuilder, GenericListArray, MapArray, RecordBatch,
    StringArray, StructArray, UInt32Array,
};
use arrow::buffer::{Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::DataType;
use arrow::error::ArrowError;

/// The rows of `batch` in `order` (every index below `batch.num_rows()`).
pub fn take_rows(batch: &RecordBatch, order: &[u32]) -> Result<RecordBatch, ArrowError> {
    let runs = runs_of(order);
    let columns = batch
        .columns()
        .iter()
        .map(|column| take_runs(column.as_ref(), &runs, order.len()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(batch.schema(), columns)
}

/// `order` as ranges of consecutive rows, merged where one continues another.
fn runs_of(order: &[u32]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for &row in order {
        let row = row as usize;
        match runs.last_mut() {
            Some(last) if last.end == row => last.end += 1,
            _ => runs.push(row..row + 1),
        }
    }
    runs
}

/// The rows of `array` in `runs`, one after another (`len` rows in all).
fn take_runs(array: &dyn Array, runs: &[Range<usize>], len: usize) -> Result<ArrayRef, ArrowError> {
    Ok(match array.data_type() {
        DataType::Utf8 => Arc::new(take_string_runs(array.as_string::<i32>(), runs, len)?),
        DataType::List(_) => Arc::new(take_list_runs(array.as_list::<i32>(), runs, len)?),
        DataType::Map(..) => Arc::new(take_map_runs(array.as_map(), runs, len)?),
        DataType::Struct(_) => Arc::new(take_struct_runs(array.as_struct(), runs, len)?),
        _ => {
            let indices: UInt32Array = runs
                .iter()
                .flat_map(|run| run.clone().map(|row| row as u32))
                .collect();
            arrow::compute::take(array, &indices, None)?
        }
    })
}

fn take_nulls(nulls: Option<&NullBuffer>, runs: &[Range<usize>], len: usize) -> Option<NullBuffer> {
    let nulls = nulls.filter(|n| n.null_count() > 0)?;
    let validity = nulls.inner();
    let mut taken = BooleanBufferBuilder::new(len);
    for run in runs {
        taken.append_packed_range(
            validity.offset() + run.start..validity.offset() + run.end,
            validity.values(),
        );
    }
    Some(NullBuffer::new(taken.finish()))
}

/// New offsets for the rows of `runs` taken out of `offsets`, and the ranges
/// of the children (entries, bytes) those rows cover.
fn take_offsets(
    offsets: &[i32],
    runs: &[Range<usize>],
    len: usize,
) -> Result<(OffsetBuffer<i32>, Vec<Range<usize>>), ArrowError> {
    let mut taken = Vec::with_capacity(len + 1);
    let mut children: Vec<Range<usize>> = Vec::with_capacity(runs.len());
    taken.push(0i32);
    let mut end = 0usize;
    for run in runs {
        let child = offsets[run.start] as usize..offsets[run.end] as usize;
        // Rows taken more than once could outgrow 32-bit offsets.
        if end + child.len() > i32::MAX as usize {
            return Err(ArrowError::OffsetOverflowError(end + child.len()));
        }
        let shift = end as i32 - offsets[run.start];
        taken.extend(offsets[run.start + 1..=run.end].iter().map(|o| o + shift));
        end += child.len();
        match children.last_mut() {
            Some(last) if last.end == child.start => last.end = child.end,
            _ if child.is_empty() => {}
            _ => children.push(child),
        }
    }
    Ok((OffsetBuffer::new(ScalarBuffer::from(taken)), children))
}

fn take_string_runs(
    array: &StringArray,
    runs: &[Range<usize>],
    len: usize,
) -> Result<StringArray, ArrowError> {
    let (offsets, bytes) = take_offsets(array.value_offsets(), runs, len)?;
    let source = array.values().as_slice();
    let mut values = Vec::with_capacity(bytes.iter().map(|r| r.len()).sum());
    for range in bytes {
        values.extend_from_slice(&source[range]);
    }
    StringArray::try_new(
        offsets,
        Buffer::from_vec(values),
        take_nulls(array.nulls(), runs, len),
    )
}

fn take_list_runs(
    array: &GenericListArray<i32>,
    runs: &[Range<usize>],
    len: usize,
) -> Result<GenericListArray<i32>, ArrowError> {
    let (offsets, entries) = take_offsets(array.value_offsets(), runs, len)?;
    let values = take_runs(array.values().as_ref(), &entries, offsets_len(&offsets))?;
    let DataType::List(field) = array.data_type() else {
        unreachable!("a list array has a list type");
    };
    GenericListArray::try_new(
        field.clone(),
        offsets,
        values,
        take_nulls(array.nulls(), runs, len),
    )
}

fn take_map_runs(
    array: &MapArray,
    runs: &[Range<usize>],
    len: usize,
) -> Result<MapArray, ArrowError> {
    let (offsets, entries) = take_offsets(array.value_offsets(), runs, len)?;
    let taken = take_struct_runs(array.entries(), &entries, offsets_len(&offsets))?;
    let DataType::Map(field, ordered) = array.data_type() else {
        unreachable!("a map array has a map type");
    };
    MapArray::try_new(
        field.clone(),
        offsets,
        taken,
        take_nulls(array.nulls(), runs, len),
        *ordered,
    )
}

fn take_struct_runs(
    array: &StructArray,
    runs: &[Range<usize>],
    len: usize,
) -> Result<StructArray, ArrowError> {
    let columns = array
        .columns()
        .iter()
        .map(|column| take_runs(column.as_ref(), runs, len))
        .collect::<Result<Vec<_>, _>>()?;
    StructArray::try_new(
        array.fields().clone(),
        columns,
        take_nulls(array.nulls(), runs, len),
    )
}

/// How many children `offsets` covers.
fn offsets_len(offsets: &OffsetBuffer<i32>) -> usize {
    (offsets[offsets.len() - 1] - offsets[0]) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, StringBuilder};
    use arrow::datatypes::{Field, Fields};
    use proptest::prelude::*;

    type Entries = Vec<(String, Option<String>)>;
    /// A row: a nullable text, a map, and a list of named maps (null when the
    /// text is, and then empty).
    type Row = (Option<String>, Entries, Vec<Entries>);

    fn map_of(maps: &[&Entries]) -> MapArray {
        let mut map = MapBuilder::new(None, StringBuilder::new(), StringBuilder::new());
        for entries in maps {
            for (key, value) in *entries {
                map.keys().append_value(key);
                map.values().append_option(value.clone());
            }
            map.append(true).unwrap();
        }
        map.finish()
    }

    /// A batch with every kind of column the segment sort meets — strings,
    /// numbers, maps, lists of structs holding maps — with nulls.
    fn batch(rows: &[Row]) -> RecordBatch {
        let text: StringArray = rows.iter().map(|r| r.0.clone()).collect();
        let numbers: Int64Array = (0..rows.len() as i64).map(Some).collect();
        let map = map_of(&rows.iter().map(|r| &r.1).collect::<Vec<_>>());
        let items: Vec<(&Option<String>, &Entries)> = rows
            .iter()
            .flat_map(|(name, _, lists)| lists.iter().map(move |entries| (name, entries)))
            .collect();
        let item_names: StringArray = items.iter().map(|(name, _)| (*name).clone()).collect();
        let item_maps = map_of(&items.iter().map(|(_, e)| *e).collect::<Vec<_>>());
        let item_fields = Fields::from(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("attributes", item_maps.data_type().clone(), false),
        ]);
        let item = StructArray::new(
            item_fields.clone(),
            vec![Arc::new(item_names) as ArrayRef, Arc::new(item_maps)],
            None,
        );
        let events = GenericListArray::<i32>::new(
            Arc::new(Field::new("item", DataType::Struct(item_fields), false)),
            OffsetBuffer::from_lengths(rows.iter().map(|r| r.2.len())),
            Arc::new(item),
            Some(NullBuffer::from_iter(rows.iter().map(|r| r.0.is_some()))),
        );
        RecordBatch::try_from_iter([
            ("text", Arc::new(text) as ArrayRef),
            ("number", Arc::new(numbers)),
            ("map", Arc::new(map)),
            ("events", Arc::new(events)),
        ])
        .unwrap()
    }

    fn row() -> impl Strategy<Value = Row> {
        let entry = ("[a-c]{0,3}", proptest::option::of("[x-z]{0,4}"));
        (
            proptest::option::of("[a-z]{0,6}"),
            proptest::collection::vec(entry.clone(), 0..4),
            proptest::collection::vec(proptest::collection::vec(entry, 0..3), 0..3),
        )
            .prop_map(|(name, map, lists)| {
                let lists = if name.is_some() { lists } else { Vec::new() };
                (name, map, lists)
            })
    }

    proptest! {
        #[test]
        fn takes_what_arrow_takes(
            rows in proptest::collection::vec(row(), 1..40),
            swaps in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..20),
            slice in any::<bool>(),
        ) {
            let full = batch(&rows);
            // A sliced batch has offsets that do not start at zero.
            let batch = if slice && full.num_rows() > 2 {
                full.slice(1, full.num_rows() - 2)
            } else {
                full
            };
            // Some rows moved, runs of consecutive rows elsewhere.
            let mut order: Vec<u32> = (0..batch.num_rows() as u32).collect();
            for (i, j) in swaps {
                let n = order.len();
                order.swap(i % n, j % n);
            }
            let expected =
                arrow::compute::take_record_batch(&batch, &UInt32Array::from(order.clone()))
                    .unwrap();
            let taken = take_rows(&batch, &order).unwrap();
            prop_assert_eq!(taken, expected);
        }
    }

    #[test]
    fn consecutive_rows_become_one_run() {
        assert_eq!(runs_of(&[3, 4, 5, 0, 1, 7]), vec![3..6, 0..2, 7..8]);
        assert_eq!(runs_of(&[]), Vec::<Range<usize>>::new());
    }
}
