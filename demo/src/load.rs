//! The open-loop load generator: requests leave at the configured rate
//! whatever the answers' latency (a closed loop would slow down with the
//! system and hide its queueing), in the mix a mobile app produces, for
//! customers of every tier.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
#[derive(Debug, Default)]
pub struct LoadStats {
    sent: AtomicU64,
    errors: AtomicU64,
    rate_limited: AtomicU64,
    skipped: AtomicU64,
    in_flight: AtomicUsize,
    /// Latencies (µs) of the answers since the last report.
    window: Mutex<Vec<u32>>,
    last: Mutex<Option<Report>>,
}

/// One progress report: the window since the previous one, and totals.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub target_rate: f64,
    pub achieved_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// Fraction of the window's answers that were 5xx or failed to arrive.
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

impl LoadStats {
    /// Drains the latency window into a report over `elapsed`.
    pub fn report(&self, target_rate: f64, elapsed: Duration) -> Report {
        let mut window = std::mem::take(&mut *self.window.lock());
        window.sort_unstable();
        let quantile = |q: f64| {
            (!window.is_empty()).then(|| {
                let index = ((window.len() as f64 * q).ceil() as usize).clamp(1, window.len()) - 1;
                f64::from(window[index]) / 1_000.0
            })
        };
        let errors_before = self.last.lock().as_ref().map_or(0, |r| r.totals.errors);
        let totals = self.totals();
        let report = Report {
            target_rate,
            achieved_rate: window.len() as f64 / elapsed.as_secs_f64().max(1e-3),
            p50_ms: quantile(0.5),
            p99_ms: quantile(0.99),
            error_rate: if window.is_empty() {
                0.0
            } else {
                (totals.errors - errors_before) as f64 / window.len() as f64
            },
            totals,
        };
        *self.last.lock() = Some(report.clone());
        report
    }

    pub fn totals(&self) -> Totals {
        Totals {
            sent: self.sent.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
        }
    }

    /// The latest report, if one was made.
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
        let micros = u32::try_from(latency.as_micros()).unwrap_or(u32::MAX);
        self.window.lock().push(micros);
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

/// Sends requests until `stop` completes.
pub async fn run(options: LoadOptions, stats: Arc<LoadStats>, stop: impl Future<Output = ()>) {
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
        assert_eq!(report.p50_ms, Some(51.0));
        assert_eq!(report.p99_ms, Some(100.0));
        assert!((report.achieved_rate - 50.5).abs() < 1e-9);
        assert!((report.error_rate - 1.0 / 101.0).abs() < 1e-9);
        let empty = stats.report(50.0, Duration::from_secs(2));
        assert_eq!(empty.p50_ms, None);
        assert_eq!(empty.totals.errors, 1);
        assert_eq!(empty.error_rate, 0.0);
    }
}
