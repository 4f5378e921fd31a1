//! Reading a running writer's unflushed rows from another process.
//!
//! Over an object store a querier on another machine sees a collector's
//! segments once a flush commits them; what the collector acknowledged since
//! is only in its memory and its WAL. So each collector serves its tables'
//! tails (Arrow Flight on its OTLP/gRPC port, in `collector/`), its catalogs
//! name where ([`crate::catalog::Catalog::live`]), and a [`crate::StoreReader`]
//! asks every live writer on each snapshot through a [`LiveReader`] (the
//! Flight client in `query/`). This module is what both sides share.
//!
//! One answer carries the writer's segments *and* its unflushed batches,
//! taken together under the table's lock, and the reader uses those segments
//! instead of the writer's catalog in the bucket: whatever flushes and merges
//! happen around the request, no row is missed or counted twice.
//!
//! The unflushed batches are numbered from the writer's start (its `run`) and
//! never renumbered, so a reader keeps a [`TailCopy`] per writer and asks only
//! for the batches after the last one it holds; the answer says from which
//! number on the writer still holds them, and the copy drops the rest.

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::catalog::SegmentEntry;
use crate::error::{Result, StoreError};
use crate::table::Signal;

/// What a reader asks a writer for: the Flight ticket, as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveTicket {
    /// `spans` or `logs`.
    pub table: String,
    /// Whose table; the writer checks it against the caller's credentials.
    pub tenant: String,
    /// The writer run the reader's copy comes from, if it has one.
    #[serde(default)]
    pub run: Option<String>,
    /// The number of the first batch the reader does not hold yet.
    #[serde(default)]
    pub next: u64,
}

impl LiveTicket {
    pub fn signal(&self) -> Result<Signal> {
        [Signal::Spans, Signal::Logs]
            .into_iter()
            .find(|signal| signal.table_name() == self.table)
            .ok_or_else(|| StoreError::Live(format!("no table {:?}", self.table)))
    }
}

/// What comes with the batches: the Flight stream's first `app_metadata`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LiveHeader {
    /// Changes whenever the writer restarts (and renumbers its batches).
    pub run: String,
    /// The number of the writer's oldest unflushed batch: every batch before
    /// it is in `segments`.
    pub first: u64,
    /// The number of the first batch sent.
    pub from: u64,
    /// The writer's segments as of these batches.
    pub segments: Vec<SegmentEntry>,
}

/// A writer's table as it answered: its segments and the batches sent.
#[derive(Debug, Clone)]
pub struct LiveTail {
    pub header: LiveHeader,
    pub batches: Vec<RecordBatch>,
}

/// Asks a running writer for its table as it is now; in `query/`, over
/// Arrow Flight.
pub trait LiveReader: Send + Sync {
    /// The answer of the writer serving at `url` (from its catalog) to `ticket`.
    fn read(&self, url: &str, ticket: &LiveTicket) -> Result<LiveTail>;
}

/// A reader's copy of one writer's unflushed batches of one table.
#[derive(Debug, Default)]
pub struct TailCopy {
    run: Option<String>,
    /// The number of `batches[0]`.
    first: u64,
    batches: Vec<RecordBatch>,
}

impl TailCopy {
    /// The ticket asking for what this copy lacks.
    pub fn ticket(&self, signal: Signal, tenant: &str) -> LiveTicket {
        LiveTicket {
            table: signal.table_name().to_string(),
            tenant: tenant.to_string(),
            run: self.run.clone(),
            next: self.first + self.batches.len() as u64,
        }
    }

    /// Brings the copy up to date with an answer to [`Self::ticket`]. An
    /// answer that does not follow on from the copy is refused and the copy
    /// emptied, so the next ticket asks for everything.
    pub fn apply(&mut self, tail: LiveTail) -> Result<()> {
        let LiveTail { header, batches } = tail;
        if self.run.as_deref() != Some(header.run.as_str()) {
            if header.from != header.first {
                *self = Self::default();
                return Err(StoreError::Live(format!(
                    "a new run's batches start at {} instead of its first unflushed one, {}",
                    header.from, header.first
                )));
            }
            *self = Self {
                run: Some(header.run),
                first: header.first,
                batches,
            };
            return Ok(());
        }
        let next = self.first + self.batches.len() as u64;
        if header.from != next.max(header.first) {
            *self = Self::default();
            return Err(StoreError::Live(format!(
                "batches sent from {} to a copy that holds up to {next}, of which the writer keeps {} on",
                header.from, header.first
            )));
        }
        let flushed = header.first.saturating_sub(self.first) as usize;
        self.batches.drain(..flushed.min(self.batches.len()));
        self.first = self.first.max(header.first);
        self.batches.extend(batches);
        Ok(())
    }

    pub fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, AsArray, UInt64Array};
    use arrow::datatypes::UInt64Type;

    use super::*;

    /// A one-row batch holding its own number.
    fn batch(number: u64) -> RecordBatch {
        let column: ArrayRef = Arc::new(UInt64Array::from(vec![number]));
        RecordBatch::try_from_iter([("number", column)]).unwrap()
    }

    fn numbers(copy: &TailCopy) -> Vec<u64> {
        copy.batches()
            .iter()
            .map(|b| b.column(0).as_primitive::<UInt64Type>().value(0))
            .collect()
    }

    fn answer(run: &str, first: u64, from: u64, numbers: &[u64]) -> LiveTail {
        LiveTail {
            header: LiveHeader {
                run: run.into(),
                first,
                from,
                segments: Vec::new(),
            },
            batches: numbers.iter().map(|&n| batch(n)).collect(),
        }
    }

    #[test]
    fn a_copy_takes_only_new_batches_and_drops_the_flushed_ones() {
        let mut copy = TailCopy::default();
        let ticket = copy.ticket(Signal::Spans, "default");
        assert_eq!((ticket.run.as_deref(), ticket.next), (None, 0));

        copy.apply(answer("a", 3, 3, &[3, 4])).unwrap();
        assert_eq!(numbers(&copy), [3, 4]);
        let ticket = copy.ticket(Signal::Spans, "default");
        assert_eq!((ticket.run.as_deref(), ticket.next), (Some("a"), 5));

        // Batch 3 was flushed meanwhile, 5 and 6 arrived.
        copy.apply(answer("a", 4, 5, &[5, 6])).unwrap();
        assert_eq!(numbers(&copy), [4, 5, 6]);

        // Everything flushed, 9 is the only unflushed batch.
        copy.apply(answer("a", 9, 9, &[9])).unwrap();
        assert_eq!(numbers(&copy), [9]);
        assert_eq!(copy.ticket(Signal::Spans, "default").next, 10);

        // The writer restarted: its numbers mean something else now.
        copy.apply(answer("b", 0, 0, &[0])).unwrap();
        assert_eq!(numbers(&copy), [0]);
    }

    #[test]
    fn an_answer_out_of_step_empties_the_copy() {
        let mut copy = TailCopy::default();
        copy.apply(answer("a", 0, 0, &[0, 1])).unwrap();
        assert!(copy.apply(answer("a", 0, 5, &[5])).is_err());
        assert!(copy.batches().is_empty());
        assert_eq!(copy.ticket(Signal::Logs, "default").run, None);
        assert!(copy.apply(answer("b", 2, 4, &[4])).is_err());
    }
}
