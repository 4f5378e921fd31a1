//! `rate-limiting`: local token buckets per consumer, client IP or header
//! value, one per configured window. Over the limit: 429 with `Retry-After`.
//! Every answer carries `RateLimit-Limit/Remaining/Reset` for the tightest window.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use serde::Deserialize;

use super::{forward, header_name, AuthenticatedConsumer, Middleware};
use crate::http::{gateway_response, ClientConnection, ProxyRequest, ProxyResponse, ProxyService};

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum LimitBy {
    /// The authenticated consumer, or the client IP when there is none.
    #[default]
    Consumer,
    /// The client IP.
    Ip,
    /// The value of `header_name`, or the client IP when it is absent.
    Header,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Requests per second.
    second: Option<u64>,
    /// Requests per minute.
    minute: Option<u64>,
    /// Requests per hour.
    hour: Option<u64>,
    /// Whose requests are counted together.
    limit_by: LimitBy,
    /// The header for `limit_by: header`.
    header_name: Option<String>,
}

/// Keys tracked before idle (refilled) buckets are forgotten.
const MAX_KEYS: usize = 100_000;

struct Window {
    name: &'static str,
    limit: u64,
    period: Duration,
}

#[derive(Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

pub(crate) struct RateLimiting {
    windows: Vec<Window>,
    limit_by: LimitBy,
    header: Option<HeaderName>,
    buckets: Mutex<HashMap<String, Vec<Bucket>>>,
}

