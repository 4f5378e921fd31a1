//! The open-loop load generator: requests leave at the configured rate
//! whatever the answers' latency (a closed loop would slow down with the
//! system and hide its queueing), in the mix a mobile app produces, for
//! customers of every tier.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;

use crate::services::ACCOUNTS;
use crate::topology::API_KEY;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The gateway's base URL.
    pub gateway: String,
    /// Requests per second.
    pub rate: f64,
    /// Requests waiting for an answer at most; one more is counted as skipped
    /// instead of sent, so an overloaded demo cannot exhaust memory.
    pub max_in_flight: usize,
}

/// What the load saw, shared with the progress line and the demo's API.
#[derive(Debug)]
pub struct LoadStats {
    sent: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicUsize,
    latencies: Mutex<Latencies>,
    last: Mutex<Option<Report>>,
}

/// Answer latencies in µs: since the last progress report, and since the
/// measurement started (the whole run unless restarted after a warm-up).
#[derive(Debug)]
struct Latencies {
    window: Histogram<u64>,
    errors_before_window: u64,
    measured: Histogram<u64>,
    measured_since: Instant,
    errors_before_measured: u64,
}

/// One report over a stretch of the run, with totals since the start.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target_rate: f64,
    /// Answers per second in the stretch.
    pub achieved_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
    /// Fraction of the stretch's answers that were 5xx or failed to arrive.
    pub error_rate: f64,
    #[serde(flatten)]
    pub totals: Totals,
}

/// Counts since the load started.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Totals {
    pub sent: u64,
    /// Answers that were 5xx, or no answer.
    pub errors: u64,
    pub rate_limited: u64,
    /// Not sent because too many requests were waiting for answers.
    pub skipped: u64,
}

fn latency_histogram() -> Histogram<u64> {
    // 1 µs to an hour at 3 significant digits: ~0.1 % error, fixed memory.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("the bounds are valid")
}

impl Default for LoadStats {
    fn default() -> Self {
        Self {
            sent: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
            latencies: Mutex::new(Latencies {
                window: latency_histogram(),
                errors_before_window: 0,
                measured: latency_histogram(),
                measured_since: Instant::now(),
                errors_before_measured: 0,
            }),
            last: Mutex::new(None),
        }
    }
}

impl LoadStats {
    /// A report over the answers since the previous one (`elapsed` ago),
    /// which starts the next window.
    pub fn report(&self, target_rate: f64, elapsed: Duration) -> Report {
        let totals = self.totals();
        let report = {
            let mut latencies = self.latencies.lock();
            let report = summary(
                &latencies.window,
                target_rate,
                elapsed,
                totals,
                latencies.errors_before_window,
            );
            latencies.window.reset();
            latencies.errors_before_window = totals.errors;
            report
        };
        *self.last.lock() = Some(report.clone());
        report
    }

    /// Forgets what was measured so far (a warm-up) and measures from now.
    pub fn start_measuring(&self) {
        let errors = self.errors.load(Ordering::Relaxed);
        let mut latencies = self.latencies.lock();
        latencies.measured.reset();
        latencies.measured_since = Instant::now();
        latencies.errors_before_measured = errors;
    }

    /// A report over everything since the measurement started.
    pub fn measured(&self, target_rate: f64) -> Report {
        let totals = self.totals();
        let latencies = self.latencies.lock();
        summary(
            &latencies.measured,
            target_rate,
            latencies.measured_since.elapsed(),
            totals,
            latencies.errors_before_measured,
        )
    }

