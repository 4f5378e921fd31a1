//! One flush's independent pieces of work (the columns a sort moves, the
//! columns Parquet encodes) shared out over the cores.
//!
//! A flush that falls behind is what pushes back on ingest, so its wall time
//! is the store's sustained rate; done column by column on one thread it left
//! a core idle while requests were refused (BENCHMARKS.md). Jobs are handed
//! out largest first, each thread taking the next one left when it is done,
//! so one large column (a span's attributes) does not end up last.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

/// `work` applied to every job of `jobs` (each with its estimated size), on
/// as many threads as there are cores; the results in the order of `jobs`.
/// A panic in `work` is resumed on the calling thread.
pub(crate) fn map_largest_first<T: Send, R: Send>(
    jobs: Vec<(usize, T)>,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let mut largest_first: Vec<usize> = (0..jobs.len()).collect();
    largest_first.sort_by_key(|&i| std::cmp::Reverse(jobs[i].0));
    let pending: Vec<Mutex<Option<T>>> = jobs
        .into_iter()
        .map(|(_, job)| Mutex::new(Some(job)))
        .collect();
    let done: Vec<Mutex<Option<R>>> = pending.iter().map(|_| Mutex::new(None)).collect();
    let next = AtomicUsize::new(0);
    let run = || {
        while let Some(&i) = largest_first.get(next.fetch_add(1, Ordering::Relaxed)) {
            let job = pending[i]
                .lock()
                .take()
                .expect("each job is handed out once");
            let result = work(job);
            *done[i].lock() = Some(result);
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(pending.len());
    std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(run)).collect();
        run();
        for helper in helpers {
            helper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        }
    });
    done.into_iter()
        .map(|result| result.into_inner().expect("every job ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_job_runs_once_and_results_keep_the_order_of_the_jobs() {
        let jobs: Vec<(usize, u64)> = (0..100).map(|i| ((i * 37) % 11, i as u64)).collect();
        let ran = AtomicUsize::new(0);
        let results = map_largest_first(jobs, |n| {
            ran.fetch_add(1, Ordering::Relaxed);
            n * n
        });
        assert_eq!(ran.load(Ordering::Relaxed), 100);
        assert_eq!(results, (0..100u64).map(|n| n * n).collect::<Vec<_>>());
        assert!(map_largest_first(Vec::<(usize, u8)>::new(), |n| n).is_empty());
    }

    #[test]
    #[should_panic(expected = "job 7 failed")]
    fn a_panicking_job_panics_the_caller() {
        let jobs: Vec<(usize, usize)> = (0..10).map(|i| (i, i)).collect();
        map_largest_first(jobs, |i| {
            if i == 7 {
                panic!("job 7 failed");
            }
        });
    }
}
