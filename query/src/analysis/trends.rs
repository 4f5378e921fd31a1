//! Trends: one metric of a service — request rate, error rate or p95
//! latency — as a series of fixed steps over a window, a forecast past the
//! window's end with a 95% prediction interval, the measured points the model
//! did not expect (anomalies), and the service's log volume by severity over
//! the same steps.
//!
//! The series and the log volume are SQL on the [`QueryEngine`]: `date_bin`
//! buckets with `count`, `avg` and `approx_percentile_cont`, so the rows never
//! leave DataFusion. Only the model runs here, over at most [`MAX_POINTS`]
//! numbers: Grafana's `augurs` MSTL (seasonal-trend decomposition by LOESS)
//! with an AutoETS model of the deseasonalised series when the data covers
//! two cycles of a day (or, in a shorter window, of an hour), plain AutoETS
//! otherwise. [`model`] is that part alone, a pure function over a series.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;

use augurs::ets::AutoETS;
use augurs::forecaster::transforms::LinearInterpolator;
use augurs::forecaster::Transformer;
use augurs::mstl::{stlrs, MSTLModel};
use augurs::{Fit, Forecast, Predict};
use serde::Serialize;

use super::rfc3339;
use crate::api::params::{sql_string, sql_time};
use crate::engine::{QueryEngine, QueryError};

/// The most steps one series may have.
pub const MAX_POINTS: usize = 10_000;
/// The confidence level of the forecast's prediction interval.
pub const FORECAST_LEVEL: f64 = 0.95;
/// Measured points outside the model's in-sample interval at this level are
/// anomalies. A 95% band would flag one ordinary point in twenty; at 99.9%,
/// a noisy week of 5-minute steps without incidents has 8 of 2016 flagged.
pub const ANOMALY_LEVEL: f64 = 0.999;
/// Nor is a point an anomaly when it is this close to what the model
/// expected, as a fraction of the series' mean level: a smooth series is
/// fitted so closely that its band is narrower than the rounding of counts.
const MIN_DEVIATION: f64 = 0.02;
/// Without a seasonal cycle, fewer measured points than this make no forecast.
const MIN_POINTS: usize = 10;
/// A cycle shorter than this many steps has no shape to model.
const MIN_STEPS_PER_CYCLE: usize = 4;
const NANOS_PER_SECOND: i64 = 1_000_000_000;
const DAY_SECONDS: i64 = 86_400;
const HOUR_SECONDS: i64 = 3_600;

/// What a trend series measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Requests per second.
    Rate,
    /// The fraction of requests that failed (status `ERROR`).
    Errors,
    /// The 95th percentile of request duration, in nanoseconds.
    P95,
}

impl Metric {
    /// The values this metric can take: forecasts and intervals are clamped
    /// to them, so a falling rate is not forecast below zero.
    fn bounds(self) -> (f64, f64) {
        match self {
            Metric::Rate | Metric::P95 => (0.0, f64::INFINITY),
            Metric::Errors => (0.0, 1.0),
        }
    }

    /// The SQL aggregate over one step's requests. The rate's request count
    /// becomes per-second in [`series_values`], which knows each step's length.
    fn aggregate_sql(self) -> &'static str {
        match self {
            Metric::Rate => "CAST(count(*) AS DOUBLE)",
            Metric::Errors => "avg(CASE WHEN status_code = 'ERROR' THEN 1.0 ELSE 0.0 END)",
            Metric::P95 => "CAST(approx_percentile_cont(duration_ns, 0.95) AS DOUBLE)",
        }
    }
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        match value {
            "rate" => Ok(Metric::Rate),
            "errors" => Ok(Metric::Errors),
            "p95" => Ok(Metric::P95),
            _ => Err(format!(
                "metric={value:?} is not a metric: use rate, errors or p95"
            )),
        }
    }
}