    pub fn totals(&self) -> Totals {
        Totals {
            sent: self.sent.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    /// Waits (up to `limit`) for the requests still out to be answered.
    pub async fn drained(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The latest progress report, if one was made.
    pub fn last(&self) -> Option<Report> {
        self.last.lock().clone()
    }

    fn answered(&self, latency: Duration, outcome: Outcome) {
        match outcome {
            Outcome::Ok => {}
            Outcome::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::RateLimited => {
                self.rate_limited.fetch_add(1, Ordering::Relaxed);
            }
        }
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        let mut latencies = self.latencies.lock();
        latencies.window.saturating_record(micros);
        latencies.measured.saturating_record(micros);
    }
}

fn summary(
    latencies: &Histogram<u64>,
    target_rate: f64,
    elapsed: Duration,
    totals: Totals,
    errors_before: u64,
) -> Report {
    let answers = latencies.len();
    let ms = |micros: u64| (answers > 0).then(|| micros as f64 / 1_000.0);
    Report {
        target_rate,
        achieved_rate: answers as f64 / elapsed.as_secs_f64().max(1e-3),
        p50_ms: ms(latencies.value_at_quantile(0.5)),
        p99_ms: ms(latencies.value_at_quantile(0.99)),
        max_ms: ms(latencies.max()),
        error_rate: if answers == 0 {
            0.0
        } else {
            totals.errors.saturating_sub(errors_before) as f64 / answers as f64
        },
        totals,
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1} ms"));
        write!(
            f,
            "load {:.1}/{} req/s  p50 {}  p99 {}  errors {:.1}%  sent {}",
            self.achieved_rate,
            self.target_rate,
            ms(self.p50_ms),
            ms(self.p99_ms),
            self.error_rate * 100.0,
            self.totals.sent
        )?;
        if self.totals.rate_limited > 0 {
            write!(f, "  rate-limited {}", self.totals.rate_limited)?;
        }
        if self.totals.skipped > 0 {
            write!(f, "  skipped {} (too many in flight)", self.totals.skipped)?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Error,
    RateLimited,
}

/// Sends requests until `stop` completes (none at a rate of 0).
pub async fn run(options: LoadOptions, stats: Arc<LoadStats>, stop: impl Future<Output = ()>) {
    if options.rate.is_nan() || options.rate <= 0.0 {
        return stop.await;
    }
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(options.max_in_flight.min(512))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the load generator cannot build its HTTP client");
            return;
        }
    };
    let started = Instant::now();
    let mut scheduled: u64 = 0;
    tokio::pin!(stop);
    loop {
        // Everything due by now leaves now: at thousands of requests a second
        // the timer's millisecond resolution is coarser than the spacing.
        let due = (started.elapsed().as_secs_f64() * options.rate) as u64;
        while scheduled < due {
            scheduled += 1;
            if stats.in_flight.load(Ordering::Relaxed) >= options.max_in_flight {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
            stats.sent.fetch_add(1, Ordering::Relaxed);
            let (client, stats, gateway) = (client.clone(), stats.clone(), options.gateway.clone());
            tokio::spawn(async move {
                let began = Instant::now();
                let outcome = send_one(&client, &gateway).await;
                stats.answered(began.elapsed(), outcome);
                stats.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        let next = started + Duration::from_secs_f64((scheduled + 1) as f64 / options.rate);
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep_until(next.into()) => {}
        }
    }
}

/// One request of the mobile app's mix.
async fn send_one(client: &reqwest::Client, gateway: &str) -> Outcome {
    let tier = match fastrand::u8(0..100) {
        0..=14 => "gold",
        15..=49 => "silver",
        _ => "bronze",
    };
    // A few requests ask for accounts that do not exist: 404s are part of real traffic.
    let account = if fastrand::u8(0..100) < 3 {
        fastrand::u64(ACCOUNTS + 1..ACCOUNTS * 2)
    } else {
        fastrand::u64(1..=ACCOUNTS)
    };
    let request = match fastrand::u8(0..100) {
        0..=39 => client.get(format!("{gateway}/api/accounts/{account}")),
        40..=64 => client.get(format!("{gateway}/api/accounts/{account}/contacts")),
        65..=89 => client.get(format!("{gateway}/api/accounts/{account}/opportunities")),
        _ => client
            .post(format!("{gateway}/api/opportunities"))
            .json(&json!({
                "account_id": account,
                "name": format!("Mobile deal {}", fastrand::u32(1000..9999)),
                "stage": "Prospecting",
                "amount": fastrand::u32(1_000..250_000),
                "close_date": "2027-03-31",
            })),
    };
    match request
        .header("apikey", API_KEY)
        .header("x-customer-tier", tier)
        .send()
        .await
    {
        Ok(response) if response.status().as_u16() == 429 => Outcome::RateLimited,
        Ok(response) if response.status().is_server_error() => Outcome::Error,
        Ok(response) => {
            // Read the body: the answer is complete only when it has arrived.
            match response.bytes().await {
                Ok(_) => Outcome::Ok,
                Err(_) => Outcome::Error,
            }
        }
        Err(_) => Outcome::Error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_takes_quantiles_of_its_window_only() {
        let stats = LoadStats::default();
        for ms in 1..=100 {
            stats.answered(Duration::from_millis(ms), Outcome::Ok);
        }
        stats.answered(Duration::from_millis(500), Outcome::Error);
        let report = stats.report(50.0, Duration::from_secs(2));
        let close = |value: Option<f64>, expected: f64| {
            let value = value.unwrap();
            assert!(
                (value - expected).abs() <= expected * 0.001,
                "{value} vs {expected}"
            );
        };
        close(report.p50_ms, 51.0);
        close(report.p99_ms, 100.0);
        close(report.max_ms, 500.0);
        assert!((report.achieved_rate - 50.5).abs() < 1e-9);
        assert!((report.error_rate - 1.0 / 101.0).abs() < 1e-9);
        let empty = stats.report(50.0, Duration::from_secs(2));
        assert_eq!(empty.p50_ms, None);
        assert_eq!(empty.totals.errors, 1);
        assert_eq!(empty.error_rate, 0.0);
        // The measurement still holds everything since it started.
        assert_eq!(stats.measured(50.0).error_rate, 1.0 / 101.0);
        stats.start_measuring();
        stats.answered(Duration::from_millis(7), Outcome::Ok);
        let measured = stats.measured(50.0);
        close(measured.p99_ms, 7.0);
        assert_eq!(measured.error_rate, 0.0);
    }
}
