//! Active health checks: a task per target probes `GET http_path` every
//! `interval` and flips the target's health after enough consecutive
//! successes or failures. The tasks live as long as the configuration that
//! started them.

use std::sync::Arc;

use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::upstream::{Target, Upstream};

/// Probe tasks of one configuration; dropping it stops them.
#[derive(Default)]
pub(crate) struct HealthCheckers(Vec<tokio::task::AbortHandle>);

impl Drop for HealthCheckers {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl HealthCheckers {
    /// Starts probing every target of `upstream` that has active checks.
    pub(crate) fn watch(&mut self, upstream: &Arc<Upstream>) {
        let Some(active) = &upstream.active else {
            return;
        };
        let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build_http();
        for target in &upstream.targets {
            let (upstream, target, client, active) = (
                upstream.clone(),
                target.clone(),
                client.clone(),
                active.clone(),
            );
            let task = tokio::spawn(async move {
                let mut ticks = tokio::time::interval(active.interval);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let uri = format!("http://{}{}", target.address, active.http_path);
                    let Ok(uri) = uri.parse::<http::Uri>() else {
                        return;
                    };
                    let probe = tokio::time::timeout(active.timeout, client.get(uri)).await;
                    let ok = matches!(&probe, Ok(Ok(response)) if active.healthy_statuses.contains(&response.status().as_u16()));
                    record(
                        &upstream,
                        &target,
                        ok,
                        active.healthy_successes,
                        active.unhealthy_failures,
                    );
                }
            });
            self.0.push(task.abort_handle());
        }
    }
}

fn record(upstream: &Upstream, target: &Target, ok: bool, successes: u32, failures: u32) {
    let mut streak = target.probe_streak.lock();
    *streak = match (ok, *streak) {
        (true, s) if s > 0 => s + 1,
        (true, _) => 1,
        (false, s) if s < 0 => s - 1,
        (false, _) => -1,
    };
    if ok && *streak >= i64::from(successes) && target.set_healthy(true) {
        tracing::info!(upstream = %upstream.name, target = %target.address, "target healthy again (active checks)");
    }
    if !ok && -*streak >= i64::from(failures) && target.set_healthy(false) {
        tracing::warn!(upstream = %upstream.name, target = %target.address, "target taken out by active health checks");
    }
}
