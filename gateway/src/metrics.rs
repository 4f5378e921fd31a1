//! The gateway's own metrics, served at `/metrics` on the admin port.
//!
//! Naming rule (as in the rest of weft): `weft_<component>_<what>_<unit>`,
//! counters ending in `_total`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::server::Runtime;
use weft_proxy::{TelemetryCollector, TelemetryCounters};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    service: Arc<str>,
    route: Arc<str>,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    service: Arc<str>,
    route: Arc<str>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
}

/// Request counters and latency histograms, plus collectors that read
/// upstream health and telemetry counters when scraped.
pub(crate) struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    reloads: Family<ReloadLabels, Counter>,
    /// The service and route label of a request no route matched.
    unmatched: Arc<str>,
}

impl Metrics {
    pub(crate) fn new(runtime: Arc<ArcSwap<Runtime>>, telemetry: Arc<TelemetryCounters>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "weft_gateway_requests",
            "Requests answered, by service, route and status code (route \"\" when none matched)",
            requests.clone(),
        );
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "weft_gateway_request_duration_seconds",
            "Time from the request's arrival to its response headers",
            latency.clone(),
        );
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "weft_gateway_config_reloads",
            "Configuration reloads, applied or rejected",
            reloads.clone(),
        );
        registry.register_collector(Box::new(StateCollector { runtime }));
        registry.register_collector(Box::new(TelemetryCollector::new("weft_gateway", telemetry)));
        Self {
            registry,
            requests,
            latency,
            reloads,
            unmatched: Arc::from(""),
        }
    }

    /// Counts a request answered with `code`; `names` are its (service, route),
    /// none when no route matched. Labels share the route's names.
    pub(crate) fn observe(
        &self,
        names: Option<(&Arc<str>, &Arc<str>)>,
        code: u16,
        elapsed: Duration,
    ) {
        let (service, route) = names.unwrap_or((&self.unmatched, &self.unmatched));
        let labels = RouteLabels {
            service: service.clone(),
            route: route.clone(),
        };
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
        self.requests
            .get_or_create(&RequestLabels {
                service: labels.service,
                route: labels.route,
                code,
            })
            .inc();
    }

    pub(crate) fn reloaded(&self, applied: bool) {
        let outcome = if applied { "applied" } else { "rejected" };
        self.reloads.get_or_create(&ReloadLabels { outcome }).inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}

struct StateCollector {
    runtime: Arc<ArcSwap<Runtime>>,
}

impl std::fmt::Debug for StateCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StateCollector")
    }
}

impl Collector for StateCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let runtime = self.runtime.load();
        let mut healthy = encoder.encode_descriptor(
            "weft_gateway_upstream_target_healthy",
            "1 when the target receives traffic, 0 when health checks took it out",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for upstream in runtime.upstreams.values() {
            for target in upstream.health() {
                let labels = [
                    ("upstream", upstream.name.as_str()),
                    ("target", target.target.as_str()),
                ];
                ConstGauge::new(i64::from(target.health == "HEALTHY"))
                    .encode(healthy.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
