//! Thread-per-core serving: each worker thread runs a single-threaded tokio
//! runtime, and a proxied connection stays on one worker from accept to close.
//!
//! Under tokio's work-stealing scheduler a request's work hops threads: the
//! client connection's task, the pooled upstream connection's task it hands
//! the request to, and their wake-ups each land on whichever thread is free,
//! so every request paid futex wake-ups and cache misses. Here the client
//! connection, the upstream connections its requests use (with a
//! [`PerWorker`] client pool) and their timers share one thread, as in
//! nginx's worker processes. Measured on the gateway (BENCHMARKS.md): two
//! one-thread gateways served 28 % more requests than one two-thread gateway,
//! with a fifth less CPU per request.

use std::cell::Cell;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio::sync::oneshot;

thread_local! {
    /// The index of the worker this thread is, if it is one.
    static CURRENT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The index of the worker running the caller, or `None` off the workers.
pub fn current_worker() -> Option<usize> {
    CURRENT.with(Cell::get)
}

/// How many workers a proxy runs when not told: one per core it may use.
pub fn default_worker_count() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A set of worker threads, each with its own single-threaded runtime.
pub struct Workers {
    workers: Vec<Worker>,
}

struct Worker {
    runtime: tokio::runtime::Handle,
    /// Connections being served on it, to hand the next one to the least busy.
    open: Arc<AtomicUsize>,
    stop: oneshot::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// Counts a connection as open on its worker until dropped.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// Starts `count` workers (at least one); their threads are named `name-N`.
    pub fn start(count: usize, name: &str) -> std::io::Result<Self> {
        let mut workers = Vec::with_capacity(count.max(1));
        for index in 0..count.max(1) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let handle = runtime.handle().clone();
            let (stop, stopped) = oneshot::channel::<()>();
            let thread = std::thread::Builder::new()
                .name(format!("{name}-{index}"))
                .spawn(move || {
                    CURRENT.with(|current| current.set(Some(index)));
                    runtime.block_on(async {
                        let _ = stopped.await;
                    });
                    // Dropping the runtime here, on its own thread, cancels
                    // whatever is still running on it.
                })?;
            workers.push(Worker {
                runtime: handle,
                open: Arc::new(AtomicUsize::new(0)),
                stop,
                thread,
            });
        }
        Ok(Self { workers })
    }

    /// How many workers there are.
    pub fn count(&self) -> usize {
        self.workers.len()
    }

    /// Moves `stream`, accepted on any runtime, to the worker serving the
    /// fewest connections, and runs `serve` with it there.
    pub fn serve<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|worker| worker.open.load(Ordering::Relaxed))
        else {
            return;
        };
        // Leaves the accepting runtime's reactor; registered again on the worker's.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "cannot move an accepted connection to a worker");
                return;
            }
        };
        worker.open.fetch_add(1, Ordering::Relaxed);
        let open = Open(worker.open.clone());
        worker.runtime.spawn(async move {
            let _open = open;
            match TcpStream::from_std(stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot register a connection on its worker");
                }
            }
        });
    }

    /// Stops every worker, cancelling what still runs on them, and waits for
    /// their threads to end.
    pub async fn stop(self) {
        let threads: Vec<_> = self
            .workers
            .into_iter()
            .map(|worker| {
                let _ = worker.stop.send(());
                worker.thread
            })
            .collect();
        let _ = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        })
        .await;
    }
}

/// One value per worker — a connection pool, say — so that what a worker's
/// connections use stays on its thread.
pub struct PerWorker<T>(Box<[T]>);

impl<T> PerWorker<T> {
    /// `make(i)` for each of `count` workers (at least one).
    pub fn new(count: usize, make: impl FnMut(usize) -> T) -> Self {
        Self((0..count.max(1)).map(make).collect())
    }

    /// The calling worker's value; off the workers, the first.
    pub fn get(&self) -> &T {
        let index = current_worker().unwrap_or(0);
        &self.0[index % self.0.len()]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Accepts `n` connections and serves each on `workers`, answering with
    /// the worker it runs on (and that worker's `PerWorker` value) and then
    /// holding the connection open.
    async fn serve_connections(workers: &Workers, listener: &TcpListener, n: usize) {
        let values = Arc::new(PerWorker::new(workers.count(), |i| i as u8 + 100));
        for _ in 0..n {
            let (stream, _) = listener.accept().await.unwrap();
            let values = values.clone();
            workers.serve(stream, move |mut stream| async move {
                let worker = current_worker().map_or(u8::MAX, |i| i as u8);
                let _ = stream.write_all(&[worker, *values.get()]).await;
                // Open until the peer closes or the worker stops.
                let _ = stream.read(&mut [0; 1]).await;
            });
        }
    }

    #[tokio::test]
    async fn connections_run_on_the_least_busy_worker_and_use_its_own_values() {
        let workers = Workers::start(3, "test-worker").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut clients = Vec::new();
        let mut seen = HashSet::new();
        for _ in 0..3 {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            serve_connections(&workers, &listener, 1).await;
            let mut answer = [0; 2];
            client.read_exact(&mut answer).await.unwrap();
            let [worker, value] = answer;
            assert!(worker < 3, "served off the workers");
            assert_eq!(value, worker + 100, "a worker reads its own value");
            seen.insert(worker);
            clients.push(client);
        }
        // Each connection stays open, so each went to a worker with none.
        assert_eq!(seen.len(), 3, "three open connections share one worker");
        assert_eq!(
            PerWorker::new(3, |i| i).get(),
            &0,
            "off the workers, the first"
        );
        workers.stop().await;
    }

    #[tokio::test]
    async fn stopping_the_workers_closes_the_connections_still_open() {
        let workers = Workers::start(2, "test-worker").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        serve_connections(&workers, &listener, 1).await;
        let mut answer = [0; 2];
        client.read_exact(&mut answer).await.unwrap();
        workers.stop().await;
        let read =
            tokio::time::timeout(std::time::Duration::from_secs(10), client.read(&mut [0; 1]))
                .await
                .expect("the connection was not closed");
        assert!(matches!(read, Ok(0) | Err(_)), "still open: {read:?}");
    }
}
