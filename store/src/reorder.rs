//! Reordering a batch's rows for the segment sort, nested columns included.
//!
//! Arrow's `take` moves a map or list column entry by entry: it expands every
//! row into one index per entry and copies each key and value string on its
//! own. A row's entries are contiguous at every level, though, so the rows of
//! a new order can be copied as ranges: one copy of a row's key bytes, one of
//! its value bytes, and its offsets shifted. With spans carrying 10–20 map
//! entries each (attributes, resource attributes, events), that is what most
//! of a flush's sort spends its time on. Rows are taken straight out of the
//! batches a flush or merge holds, so they need not be concatenated first.
//! Fixed-width leaves (integers, timestamps) are copied run by run too; the
//! rest (booleans) go to Arrow's `interleave`.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    make_array, Array, ArrayData, ArrayRef, AsArray, BooleanBufferBuilder, GenericListArray,
    MapArray, RecordBatch, StringArray, StructArray,
};
use arrow::buffer::{Buffer, MutableBuffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef};
use arrow::error::ArrowError;

/// Rows `range` of the source numbered `source`.
type Run = (usize, Range<usize>);

/// The rows of `batches` (all of `schema`) in `order`, where row `i` is the
/// `i`-th row of the batches one after another.
pub fn take_rows(
    schema: SchemaRef,
    batches: &[RecordBatch],
    order: &[u32],
) -> Result<RecordBatch, ArrowError> {
    if batches.is_empty() {
        return Ok(RecordBatch::new_empty(schema));
    }
    let runs = runs_of(batches, order);
    // Columns are independent, and a flush waits for all of them.
    let columns = (0..schema.fields().len())
        .map(|i| {
            let sources: Vec<&dyn Array> = batches.iter().map(|b| b.column(i).as_ref()).collect();
            let bytes = sources.iter().map(|a| a.get_array_memory_size()).sum();
            (bytes, sources)
        })
        .collect();
    let columns = crate::parallel::map_largest_first(columns, |sources| {
        take_runs(&sources, &runs, order.len())
    })
    .into_iter()
    .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema, columns)
}

/// `order` as ranges of consecutive rows of one batch, merged where one
/// continues another.
fn runs_of(batches: &[RecordBatch], order: &[u32]) -> Vec<Run> {
    let mut starts = Vec::with_capacity(batches.len());
    let mut total = 0;
    for batch in batches {
        starts.push(total);
        total += batch.num_rows();
    }
    let mut runs: Vec<Run> = Vec::new();
    for &row in order {
        let row = row as usize;
        let source = starts.partition_point(|&start| start <= row) - 1;
        let row = row - starts[source];
        match runs.last_mut() {
            Some((last, range)) if *last == source && range.end == row => range.end += 1,
            _ => runs.push((source, row..row + 1)),
        }
    }
    runs
}

/// The rows of `sources` in `runs`, one after another (`len` rows in all).
fn take_runs(sources: &[&dyn Array], runs: &[Run], len: usize) -> Result<ArrayRef, ArrowError> {
    Ok(match sources[0].data_type() {
        DataType::Utf8 => {
            let sources: Vec<&StringArray> = sources.iter().map(|a| a.as_string()).collect();
            Arc::new(take_string_runs(&sources, runs, len)?)
        }
        DataType::List(_) => {
            let sources: Vec<&GenericListArray<i32>> =
                sources.iter().map(|a| a.as_list()).collect();
            Arc::new(take_list_runs(&sources, runs, len)?)
        }
        DataType::Map(..) => {
            let sources: Vec<&MapArray> = sources.iter().map(|a| a.as_map()).collect();
            Arc::new(take_map_runs(&sources, runs, len)?)
        }
        DataType::Struct(_) => {
            let sources: Vec<&StructArray> = sources.iter().map(|a| a.as_struct()).collect();
            Arc::new(take_struct_runs(&sources, runs, len)?)
        }
        data_type if data_type.primitive_width().is_some() => {
            Arc::new(take_fixed_width_runs(sources, runs, len)?)
        }
        _ => {
            let indices: Vec<(usize, usize)> = runs
                .iter()
                .flat_map(|(source, range)| range.clone().map(|row| (*source, row)))
                .collect();
            arrow::compute::interleave(sources, &indices)?
        }
    })
}