/// What one request was told.
struct Verdict {
    allowed: bool,
    limit: u64,
    remaining: u64,
    /// Seconds until the tightest bucket is full again.
    reset: u64,
    /// Seconds until a refused request would be let in.
    retry_after: u64,
    per_window: Vec<(&'static str, u64, u64)>,
}

impl RateLimiting {
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        let windows: Vec<Window> = [
            ("second", settings.second, 1),
            ("minute", settings.minute, 60),
            ("hour", settings.hour, 3600),
        ]
        .into_iter()
        .filter_map(|(name, limit, seconds)| {
            limit.map(|limit| Window {
                name,
                limit,
                period: Duration::from_secs(seconds),
            })
        })
        .collect();
        if windows.is_empty() {
            return Err("set at least one of second, minute, hour".to_string());
        }
        if windows.iter().any(|w| w.limit == 0) {
            return Err("limits must be at least 1".to_string());
        }
        let header = match (settings.limit_by, &settings.header_name) {
            (LimitBy::Header, None) => return Err("limit_by: header needs header_name".to_string()),
            (_, Some(name)) => Some(header_name(name)?),
            _ => None,
        };
        Ok(Self {
            windows,
            limit_by: settings.limit_by,
            header,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    fn key(&self, request: &ProxyRequest) -> String {
        let ip = || {
            request
                .extensions()
                .get::<ClientConnection>()
                .map(|c| c.ip_str().to_string())
                .unwrap_or_default()
        };
        match self.limit_by {
            LimitBy::Consumer => match request.extensions().get::<AuthenticatedConsumer>() {
                Some(AuthenticatedConsumer(c)) => format!("consumer:{}", c.username),
                None => format!("ip:{}", ip()),
            },
            LimitBy::Ip => format!("ip:{}", ip()),
            LimitBy::Header => match self.header.as_ref().and_then(|h| request.headers().get(h)) {
                Some(v) => format!("header:{}", String::from_utf8_lossy(v.as_bytes())),
                None => format!("ip:{}", ip()),
            },
        }
    }

    fn take(&self, key: String, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_KEYS && !buckets.contains_key(&key) {
            // Full buckets say nothing a new bucket would not; drop them first.
            buckets.retain(|_, b| {
                b.iter().zip(&self.windows).any(|(b, w)| {
                    b.tokens + rate(w) * now.duration_since(b.updated).as_secs_f64()
                        < w.limit as f64
                })
            });
            if buckets.len() >= MAX_KEYS {
                tracing::warn!(
                    keys = MAX_KEYS,
                    "rate-limiting: too many active keys; starting over"
                );
                buckets.clear();
            }
        }
        let state = buckets.entry(key).or_insert_with(|| {
            self.windows
                .iter()
                .map(|w| Bucket {
                    tokens: w.limit as f64,
                    updated: now,
                })
                .collect()
        });
        for (bucket, window) in state.iter_mut().zip(&self.windows) {
            let refill = rate(window) * now.duration_since(bucket.updated).as_secs_f64();
            bucket.tokens = (bucket.tokens + refill).min(window.limit as f64);
            bucket.updated = now;
        }
        let allowed = state.iter().all(|b| b.tokens >= 1.0);
        if allowed {
            for bucket in state.iter_mut() {
                bucket.tokens -= 1.0;
            }
        }
        let per_window: Vec<(&'static str, u64, u64)> = state
            .iter()
            .zip(&self.windows)
            .map(|(b, w)| (w.name, w.limit, b.tokens.floor() as u64))
            .collect();
        let (tightest, window) = state
            .iter()
            .zip(&self.windows)
            .min_by(|(a, _), (b, _)| a.tokens.total_cmp(&b.tokens))
            .expect("at least one window");
        let retry_after = state
            .iter()
            .zip(&self.windows)
            .filter(|(b, _)| b.tokens < 1.0)
            .map(|(b, w)| ((1.0 - b.tokens) / rate(w)).ceil() as u64)
            .max()
            .unwrap_or(0)
            .max(1);
        Verdict {
            allowed,
            limit: window.limit,
            remaining: tightest.tokens.floor() as u64,
            reset: ((window.limit as f64 - tightest.tokens) / rate(window)).ceil() as u64,
            retry_after,
            per_window,
        }
    }
}

fn rate(window: &Window) -> f64 {
    window.limit as f64 / window.period.as_secs_f64()
}

fn annotate(headers: &mut HeaderMap, verdict: &Verdict) {
    headers.insert("ratelimit-limit", HeaderValue::from(verdict.limit));
    headers.insert("ratelimit-remaining", HeaderValue::from(verdict.remaining));
    headers.insert("ratelimit-reset", HeaderValue::from(verdict.reset));
    for (name, limit, remaining) in &verdict.per_window {
        if let (Ok(l), Ok(r)) = (
            HeaderName::try_from(format!("x-ratelimit-limit-{name}")),
            HeaderName::try_from(format!("x-ratelimit-remaining-{name}")),
        ) {
            headers.insert(l, HeaderValue::from(*limit));
            headers.insert(r, HeaderValue::from(*remaining));
        }
    }
}

impl Middleware for RateLimiting {
    fn handle(
        self: Arc<Self>,
        request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        let verdict = self.take(self.key(&request), Instant::now());
        Box::pin(async move {
            let mut response = if verdict.allowed {
                forward(next, request).await
            } else {
                let mut refused =
                    gateway_response(StatusCode::TOO_MANY_REQUESTS, "API rate limit exceeded");
                refused.headers_mut().insert(
                    http::header::RETRY_AFTER,
                    HeaderValue::from(verdict.retry_after),
                );
                refused
            };
            annotate(response.headers_mut(), &verdict);
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(second: Option<u64>, minute: Option<u64>) -> RateLimiting {
        RateLimiting::new(Settings {
            second,
            minute,
            ..Settings::default()
        })
        .unwrap()
    }

    #[test]
    fn a_bucket_refuses_past_its_limit_and_refills_over_time() {
        let limiter = limiter(Some(2), None);
        let t0 = Instant::now();
        assert!(limiter.take("a".into(), t0).allowed);
        assert!(limiter.take("a".into(), t0).allowed);
        let refused = limiter.take("a".into(), t0);
        assert!(!refused.allowed);
        assert_eq!((refused.remaining, refused.retry_after), (0, 1));
        assert!(
            limiter.take("b".into(), t0).allowed,
            "keys are counted apart"
        );
        assert!(
            limiter
                .take("a".into(), t0 + Duration::from_millis(500))
                .allowed
        );
    }

    #[test]
    fn the_tightest_window_is_reported() {
        let limiter = limiter(Some(10), Some(3));
        let t0 = Instant::now();
        let verdict = limiter.take("a".into(), t0);
        assert_eq!((verdict.limit, verdict.remaining), (3, 2));
        limiter.take("a".into(), t0);
        limiter.take("a".into(), t0);
        let refused = limiter.take("a".into(), t0);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, 20, "one token of 3/minute takes 20 s");
    }
}