/// A trends request, validated: the window is `[start_ns, end_ns)` cut into
/// steps of `step_ns` (whole seconds) from `start_ns`.
#[derive(Clone, Debug)]
pub struct TrendsQuery {
    pub service: String,
    /// A span name; without it, every entry point of the service.
    pub operation: Option<String>,
    pub metric: Metric,
    pub start_ns: i64,
    pub end_ns: i64,
    pub step_ns: i64,
    /// How many steps past the window to forecast.
    pub horizon_steps: usize,
}

impl TrendsQuery {
    /// The number of steps in the window; the last may be cut short by the end.
    pub fn points(&self) -> usize {
        steps_in(self.end_ns - self.start_ns, self.step_ns)
    }

    fn step_seconds(&self) -> i64 {
        self.step_ns / NANOS_PER_SECOND
    }

    fn step_start(&self, index: usize) -> i64 {
        self.start_ns + index as i64 * self.step_ns
    }

    /// `date_bin` buckets of `column`, aligned to the window's start, as unix
    /// nanoseconds.
    fn bucket_sql(&self, column: &str) -> String {
        format!(
            "CAST(date_bin(INTERVAL '{} seconds', {column}, to_timestamp_nanos({})) AS BIGINT)",
            self.step_seconds(),
            self.start_ns
        )
    }

    fn window_sql(&self, column: &str) -> String {
        format!(
            "{column} >= {} AND {column} < {}",
            sql_time(self.start_ns),
            sql_time(self.end_ns)
        )
    }
}

/// How many steps of `step_ns` cover `window_ns`.
pub fn steps_in(window_ns: i64, step_ns: i64) -> usize {
    (window_ns.max(0) as u64).div_ceil(step_ns.max(1) as u64) as usize
}

/// A step giving about 120 points over `window_ns`: the round unit (1s, 5m,
/// 1h, …) nearest to window/120, at least a second.
pub fn default_step(window_ns: i64) -> i64 {
    const ROUND_SECONDS: [i64; 19] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
        604800,
    ];
    let ideal = window_ns as f64 / 120.0 / NANOS_PER_SECOND as f64;
    let distance = |seconds: i64| (seconds as f64 / ideal).ln().abs();
    let seconds = ROUND_SECONDS
        .into_iter()
        .min_by(|a, b| distance(*a).total_cmp(&distance(*b)))
        .unwrap_or(1);
    seconds * NANOS_PER_SECOND
}

/// The answer to a trends request, as the API serves it.
#[derive(Debug, Serialize)]
pub struct TrendsReport {
    pub service: String,
    pub operation: Option<String>,
    pub metric: Metric,
    pub start: String,
    pub end: String,
    pub step_seconds: i64,
    /// One point per step; `null` where nothing was measured (errors and p95
    /// of a step without requests).
    pub series: Vec<SeriesPoint>,
    pub forecast: Option<ForecastReport>,
    /// Why there is no forecast, or what limited it.
    pub forecast_note: Option<String>,
    pub anomalies: Vec<Anomaly>,
    pub log_volume: Vec<LogVolume>,
}

