//! Active health checks: a task per target probes `GET http_path` every
//! `interval` and flips the target's health after enough consecutive
//! successes or failures. The tasks live as long as the configuration that
//! started them.

use std::sync::Arc;

use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::config::ProbeType;
use crate::tls::UpstreamTls;
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
    /// Starts probing every target of `upstream` that has active checks;
    /// an error says why `https` probes cannot be set up.
    pub(crate) fn watch(
        &mut self,
        upstream: &Arc<Upstream>,
    ) -> Result<(), weft_access::tls::TlsError> {
        let Some(active) = &upstream.active else {
            return Ok(());
        };
        let https = active.probe_type == ProbeType::Https;
        let tls = https.then(|| {
            UpstreamTls::new(
                active.https_verify_certificate,
                active.https_ca_file.as_ref(),
                active.https_sni.as_deref(),
            )
            .with_client_identity(
                active.https_client_cert_file.as_ref(),
                active.https_client_key_file.as_ref(),
            )
        });
        let connector = crate::tls::connector(tls.as_ref(), active.timeout)?;
        let scheme = if https { "https" } else { "http" };
        let client: Client<_, Empty<bytes::Bytes>> = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .build(connector);
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
                    let uri = format!("{scheme}://{}{}", target.address, active.http_path);
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
        Ok(())
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