fn take_nulls(sources: &[Option<&NullBuffer>], runs: &[Run], len: usize) -> Option<NullBuffer> {
    if sources.iter().flatten().all(|n| n.null_count() == 0) {
        return None;
    }
    let mut taken = BooleanBufferBuilder::new(len);
    for (source, range) in runs {
        match sources[*source] {
            Some(nulls) => {
                let validity = nulls.inner();
                taken.append_packed_range(
                    validity.offset() + range.start..validity.offset() + range.end,
                    validity.values(),
                );
            }
            None => taken.append_n(range.len(), true),
        }
    }
    Some(NullBuffer::new(taken.finish()))
}

/// New offsets for the rows of `runs` taken out of each source's `offsets`,
/// and the runs of children (entries, bytes) those rows cover.
fn take_offsets(
    offsets: &[&[i32]],
    runs: &[Run],
    len: usize,
) -> Result<(OffsetBuffer<i32>, Vec<Run>), ArrowError> {
    let mut taken = Vec::with_capacity(len + 1);
    let mut children: Vec<Run> = Vec::with_capacity(runs.len());
    taken.push(0i32);
    let mut end = 0usize;
    for (source, range) in runs {
        let offsets = offsets[*source];
        let child = offsets[range.start] as usize..offsets[range.end] as usize;
        // Rows taken more than once could outgrow 32-bit offsets.
        if end + child.len() > i32::MAX as usize {
            return Err(ArrowError::OffsetOverflowError(end + child.len()));
        }
        let shift = end as i32 - offsets[range.start];
        taken.extend(
            offsets[range.start + 1..=range.end]
                .iter()
                .map(|o| o + shift),
        );
        end += child.len();
        match children.last_mut() {
            Some((last, previous)) if *last == *source && previous.end == child.start => {
                previous.end = child.end
            }
            _ if child.is_empty() => {}
            _ => children.push((*source, child)),
        }
    }
    Ok((OffsetBuffer::new(ScalarBuffer::from(taken)), children))
}

fn take_string_runs(
    sources: &[&StringArray],
    runs: &[Run],
    len: usize,
) -> Result<StringArray, ArrowError> {
    let offsets: Vec<&[i32]> = sources.iter().map(|a| a.value_offsets()).collect();
    let (offsets, bytes) = take_offsets(&offsets, runs, len)?;
    let mut values = Vec::with_capacity(bytes.iter().map(|(_, r)| r.len()).sum());
    for (source, range) in bytes {
        values.extend_from_slice(&sources[source].values().as_slice()[range]);
    }
    let nulls: Vec<_> = sources.iter().map(|a| a.nulls()).collect();
    let (values, nulls) = (Buffer::from_vec(values), take_nulls(&nulls, runs, len));
    if cfg!(debug_assertions) {
        return StringArray::try_new(offsets, values, nulls);
    }
    // SAFETY: each value is a whole value of a source `StringArray`, copied
    // byte for byte, and `take_offsets` gave the new offsets exactly those
    // lengths, ascending from 0 to the length of `values`: valid offsets over
    // valid UTF-8, which is what validation would check again at some cost
    // per value (debug builds and the property test below do check).
    Ok(unsafe { StringArray::new_unchecked(offsets, values, nulls) })
}

/// The rows of `sources` in `runs` for a type of fixed width (integers,
/// timestamps): each run's values copied as one slice.
fn take_fixed_width_runs(
    sources: &[&dyn Array],
    runs: &[Run],
    len: usize,
) -> Result<ArrayRef, ArrowError> {
    let data_type = sources[0].data_type();
    let width = data_type
        .primitive_width()
        .expect("only called for types of fixed width");
    let data: Vec<ArrayData> = sources.iter().map(|a| a.to_data()).collect();
    let bytes: Vec<&[u8]> = data
        .iter()
        .map(|d| &d.buffers()[0].as_slice()[d.offset() * width..(d.offset() + d.len()) * width])
        .collect();
    // A `MutableBuffer`, unlike a `Vec<u8>`, is aligned for any native type.
    let mut values = MutableBuffer::with_capacity(len * width);
    for (source, range) in runs {
        values.extend_from_slice(&bytes[*source][range.start * width..range.end * width]);
    }
    let nulls: Vec<_> = sources.iter().map(|a| a.nulls()).collect();
    let data = ArrayData::builder(data_type.clone())
        .len(len)
        .add_buffer(values.into())
        .nulls(take_nulls(&nulls, runs, len))
        .build()?;
    Ok(make_array(data))
}

