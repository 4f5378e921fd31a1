//! Builders that start as large as their column was in the last batch this
//! thread converted.
//!
//! Started empty, an Arrow builder doubles its buffers as rows arrive: a
//! 500-span request grew each text column a dozen times, copying what it
//! held every time and touching fresh memory for each copy — an eighth of the
//! conversion's time. Requests on one connection tend to look alike, so the
//! last one's sizes (plus an eighth) are a good start; a request larger than
//! that still grows, and one much smaller reserves more than it uses once.

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

/// How many items a builder of `column` should start with; [`note_items`]
/// says how many the last one ended with.
pub(crate) fn items(column: Column) -> usize {
    last(column).items
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
    pub(crate) fn new(column: Column) -> Self {
        let start = last(column);
        Self {
            column,
            builder: StringBuilder::with_capacity(start.items, start.bytes),
        }
    }

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
        let one_value = |mut text: Text| {
            text.append_value("x");
            text.finish().get_array_memory_size()
        };
        let mut first = Text::new(("test", "first"));
        for _ in 0..800 {
            first.append_value("0123456789");
        }
        assert_eq!(first.finish().len(), 800);
        let started_large = one_value(Text::new(("test", "first")));
        assert!(
            started_large >= 900 * 4 + 9000,
            "{started_large} bytes: not 900 offsets and 9,000 bytes of text"
        );
        // Another column keeps its own.
        assert!(one_value(Text::new(("test", "other"))) < 1000);
        note_items(("test", "rows"), 80);
        assert_eq!(items(("test", "rows")), 90);
    }
}