#[derive(Debug, Serialize)]
pub struct SeriesPoint {
    pub time: String,
    pub value: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ForecastReport {
    /// `MSTL(periods=[..]) + AutoETS` or `AutoETS`.
    pub model: String,
    pub level: f64,
    pub points: Vec<ForecastPoint>,
}

#[derive(Debug, Serialize)]
pub struct ForecastPoint {
    pub time: String,
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

#[derive(Debug, Serialize)]
pub struct Anomaly {
    pub time: String,
    pub value: f64,
    pub expected: f64,
    pub lower: f64,
    pub upper: f64,
}

#[derive(Debug, Serialize)]
pub struct LogVolume {
    pub time: String,
    pub severity: &'static str,
    pub count: i64,
}

/// Builds the trends report: the series and the log volume in SQL, then the
/// model on a blocking thread (fitting is CPU work of up to a few hundred
/// milliseconds, which must not hold a reactor thread).
pub async fn trends(engine: &QueryEngine, query: &TrendsQuery) -> Result<TrendsReport, QueryError> {
    let (values, log_volume) = tokio::try_join!(series(engine, query), log_volume(engine, query))?;
    let (horizon, bounds) = (query.horizon_steps, query.metric.bounds());
    let step_seconds = query.step_seconds();
    let series_values = values.clone();
    let modelled =
        tokio::task::spawn_blocking(move || model(&series_values, step_seconds, horizon, bounds))
            .await
            .map_err(|e| QueryError::Internal(format!("forecasting stopped: {e}")))?;
    Ok(report(query, &values, modelled, log_volume))
}

fn report(
    query: &TrendsQuery,
    values: &[Option<f64>],
    modelled: Modelled,
    log_volume: Vec<LogVolume>,
) -> TrendsReport {
    let time = |index: usize| rfc3339(query.step_start(index));
    let series = values
        .iter()
        .enumerate()
        .map(|(i, value)| SeriesPoint {
            time: time(i),
            value: *value,
        })
        .collect();
    let (forecast, anomalies) = match modelled.fit {
        None => (None, Vec::new()),
        Some(fit) => {
            let points = fit
                .forecast
                .iter()
                .enumerate()
                .map(|(i, band)| ForecastPoint {
                    time: time(values.len() + i),
                    value: band.value,
                    lower: band.lower,
                    upper: band.upper,
                })
                .collect();
            let anomalies = fit
                .anomalies
                .iter()
                .map(|outlier| Anomaly {
                    time: time(outlier.index),
                    value: outlier.value,
                    expected: outlier.expected.value,
                    lower: outlier.expected.lower,
                    upper: outlier.expected.upper,
                })
                .collect();
            let forecast = ForecastReport {
                model: fit.model,
                level: FORECAST_LEVEL,
                points,
            };
            (Some(forecast), anomalies)
        }
    };
    TrendsReport {
        service: query.service.clone(),
        operation: query.operation.clone(),
        metric: query.metric,
        start: rfc3339(query.start_ns),
        end: rfc3339(query.end_ns),
        step_seconds: query.step_seconds(),
        series,
        forecast,
        forecast_note: modelled.note,
        anomalies,
        log_volume,
    }
}

/// The metric for each step of the window. Requests are the service's entry
/// points: spans it serves (`SERVER`), messages it consumes (`CONSUMER`) and
/// roots it starts itself.
async fn series(engine: &QueryEngine, query: &TrendsQuery) -> Result<Vec<Option<f64>>, QueryError> {
    let mut conditions = vec![
        format!("service_name = {}", sql_string(&query.service)),
        "(kind IN ('SERVER', 'CONSUMER') OR parent_span_id IS NULL)".to_string(),
        query.window_sql("start_time"),
    ];
    if let Some(operation) = &query.operation {
        conditions.push(format!("name = {}", sql_string(operation)));
    }
    let sql = format!(
        "SELECT {bucket} AS bucket, {value} AS value FROM spans WHERE {conditions} \
         GROUP BY bucket ORDER BY bucket",
        bucket = query.bucket_sql("start_time"),
        value = query.metric.aggregate_sql(),
        conditions = conditions.join(" AND "),
    );
    let rows = engine.sql(&sql).await?;
    let mut measured = vec![None; query.points()];
    for batch in &rows.batches {
        let buckets = super::i64s(batch, "bucket")?;
        let values = super::f64s(batch, "value")?;
        for (bucket, value) in buckets.into_iter().zip(values) {
            if let Some(slot) = bucket.and_then(|b| step_index(query, b)) {
                measured[slot] = value;
            }
        }
    }
    Ok(series_values(query, measured))
}

/// Measured aggregates into the metric's series: a rate divides the step's
/// requests by its length (the last step may be cut short by the window's
/// end) and is 0 for a step without requests; error fractions and
/// percentiles of such a step stay unknown.
fn series_values(query: &TrendsQuery, measured: Vec<Option<f64>>) -> Vec<Option<f64>> {
    match query.metric {
        Metric::Errors | Metric::P95 => measured,
        Metric::Rate => measured
            .into_iter()
            .enumerate()
            .map(|(i, requests)| {
                let step_end = (query.step_start(i) + query.step_ns).min(query.end_ns);
                let seconds = (step_end - query.step_start(i)) as f64 / NANOS_PER_SECOND as f64;
                Some(requests.unwrap_or(0.0) / seconds)
            })
            .collect(),
    }
}

fn step_index(query: &TrendsQuery, bucket_ns: i64) -> Option<usize> {
    let offset = bucket_ns.checked_sub(query.start_ns)?;
    let index = usize::try_from(offset / query.step_ns).ok()?;
    (index < query.points()).then_some(index)
}

/// OpenTelemetry's severity levels: each name covers four severity numbers.
const SEVERITIES: [(&str, i32, i32); 6] = [
    ("TRACE", 1, 4),
    ("DEBUG", 5, 8),
    ("INFO", 9, 12),
    ("WARN", 13, 16),
    ("ERROR", 17, 20),
    ("FATAL", 21, 24),
];
/// Severity 0, and numbers outside OpenTelemetry's 1–24.
const UNSPECIFIED: &str = "UNSPECIFIED";

/// The service's log records per step and severity level, leaving out
/// (step, level) pairs without records. One row per step, a column per
/// level, so the rows stay within the step limit.
async fn log_volume(
    engine: &QueryEngine,
    query: &TrendsQuery,
) -> Result<Vec<LogVolume>, QueryError> {
    let mut counts: Vec<String> = SEVERITIES
        .iter()
        .map(|(name, low, high)| {
            format!(
                "sum(CASE WHEN severity_number BETWEEN {low} AND {high} THEN 1 ELSE 0 END) AS \"{name}\""
            )
        })
        .collect();
    counts.push(format!(
        "sum(CASE WHEN severity_number BETWEEN 1 AND 24 THEN 0 ELSE 1 END) AS \"{UNSPECIFIED}\""
    ));
    let sql = format!(
        "SELECT {bucket} AS bucket, {counts} FROM logs WHERE service_name = {service} AND {window} \
         GROUP BY bucket ORDER BY bucket",
        bucket = query.bucket_sql("time"),
        counts = counts.join(", "),
        service = sql_string(&query.service),
        window = query.window_sql("time"),
    );
    let names: Vec<&'static str> = SEVERITIES
        .iter()
        .map(|(name, _, _)| *name)
        .chain([UNSPECIFIED])
        .collect();
    let rows = engine.sql(&sql).await?;
    let mut volume = Vec::new();
    for batch in &rows.batches {
        let buckets = super::i64s(batch, "bucket")?;
        let columns = names
            .iter()
            .map(|name| super::i64s(batch, name))
            .collect::<Result<Vec<_>, _>>()?;
        for (row, bucket) in buckets.into_iter().enumerate() {
            let Some(index) = bucket.and_then(|b| step_index(query, b)) else {
                continue;
            };
            for (name, counts) in names.iter().zip(&columns) {
                let count = counts[row].unwrap_or(0);
                if count > 0 {
                    volume.push(LogVolume {
                        time: rfc3339(query.step_start(index)),
                        severity: name,
                        count,
                    });
                }
            }
        }
    }
    Ok(volume)
}

/// A value with its prediction interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Band {
    pub value: f64,
    pub lower: f64,
    pub upper: f64,
}

impl Band {
    fn clamp(self, (low, high): (f64, f64)) -> Band {
        Band {
            value: self.value.clamp(low, high),
            lower: self.lower.clamp(low, high),
            upper: self.upper.clamp(low, high),
        }
    }

