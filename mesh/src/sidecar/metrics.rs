//! The sidecar's own metrics, served at `/metrics` on its admin port.
//!
//! Naming rule (as in the rest of weft): `weft_<component>_<what>_<unit>`,
//! counters ending in `_total`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use weft_proxy::{TelemetryCollector, TelemetryCounters};

use crate::api::unix_seconds;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    direction: &'static str,
    peer: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    kind: &'static str,
    peer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    direction: &'static str,
    peer: String,
    outcome: &'static str,
}

pub(crate) struct SidecarMetrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<DirectionLabels, Histogram>,
    denied: Family<DenialLabels, Counter>,
    connections: Family<ConnectionLabels, Counter>,
    handshake_failures: Counter,
    certificate_expiry: Gauge,
    rotations: Counter,
    config_updates: Counter,
}

impl SidecarMetrics {
    /// `telemetry` outlives telemetry restarts, so it is reported from here.
    pub(crate) fn new(telemetry: Arc<TelemetryCounters>) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "weft_mesh_sidecar_requests",
            "HTTP requests, by direction (inbound, outbound), peer service and status code",
            requests.clone(),
        );
        let latency = Family::<DirectionLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register(
            "weft_mesh_sidecar_request_duration_seconds",
            "Time from a request's arrival to its response headers",
            latency.clone(),
        );
        let denied = Family::<DenialLabels, Counter>::default();
        registry.register(
            "weft_mesh_sidecar_denied",
            "Requests and connections refused, by policy kind (traffic_permission, authorization) and caller",
            denied.clone(),
        );
        let connections = Family::<ConnectionLabels, Counter>::default();
        registry.register(
            "weft_mesh_sidecar_tcp_connections",
            "Tunnelled TCP connections, by direction, peer service and outcome",
            connections.clone(),
        );
        let handshake_failures = Counter::default();
        registry.register(
            "weft_mesh_sidecar_tls_handshake_failures",
            "Inbound connections refused during the mTLS handshake (no or foreign client certificate)",
            handshake_failures.clone(),
        );
        let certificate_expiry = Gauge::default();
        registry.register(
            "weft_mesh_sidecar_certificate_expiry_timestamp_seconds",
            "When the current workload certificate expires (unix seconds)",
            certificate_expiry.clone(),
        );
        let rotations = Counter::default();
        registry.register(
            "weft_mesh_sidecar_certificate_rotations",
            "Workload certificates renewed after the first",
            rotations.clone(),
        );
        let config_updates = Counter::default();
        registry.register(
            "weft_mesh_sidecar_config_updates",
            "Config versions received from the control plane after the first",
            config_updates.clone(),
        );
        registry.register_collector(Box::new(TelemetryCollector::new(
            "weft_mesh_sidecar",
            telemetry,
        )));
        Self {
            registry,
            requests,
            latency,
            denied,
            connections,
            handshake_failures,
            certificate_expiry,
            rotations,
            config_updates,
        }
    }

    pub(crate) fn observe(
        &self,
        direction: &'static str,
        peer: &str,
        code: u16,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels {
                direction,
                peer: peer.to_string(),
                code,
            })
            .inc();
        self.latency
            .get_or_create(&DirectionLabels { direction })
            .observe(elapsed.as_secs_f64());
    }

    pub(crate) fn denied(&self, kind: &'static str, peer: &str) {
        self.denied
            .get_or_create(&DenialLabels {
                kind,
                peer: peer.to_string(),
            })
            .inc();
    }

    pub(crate) fn connection(&self, direction: &'static str, peer: &str, outcome: &'static str) {
        self.connections
            .get_or_create(&ConnectionLabels {
                direction,
                peer: peer.to_string(),
                outcome,
            })
            .inc();
    }

    pub(crate) fn handshake_failed(&self) {
        self.handshake_failures.inc();
    }

    pub(crate) fn certificate_issued(&self, not_after: SystemTime) {
        self.certificate_expiry.set(unix_seconds(not_after) as i64);
    }

    pub(crate) fn rotated(&self) {
        self.rotations.inc();
    }

    pub(crate) fn config_updated(&self) {
        self.config_updates.inc();
    }

    pub(crate) fn render(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String");
        text
    }
}
