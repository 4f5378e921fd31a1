//! Builders that start as large as their column was in the last batch this
//! thread converted.
//!
//! Started empty, an Arrow builder doubles its buffers as rows arrive: a
//! 500-span request grew each text column a dozen times, copying what it
//! held every time and touching fresh memory for each copy — an eighth of the
//! conversion's time. Requests on one connection tend to look alike, so the
//! last one's sizes (plus an eighth) are a good start; a request larger than
//! that still grows, and one much smaller reserves more than it uses once —
//! never more than twice its own size per column, so that a small request
//! after a huge one is not accounted as huge (the store's memory budget
//! counts capacity).

use std::cell::RefCell;
use std::collections::HashMap;
use std::ops::{Deref, DerefMut};

use arrow::array::{ArrayBuilder, StringArray, StringBuilder};

/// No column starts larger than this, whatever the last batch held.
const MAX_START_BYTES: usize = 64 << 20;

/// A builder's name: its table and column (`spans.attributes`), and which
/// part of the column it builds (`key`), or "".
type Column = (&'static str, &'static str);

#[derive(Clone, Copy, Default)]
struct Capacity {
    items: usize,
    bytes: usize,
}

thread_local! {
    static LAST: RefCell<HashMap<Column, Capacity>> = RefCell::new(HashMap::new());
}

fn last(column: Column) -> Capacity {
    let last = LAST.with(|last| last.borrow().get(&column).copied().unwrap_or_default());
    Capacity {
        items: (last.items + last.items / 8).min(MAX_START_BYTES / 4),
        bytes: (last.bytes + last.bytes / 8).min(MAX_START_BYTES),
    }
}

fn remember(column: Column, capacity: Capacity) {
    LAST.with(|last| last.borrow_mut().insert(column, capacity));
}

/// Where one request's builders start.
#[derive(Clone, Copy)]
pub(crate) struct Sizing {
    /// No column starts with more bytes of text than this, nor with more
    /// than a quarter as many items (a protobuf field takes two bytes at
    /// least, and each item costs four of offsets).
    limit: usize,
}

impl Sizing {
    /// For a request of `bytes` bytes of protobuf: a column of hex ids is
    /// twice their bytes; one that repeats the resource's attributes on
    /// every row may be larger still, and grows.
    pub(crate) fn for_request(bytes: usize) -> Self {
        Self {
            limit: bytes.saturating_mul(2).max(4096),
        }
    }

    /// How many items a builder of `column` should start with; [`note_items`]
    /// says how many the last one ended with.
    pub(crate) fn items(self, column: Column) -> usize {
        last(column).items.min(self.limit / 4)
    }

    /// The builder of a text column.
    pub(crate) fn text(self, column: Column) -> Text {
        let start = last(column);
        Text {
            column,
            builder: StringBuilder::with_capacity(
                start.items.min(self.limit / 4),
                start.bytes.min(self.limit),
            ),
        }
    }
}

pub(crate) fn note_items(column: Column, items: usize) {
    remember(column, Capacity { items, bytes: 0 });
}

/// A text column's builder, named so that the next batch's can start at
/// this one's size.
pub(crate) struct Text {
    column: Column,
    builder: StringBuilder,
}

impl Text {
    pub(crate) fn finish(&mut self) -> StringArray {
        let used = Capacity {
            items: self.builder.len(),
            bytes: self.builder.values_slice().len(),
        };
        remember(self.column, used);
        self.builder.finish()
    }
}

impl Deref for Text {
    type Target = StringBuilder;

    fn deref(&self) -> &StringBuilder {
        &self.builder
    }
}

impl DerefMut for Text {
    fn deref_mut(&mut self) -> &mut StringBuilder {
        &mut self.builder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_column_starts_at_the_size_it_last_had_plus_an_eighth() {
        use arrow::array::Array;
        // The buffers a builder holding one value hands over, by how it started.
        let sizing = Sizing::for_request(1 << 20);
        let one_value = |mut text: Text| {
            text.append_value("x");
            text.finish().get_array_memory_size()
        };
        let mut first = sizing.text(("test", "first"));
        for _ in 0..800 {
            first.append_value("0123456789");
        }
        assert_eq!(first.finish().len(), 800);
        let started_large = one_value(sizing.text(("test", "first")));
        assert!(
            started_large >= 900 * 4 + 9000,
            "{started_large} bytes: not 900 offsets and 9,000 bytes of text"
        );
        // Another column keeps its own.
        assert!(one_value(sizing.text(("test", "other"))) < 1000);
        note_items(("test", "rows"), 80);
        assert_eq!(sizing.items(("test", "rows")), 90);
        // A small request starts no larger than twice its size, whatever came before.
        let small = Sizing::for_request(2500);
        assert!(one_value(small.text(("test", "first"))) < 2 * 5000 + 1000);
        assert_eq!(small.items(("test", "rows")), 90);
    }
}