    fn is_finite(&self) -> bool {
        self.value.is_finite() && self.lower.is_finite() && self.upper.is_finite()
    }

    /// Whether `value` lies outside the band by more than rounding: a
    /// constant series has a band of width zero that its own values touch.
    fn excludes(&self, value: f64) -> bool {
        let slack = 1e-9 * value.abs().max(1.0);
        value < self.lower - slack || value > self.upper + slack
    }
}

/// What the model made of a series.
#[derive(Debug)]
pub struct Modelled {
    /// `None` when no model could be fitted; `note` says why.
    pub fit: Option<ModelFit>,
    pub note: Option<String>,
}

#[derive(Debug)]
pub struct ModelFit {
    pub model: String,
    /// The steps after the series, at [`FORECAST_LEVEL`].
    pub forecast: Vec<Band>,
    /// Measured steps outside the in-sample interval at [`ANOMALY_LEVEL`].
    pub anomalies: Vec<Outlier>,
}

/// A measured point the model did not expect.
#[derive(Debug)]
pub struct Outlier {
    /// The step's index in the series.
    pub index: usize,
    pub value: f64,
    /// What the model expected there, with its interval.
    pub expected: Band,
}

/// Fits a model to `values` (one per step of `step_seconds`, `None` where
/// nothing was measured) and forecasts `horizon` steps past them, clamped to
/// `bounds`. Gaps are interpolated for fitting only; anomalies are only ever
/// measured points.
pub fn model(
    values: &[Option<f64>],
    step_seconds: i64,
    horizon: usize,
    bounds: (f64, f64),
) -> Modelled {
    let measured = values.iter().flatten().count();
    if measured < MIN_POINTS {
        return Modelled {
            fit: None,
            note: Some(format!(
                "too little data for a forecast: {measured} measured points of {}, at least {MIN_POINTS} needed",
                values.len()
            )),
        };
    }
    let (offset, training) = fill_gaps(values);
    let periods = seasonal_periods(step_seconds, measured);
    let note = periods.is_empty().then(|| {
        let daily = DAY_SECONDS / step_seconds.max(1);
        format!(
            "no seasonality modelled: {measured} measured points cover fewer than two daily cycles ({} points)",
            2 * daily
        )
    });
    match fit_and_predict(&training, &periods, horizon) {
        Err(why) => Modelled {
            fit: None,
            note: Some(format!("no model could be fitted: {why}")),
        },
        Ok((forecast, in_sample)) => Modelled {
            fit: Some(ModelFit {
                model: model_name(&periods),
                forecast: forecast.into_iter().map(|b| b.clamp(bounds)).collect(),
                anomalies: anomalies(values, offset, &in_sample, bounds),
            }),
            note,
        },
    }
}

fn model_name(periods: &[usize]) -> String {
    if periods.is_empty() {
        "AutoETS".to_string()
    } else {
        format!("MSTL(periods={periods:?}) + AutoETS")
    }
}

/// The series from its first measured point, with gaps filled by linear
/// interpolation and a missing tail held at the last measured value (the
/// interpolator leaves both ends as they are). Returns where it starts.
fn fill_gaps(values: &[Option<f64>]) -> (usize, Vec<f64>) {
    let first = values.iter().position(Option::is_some).unwrap_or(0);
    let mut filled: Vec<f64> = values[first..]
        .iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect();
    // The interpolator's `transform` cannot fail: it needs no fitting.
    let _ = LinearInterpolator::new().transform(&mut filled);
    let mut last = f64::NAN;
    for value in &mut filled {
        if value.is_nan() {
            *value = last;
        } else {
            last = *value;
        }
    }
    (first, filled)
}

/// The seasonal cycles, in steps, that `measured` points of `step_seconds`
/// can show: a day when they cover two; otherwise an hour when they cover two
/// of those. Not both: over days at fine steps, an hourly component fitted
/// to a series without one was measured to flag many more false anomalies.
pub fn seasonal_periods(step_seconds: i64, measured: usize) -> Vec<usize> {
    [DAY_SECONDS, HOUR_SECONDS]
        .into_iter()
        .map(|cycle| (cycle as f64 / step_seconds.max(1) as f64).round() as usize)
        .find(|&period| period >= MIN_STEPS_PER_CYCLE && measured >= 2 * period)
        .into_iter()
        .collect()
}

/// Fits MSTL + AutoETS over `periods` (plain AutoETS without any) and returns
/// the forecast and the in-sample bands. `augurs` has unimplemented branches
/// that panic; a panic there is a failed fit, not a failed request.
fn fit_and_predict(
    training: &[f64],
    periods: &[usize],
    horizon: usize,
) -> Result<(Vec<Band>, Vec<Band>), String> {
    let fit = || {
        let trend = AutoETS::non_seasonal();
        if periods.is_empty() {
            return predict(&trend, training, horizon);
        }
        // Robust LOESS keeps a spike out of the seasonal shape, where it
        // would make the same hour of every other day look anomalous.
        let mut stl = stlrs::params();
        stl.robust(true);
        let mut mstl = stlrs::MstlParams::new();
        mstl.stl_params(stl);
        let model = MSTLModel::new(periods.to_vec(), trend.into_trend_model()).mstl_params(mstl);
        predict(&model, training, horizon)
    };
    let (forecast, in_sample) = catch_unwind(AssertUnwindSafe(fit))
        .map_err(|_| "the model failed on this series".to_string())??;
    if forecast.iter().any(|band| !band.is_finite()) {
        return Err("the forecast is not a finite number".to_string());
    }
    Ok((forecast, in_sample))
}

fn predict<M: Fit>(
    model: &M,
    training: &[f64],
    horizon: usize,
) -> Result<(Vec<Band>, Vec<Band>), String> {
    let fitted = model.fit(training).map_err(|e| e.to_string())?;
    let forecast = fitted
        .predict(horizon, FORECAST_LEVEL)
        .map_err(|e| e.to_string())?;
    let in_sample = fitted
        .predict_in_sample(ANOMALY_LEVEL)
        .map_err(|e| e.to_string())?;
    Ok((bands(forecast)?, bands(in_sample)?))
}

fn bands(forecast: Forecast) -> Result<Vec<Band>, String> {
    let intervals = forecast
        .intervals
        .ok_or("the model gives no prediction interval")?;
    Ok(forecast
        .point
        .iter()
        .zip(&intervals.lower)
        .zip(&intervals.upper)
        .map(|((&value, &lower), &upper)| Band {
            value,
            lower,
            upper,
        })
        .collect())
}

/// Measured points outside their in-sample band and [`MIN_DEVIATION`] away
/// from what was expected; `offset` is where the fitted series starts in
/// `values`. Steps whose band is not a number (the first of some models)
/// cannot be judged.
fn anomalies(
    values: &[Option<f64>],
    offset: usize,
    in_sample: &[Band],
    bounds: (f64, f64),
) -> Vec<Outlier> {
    let measured: Vec<f64> = values.iter().flatten().map(|v| v.abs()).collect();
    let level = measured.iter().sum::<f64>() / measured.len().max(1) as f64;
    in_sample
        .iter()
        .enumerate()
        .filter_map(|(i, band)| {
            let index = offset + i;
            let value = values.get(index).copied().flatten()?;
            let unexpected = band.is_finite()
                && band.excludes(value)
                && (value - band.value).abs() > MIN_DEVIATION * level;
            unexpected.then(|| Outlier {
                index,
                value,
                expected: band.clamp(bounds),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 300;
    const PER_DAY: usize = 288;

    /// A deterministic stand-in for Gaussian noise: the sum of four
    /// xorshift uniforms, centred (standard deviation ≈ 0.58).
    struct Noise(u64);

    impl Noise {
        fn uniform(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }

        fn next(&mut self) -> f64 {
            (0..4).map(|_| self.uniform()).sum::<f64>() - 2.0
        }
    }

    /// Requests per second with a daily cycle (±40 around 100), growth of 10
    /// a day and noise of standard deviation ≈ 3.5, every 5 minutes.
    fn daily_traffic(days: usize) -> Vec<f64> {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        (0..days * PER_DAY)
            .map(|i| {
                let day = (i * STEP as usize) as f64 / DAY_SECONDS as f64;
                100.0 + 40.0 * (std::f64::consts::TAU * day).sin() + 10.0 * day + 6.0 * noise.next()
            })
            .collect()
    }

    fn measured(values: &[f64]) -> Vec<Option<f64>> {
        values.iter().copied().map(Some).collect()
    }

    const RATE: (f64, f64) = (0.0, f64::INFINITY);

    #[test]
    fn a_week_of_daily_traffic_forecasts_the_next_day_within_its_interval_with_few_false_anomalies()
    {
        let traffic = daily_traffic(8);
        let (week, next_day) = traffic.split_at(7 * PER_DAY);
        let modelled = model(&measured(week), STEP, PER_DAY, RATE);
        assert_eq!(modelled.note, None);
        let fit = modelled.fit.expect("a week of data is enough");
        assert_eq!(fit.model, "MSTL(periods=[288]) + AutoETS");
        assert_eq!(fit.forecast.len(), PER_DAY);
        let mape = next_day
            .iter()
            .zip(&fit.forecast)
            .map(|(actual, band)| ((actual - band.value) / actual).abs())
            .sum::<f64>()
            / PER_DAY as f64;
        // Measured: 0.0176 (the noise alone is ~2.5% of the level).
        assert!(mape < 0.03, "MAPE {mape}");
        let inside = next_day
            .iter()
            .zip(&fit.forecast)
            .filter(|(actual, band)| !band.excludes(**actual))
            .count();
        // Measured: 254 of 288 (88%); the interval leaves out the seasonal
        // estimate's own uncertainty.
        assert!(
            inside as f64 >= 0.8 * PER_DAY as f64,
            "{inside} of {PER_DAY} inside"
        );
        assert!(fit
            .forecast
            .iter()
            .all(|b| b.lower <= b.value && b.value <= b.upper));
        // Ordinary noise beyond the 99.9% band. Measured: 8 of 2016 points.
        assert!(fit.anomalies.len() <= 12, "{:?}", fit.anomalies);
    }

    #[test]
    fn clear_spikes_are_the_anomalies() {
        let mut week = daily_traffic(7);
        let spikes = [300, 700, 1111, 1500, 1900];
        for &i in &spikes {
            week[i] += 80.0;
        }
        let fit = model(&measured(&week), STEP, 12, RATE).fit.expect("fitted");
        let flagged: Vec<usize> = fit.anomalies.iter().map(|o| o.index).collect();
        let hits = flagged.iter().filter(|i| spikes.contains(i)).count();
        let recall = hits as f64 / spikes.len() as f64;
        let precision = hits as f64 / flagged.len() as f64;
        // Measured: recall 1.0, precision 1.0.
        assert_eq!(recall, 1.0, "flagged {flagged:?}");
        assert!(precision >= 0.8, "flagged {flagged:?}");
        for outlier in &fit.anomalies {
            assert_eq!(outlier.value, week[outlier.index]);
            assert!(outlier.value > outlier.expected.upper, "{outlier:?}");
        }
    }

    #[test]
    fn rounding_in_a_smooth_series_is_not_an_anomaly() {
        // Whole requests per 5 minutes of a smooth daily cycle: the model fits
        // it so closely that its band is narrower than the rounding.
        let values: Vec<Option<f64>> = (0..7 * PER_DAY)
            .map(|i| {
                let day = i as f64 / PER_DAY as f64;
                let requests = (500.0 * (1.0 + 0.5 * (std::f64::consts::TAU * day).sin())).round();
                Some(requests / STEP as f64)
            })
            .collect();
        let fit = model(&values, STEP, 12, RATE).fit.expect("fitted");
        assert!(fit.anomalies.is_empty(), "{:?}", fit.anomalies);
    }

    #[test]
    fn too_little_data_gives_a_note_instead_of_a_forecast() {
        let values = [Some(1.0), None, Some(2.0), Some(1.5), None, Some(3.0)];
        let modelled = model(&values, 60, 5, RATE);
        assert!(modelled.fit.is_none());
        assert_eq!(
            modelled.note.as_deref(),
            Some("too little data for a forecast: 4 measured points of 6, at least 10 needed")
        );
    }

    #[test]
    fn a_short_window_is_forecast_without_seasonality_and_says_so() {
        let values: Vec<Option<f64>> = (0..60).map(|i| Some(10.0 + (i % 3) as f64)).collect();
        let modelled = model(&values, 60, 12, RATE);
        let fit = modelled
            .fit
            .expect("60 points are enough without seasonality");
        assert_eq!(fit.model, "AutoETS");
        assert_eq!(fit.forecast.len(), 12);
        assert_eq!(
            modelled.note.as_deref(),
            Some("no seasonality modelled: 60 measured points cover fewer than two daily cycles (2880 points)")
        );
    }

    #[test]
    fn a_constant_series_forecasts_itself_without_anomalies() {
        let values = vec![Some(5.0); 300];
        let fit = model(&values, 60, 10, RATE).fit.expect("fitted");
        assert!(fit.anomalies.is_empty(), "{:?}", fit.anomalies);
        for band in &fit.forecast {
            assert!((band.value - 5.0).abs() < 1e-6, "{band:?}");
            assert!(band.is_finite());
        }
        let zeros = model(&vec![Some(0.0); 300], 60, 10, (0.0, 1.0));
        let fit = zeros.fit.expect("fitted");
        let json = serde_json::to_string(
            &fit.forecast
                .iter()
                .map(|b| [b.value, b.lower, b.upper])
                .collect::<Vec<_>>(),
        )
        .unwrap();
        assert!(!json.contains("null") && !json.contains("NaN"), "{json}");
        assert!(fit.anomalies.is_empty());
    }

    #[test]
    fn gaps_are_interpolated_for_the_fit_and_bounds_clamp_the_forecast() {
        // An error rate near zero with steps that had no requests.
        let values: Vec<Option<f64>> = (0..120)
            .map(|i| (i % 7 != 3).then_some(if i % 11 == 0 { 0.02 } else { 0.0 }))
            .collect();
        let fit = model(&values, 60, 30, (0.0, 1.0)).fit.expect("fitted");
        for band in &fit.forecast {
            assert!(0.0 <= band.lower && band.upper <= 1.0, "{band:?}");
        }
        for outlier in &fit.anomalies {
            assert_eq!(values[outlier.index], Some(outlier.value), "{outlier:?}");
        }
        assert_eq!(
            fill_gaps(&[None, Some(1.0), None, Some(3.0), None]),
            (1, vec![1.0, 2.0, 3.0, 3.0])
        );
    }

    #[test]
    fn seasonality_is_daily_when_two_days_are_measured_else_hourly() {
        assert_eq!(seasonal_periods(300, 7 * 288), vec![288]);
        assert_eq!(seasonal_periods(3600, 7 * 24), vec![24]);
        // A day at 10-minute steps: too short for days, 24 hours.
        assert_eq!(seasonal_periods(600, 144), vec![6]);
        // An hour of minutes: neither.
        assert!(seasonal_periods(60, 60).is_empty());
        // Hourly steps over a day: an hour has no shape.
        assert!(seasonal_periods(3600, 24).is_empty());
    }

    #[test]
    fn the_default_step_gives_about_120_round_points() {
        let s = NANOS_PER_SECOND;
        assert_eq!(default_step(24 * 3600 * s), 600 * s);
        assert_eq!(default_step(7 * 24 * 3600 * s), 3600 * s);
        assert_eq!(default_step(3600 * s), 30 * s);
        assert_eq!(default_step(10 * s), s);
        assert_eq!(steps_in(3600 * s, 60 * s), 60);
        assert_eq!(steps_in(3601 * s, 60 * s), 61);
    }

    #[test]
    fn metrics_parse_and_unknown_ones_list_the_valid() {
        assert_eq!("p95".parse::<Metric>(), Ok(Metric::P95));
        assert_eq!(
            "latency".parse::<Metric>().unwrap_err(),
            "metric=\"latency\" is not a metric: use rate, errors or p95"
        );
    }
}