fn take_list_runs(
    sources: &[&GenericListArray<i32>],
    runs: &[Run],
    len: usize,
) -> Result<GenericListArray<i32>, ArrowError> {
    let offsets: Vec<&[i32]> = sources.iter().map(|a| a.value_offsets()).collect();
    let (offsets, entries) = take_offsets(&offsets, runs, len)?;
    let values: Vec<&dyn Array> = sources.iter().map(|a| a.values().as_ref()).collect();
    let values = take_runs(&values, &entries, offsets_len(&offsets))?;
    let DataType::List(field) = sources[0].data_type() else {
        unreachable!("a list array has a list type");
    };
    let nulls: Vec<_> = sources.iter().map(|a| a.nulls()).collect();
    GenericListArray::try_new(
        field.clone(),
        offsets,
        values,
        take_nulls(&nulls, runs, len),
    )
}

fn take_map_runs(sources: &[&MapArray], runs: &[Run], len: usize) -> Result<MapArray, ArrowError> {
    let offsets: Vec<&[i32]> = sources.iter().map(|a| a.value_offsets()).collect();
    let (offsets, entries) = take_offsets(&offsets, runs, len)?;
    let all_entries: Vec<&StructArray> = sources.iter().map(|a| a.entries()).collect();
    let taken = take_struct_runs(&all_entries, &entries, offsets_len(&offsets))?;
    let DataType::Map(field, ordered) = sources[0].data_type() else {
        unreachable!("a map array has a map type");
    };
    let nulls: Vec<_> = sources.iter().map(|a| a.nulls()).collect();
    MapArray::try_new(
        field.clone(),
        offsets,
        taken,
        take_nulls(&nulls, runs, len),
        *ordered,
    )
}

fn take_struct_runs(
    sources: &[&StructArray],
    runs: &[Run],
    len: usize,
) -> Result<StructArray, ArrowError> {
    let columns = (0..sources[0].num_columns())
        .map(|i| {
            let columns: Vec<&dyn Array> = sources.iter().map(|a| a.column(i).as_ref()).collect();
            take_runs(&columns, runs, len)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let nulls: Vec<_> = sources.iter().map(|a| a.nulls()).collect();
    StructArray::try_new(
        sources[0].fields().clone(),
        columns,
        take_nulls(&nulls, runs, len),
    )
}

/// How many children `offsets` covers.
fn offsets_len(offsets: &OffsetBuffer<i32>) -> usize {
    (offsets[offsets.len() - 1] - offsets[0]) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, MapBuilder, StringBuilder, UInt32Array};
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
        let numbers: Int64Array = (0..rows.len() as i64)
            .map(|i| (i % 3 != 0).then_some(i))
            .collect();
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
        RecordBatch::try_from_iter_with_nullable([
            ("text", Arc::new(text) as ArrayRef, true),
            ("number", Arc::new(numbers), true),
            ("map", Arc::new(map), false),
            ("events", Arc::new(events), true),
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
        fn takes_what_arrow_takes_of_the_batches_concatenated(
            batches in proptest::collection::vec(proptest::collection::vec(row(), 1..20), 1..4),
            swaps in proptest::collection::vec((any::<usize>(), any::<usize>()), 0..30),
            slice in any::<bool>(),
        ) {
            let batches: Vec<RecordBatch> = batches
                .iter()
                .map(|rows| {
                    let full = batch(rows);
                    // A sliced batch has offsets that do not start at zero.
                    if slice && full.num_rows() > 2 {
                        full.slice(1, full.num_rows() - 2)
                    } else {
                        full
                    }
                })
                .collect();
            let schema = batches[0].schema();
            let all = arrow::compute::concat_batches(&schema, &batches).unwrap();
            // Some rows moved, runs of consecutive rows elsewhere.
            let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
            for (i, j) in swaps {
                let n = order.len();
                order.swap(i % n, j % n);
            }
            let expected =
                arrow::compute::take_record_batch(&all, &UInt32Array::from(order.clone()))
                    .unwrap();
            let taken = take_rows(schema, &batches, &order).unwrap();
            prop_assert_eq!(taken, expected);
        }
    }

    #[test]
    fn consecutive_rows_of_one_batch_become_one_run() {
        let batches = [
            batch(&[row_of("a"), row_of("b"), row_of("c")]),
            batch(&[row_of("d"), row_of("e")]),
        ];
        assert_eq!(
            runs_of(&batches, &[1, 2, 3, 4, 0]),
            vec![(0, 1..3), (1, 0..2), (0, 0..1)]
        );
        assert_eq!(runs_of(&batches, &[]), Vec::<Run>::new());
    }

    fn row_of(name: &str) -> Row {
        (Some(name.to_string()), Vec::new(), Vec::new())
    }
}
