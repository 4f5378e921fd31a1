//! Flushes and merges on threads of their own, optionally at a lower CPU
//! priority (`background_nice`) while they keep up.
//!
//! Nothing waits on a flush except memory, but a flush keeps every core busy
//! while it sorts, encodes and indexes a segment (a few hundred ms for a
//! full one). Where the collector shares its cores with latency-sensitive
//! work — the proxies whose telemetry it stores, say — every flush at full
//! priority holds that work up: a traced `weft gateway` beside a
//! `weft serve` saw its p99 latency grow by the collector's bursts
//! (BENCHMARKS.md, *The latency tracing adds, at one load*). A higher nice
//! value gives the flush the cores' idle time first and a smaller share of
//! busy ones. A flush that falls behind must not wait, though, or the
//! buffered data reaches `max_buffered_bytes` and receivers refuse new data:
//! the table runs a flush at the process's priority when the next one is
//! already due (see `Table::flush_frozen`). Even so a saturated collector
//! stores fewer spans niced (its receivers take the cores first), so the
//! setting is off by default. Linux keeps the nice value per thread, and the
//! threads a flush starts ([`crate::parallel`]) inherit it; a thread cannot
//! take back a priority it gave up, so each flush gets a new thread.

use std::io;

/// Runs `work` on a new thread named `name`, `nice` nicer than the process
/// (0: as the process), and returns its result. Fails if the thread cannot
/// be started or `work` panics.
pub async fn run<T: Send + 'static>(
    name: &str,
    nice: u8,
    work: impl FnOnce() -> T + Send + 'static,
) -> io::Result<T> {
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            lower_priority(nice);
            let _ = done.send(work());
        })?;
    result
        .await
        .map_err(|_| io::Error::other(format!("the {name} thread panicked")))
}

/// Raises the calling thread's nice value by `nice`; a failure leaves it as
/// it was (the work runs either way).
fn lower_priority(nice: u8) {
    if nice == 0 {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        // `nice(2)` may return -1 as the new value; only errno tells a failure.
        // SAFETY: takes and returns plain integers; errno is thread-local.
        let failed = unsafe {
            *libc::__errno_location() = 0;
            libc::nice(i32::from(nice)) == -1 && *libc::__errno_location() != 0
        };
        if failed {
            tracing::debug!(error = %io::Error::last_os_error(), "could not lower a background thread's priority");
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The calling thread's nice value (`who = 0` is the calling thread on Linux).
    fn current_nice() -> i32 {
        // SAFETY: takes and returns plain integers.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[tokio::test]
    async fn work_runs_nicer_on_its_own_thread_and_its_result_comes_back() {
        let before = current_nice();
        let (name, nice) = run("weft-test-background", 5, || {
            let name = std::thread::current().name().map(str::to_string);
            (name, current_nice())
        })
        .await
        .unwrap();
        assert_eq!(name.as_deref(), Some("weft-test-background"));
        assert_eq!(nice, (before + 5).min(19));
        assert_eq!(current_nice(), before, "the caller's priority is untouched");
    }

    #[tokio::test]
    async fn a_panic_in_the_work_is_an_error_not_a_hang() {
        let result: io::Result<()> = run("weft-test-panic", 0, || panic!("boom")).await;
        let error = result.unwrap_err();
        assert!(error.to_string().contains("weft-test-panic"), "{error}");
    }
}
