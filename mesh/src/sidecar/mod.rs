//! The sidecar: a proxy beside one service instance.
//!
//! Its [inbound] listener terminates mTLS in front of the app, enforces
//! traffic permissions and Rego authorization, and forwards to the app in
//! plain text on loopback. Each [outbound] listener takes the app's plain
//! calls to one service and carries them over mTLS (HTTP/2, or a TCP tunnel)
//! to a sidecar of that service, checking it is who it should be.
//!
//! From the control plane it gets a certificate (renewed at 70% of its
//! lifetime), and its config by long poll; when the control plane is away it
//! keeps serving with what it last had.

mod admin;
mod app;
mod control_plane;
mod inbound;
mod metrics;
mod outbound;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rcgen::{CertificateParams, KeyPair};
use tokio::net::TcpListener;
use tokio::sync::watch;
use weft_proxy::{PerWorker, Telemetry, TelemetryCounters, Workers};

use crate::api::{unix_seconds, AppProtocol, Registration, ServiceEndpoints, SidecarConfig};
use crate::config::{is_service_name, TracingPolicy};
use crate::policy::CompiledPolicies;
use crate::spiffe::SpiffeId;
use crate::tls::MeshTls;

use self::app::AppConnections;
use self::control_plane::{CallError, ControlPlaneClient};
use self::metrics::SidecarMetrics;
use self::outbound::Destination;

pub(crate) type Body = axum::body::Body;

/// An HTTP/2 client connection over `io` to `peer`, pinged every 30 s so a
/// peer that vanished is noticed, driven by a task of its own; `what` names
/// it in the log line when it ends.
pub(crate) async fn http2_connection<I>(
    io: I,
    peer: SocketAddr,
    what: &'static str,
) -> hyper::Result<hyper::client::conn::http2::SendRequest<Body>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(hyper_util::rt::TokioIo::new(io))
            .await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%peer, error = %e, "{what} connection closed");
        }
    });
    Ok(sender)
}

/// An HTTP/1.1 client connection over `io` to `peer` that a `101` hands
/// over to the switched protocol, driven by a task of its own; `what` names
/// it in the log line when it ends.
pub(crate) async fn http1_connection<I>(
    io: I,
    peer: SocketAddr,
    what: &'static str,
) -> hyper::Result<hyper::client::conn::http1::SendRequest<Body>>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io)).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(%peer, error = %e, "{what} connection closed");
        }
    });
    Ok(sender)
}

/// How often a sidecar tells the control plane it is alive.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// How long a config poll waits for a change.
const POLL_WAIT: Duration = Duration::from_secs(30);

/// How to run a sidecar.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// The service this sidecar stands beside, e.g. `crm-conductor`.
    pub service: String,
    /// Base URL of the control plane, e.g. `http://127.0.0.1:5681`, or
    /// `https://…` when it serves TLS.
    pub control_plane: String,
    /// PEM CA certificate(s) to verify an `https://` control plane with.
    pub control_plane_ca: Option<Vec<u8>>,
    /// The dataplane token the control plane gave for this service
    /// (`weft mesh token create --service …`); needed unless its
    /// authentication is off.
    pub token: Option<String>,
    /// Where the mTLS inbound listener listens.
    pub inbound: SocketAddr,
    /// Where other sidecars reach the inbound listener (default: `inbound`).
    pub advertise: Option<SocketAddr>,
    /// The zone this instance runs in: its calls go to sidecars of the same
    /// zone while there are any.
    pub zone: Option<String>,
    /// The app's own port, on loopback.
    pub app: SocketAddr,
    pub app_protocol: AppProtocol,
    /// A plain-text listener per service the app calls.
    pub outbound: Vec<(String, SocketAddr)>,
    /// `/metrics` and the sidecar's state.
    pub admin: SocketAddr,
    /// Threads serving the inbound and outbound listeners' connections, each
    /// with its own event loop (`weft_proxy::Workers`).
    pub workers: usize,
}

/// Why a sidecar could not start.
#[derive(Debug, thiserror::Error)]
pub enum SidecarError {
    #[error("{0}")]
    Invalid(String),
    #[error("cannot start the sidecar's worker threads: {0}")]
    Workers(std::io::Error),
    #[error("cannot listen on {addr} for {what}: {source}")]
    Listen {
        what: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A sidecar with its listeners bound, its identity and its first config.
pub struct Sidecar {
    shared: Arc<Shared>,
    inbound: TcpListener,
    outbound: Vec<(Arc<Destination>, TcpListener)>,
    admin: TcpListener,
    workers: Workers,
}

pub(crate) struct Shared {
    pub(crate) service: String,
    pub(crate) app: SocketAddr,
    /// `app` as the authority of the URIs sent to it.
    pub(crate) app_authority: http::uri::Authority,
    pub(crate) app_protocol: AppProtocol,
    instance: String,
    advertise: SocketAddr,
    pub(crate) zone: Option<String>,
    control_plane: ControlPlaneClient,
    pub(crate) tls: ArcSwap<MeshTls>,
    pub(crate) config: ArcSwap<Snapshot>,
    pub(crate) telemetry: ArcSwap<Telemetry>,
    telemetry_counters: Arc<TelemetryCounters>,
    pub(crate) metrics: SidecarMetrics,
    /// Each worker's connections to the app.
    pub(crate) app_connections: PerWorker<AppConnections>,
    pub(crate) outbound: BTreeMap<String, SocketAddr>,
}

/// One config version, compiled.
pub(crate) struct Snapshot {
    pub(crate) version: String,
    pub(crate) mesh: String,
    pub(crate) services: BTreeMap<String, ServiceEndpoints>,
    pub(crate) policies: CompiledPolicies,
}

impl Sidecar {
    /// Binds every listener (a busy port fails here, naming it), then waits
    /// for the control plane to give this sidecar an identity and a config.
    pub async fn start(options: SidecarOptions) -> Result<Self, SidecarError> {
        if !is_service_name(&options.service) {
            return Err(SidecarError::Invalid(format!(
                "--service {:?} is not a service name (letters, digits, '-', '_', '.')",
                options.service
            )));
        }
        if options.advertise.is_none() && options.inbound.ip().is_unspecified() {
            return Err(SidecarError::Invalid(
                "--inbound listens on every interface: say with --advertise where other sidecars reach it".to_string(),
            ));
        }
        if let Some(zone) = options.zone.as_deref().filter(|z| !is_service_name(z)) {
            return Err(SidecarError::Invalid(format!(
                "--zone {zone:?} is not a zone name (letters, digits, '-', '_', '.')"
            )));
        }
        let mut names = std::collections::HashSet::new();
        for (name, _) in &options.outbound {
            if !is_service_name(name) || !names.insert(name) {
                return Err(SidecarError::Invalid(format!(
                    "--outbound {name:?}: a service name, once"
                )));
            }
        }
        let bind = |what: String, addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| SidecarError::Listen { what, addr, source })
        };
        let inbound = bind("the inbound listener".to_string(), options.inbound).await?;
        let advertise = match options.advertise {
            Some(advertise) => advertise,
            None => inbound
                .local_addr()
                .map_err(|source| SidecarError::Listen {
                    what: "the inbound listener".to_string(),
                    addr: options.inbound,
                    source,
                })?,
        };
        let admin = bind("the admin API".to_string(), options.admin).await?;
        let mut outbound_listeners = Vec::new();
        for (service, addr) in &options.outbound {
            outbound_listeners.push((
                service.clone(),
                bind(format!("the outbound listener of {service}"), *addr).await?,
            ));
        }

        let control_plane = ControlPlaneClient::new(
            &options.control_plane,
            options.control_plane_ca.as_deref(),
            options.token.as_deref(),
        )?;
        let tls = wait_for("a workload certificate", || {
            obtain_identity(&control_plane, &options.service, 0)
        })
        .await?;
        let first = wait_for("the mesh config", || {
            control_plane.config(None, Duration::ZERO)
        })
        .await?
        .ok_or_else(|| SidecarError::Invalid("no config".to_string()))?;
        let snapshot = Snapshot::compile(first).map_err(SidecarError::Invalid)?;
        let telemetry_counters = Arc::new(TelemetryCounters::default());
        let telemetry = start_telemetry(
            &options.service,
            snapshot.policies.tracing(),
            &telemetry_counters,
        )
        .map_err(SidecarError::Invalid)?;
        let workers = options.workers.max(1);
        // Connections per worker: a connection's task runs where it was
        // opened, so sharing them would send requests across threads.
        let app_connections = PerWorker::new(workers, |_| {
            AppConnections::new(options.app, options.app_protocol)
        });
        let metrics = SidecarMetrics::new(telemetry_counters.clone());
        metrics.certificate_issued(tls.not_after);
        let instance = format!(
            "{}-{}",
            options.service,
            advertise.to_string().replace([':', '.', '[', ']'], "-")
        );
        let shared = Arc::new(Shared {
            service: options.service.clone(),
            app: options.app,
            app_authority: http::uri::Authority::try_from(options.app.to_string())
                .expect("a socket address is a URI authority"),
            app_protocol: options.app_protocol,
            instance,
            advertise,
            zone: options.zone.clone(),
            control_plane,
            tls: ArcSwap::from_pointee(tls),
            config: ArcSwap::from_pointee(snapshot),
            telemetry: ArcSwap::from_pointee(telemetry),
            telemetry_counters,
            metrics,
            app_connections,
            outbound: outbound_listeners
                .iter()
                .filter_map(|(service, l)| Some((service.clone(), l.local_addr().ok()?)))
                .collect(),
        });
        shared.register().await.ok();
        let workers = Workers::start(workers, "sidecar").map_err(SidecarError::Workers)?;
        let outbound = outbound_listeners
            .into_iter()
            .map(|(service, listener)| {
                (
                    Arc::new(Destination::new(service, workers.count())),
                    listener,
                )
            })
            .collect();
        Ok(Self {
            shared,
            inbound,
            outbound,
            admin,
            workers,
        })
    }

    pub fn inbound_addr(&self) -> std::io::Result<SocketAddr> {
        self.inbound.local_addr()
    }

    pub fn admin_addr(&self) -> std::io::Result<SocketAddr> {
        self.admin.local_addr()
    }

    /// `service=addr` of each outbound listener.
    pub fn outbound_addrs(&self) -> Vec<(String, SocketAddr)> {
        self.outbound
            .iter()
            .filter_map(|(d, l)| Some((d.service.clone(), l.local_addr().ok()?)))
            .collect()
    }

    pub fn spiffe_id(&self) -> SpiffeId {
        self.shared.tls.load().identity.clone()
    }

    /// Serves until `shutdown`, then lets open requests finish for up to
    /// `grace` and flushes telemetry.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>, grace: Duration) {
        let (stop, stopped) = watch::channel(false);
        let shared = self.shared;
        let workers = Arc::new(self.workers);
        let background = [
            tokio::spawn(rotate_identity(shared.clone())),
            tokio::spawn(follow_config(shared.clone())),
            tokio::spawn(heartbeat(shared.clone())),
        ];
        let mut servers = vec![tokio::spawn(inbound::serve(
            shared.clone(),
            workers.clone(),
            self.inbound,
            until_stopped(stopped.clone()),
            grace,
        ))];
        for (destination, listener) in self.outbound {
            servers.push(tokio::spawn(outbound::serve(
                shared.clone(),
                workers.clone(),
                destination,
                listener,
                until_stopped(stopped.clone()),
                grace,
            )));
        }
        servers.push(tokio::spawn(admin::serve(
            shared.clone(),
            self.admin,
            until_stopped(stopped),
        )));
        shutdown.await;
        let _ = stop.send(true);
        for server in servers {
            let _ = server.await;
        }
        for task in background {
            task.abort();
        }
        if let Ok(workers) = Arc::try_unwrap(workers) {
            workers.stop().await;
        }
        shared
            .telemetry
            .load()
            .shutdown(Duration::from_secs(5))
            .await;
    }
}

/// Where the sidecars of a service listen, as the control plane last said,
/// split by locality: a call goes to a sidecar in the caller's zone while
/// there is one (Kuma's locality-aware balancing), and to the others only
/// when those fail. A caller without a zone treats every endpoint as near.
pub(crate) struct Endpoints {
    near: Vec<SocketAddr>,
    far: Vec<SocketAddr>,
}

impl Endpoints {
    pub(crate) fn len(&self) -> usize {
        self.near.len() + self.far.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The endpoint for `attempt` (0 first, then retries) of the call that
    /// drew `turn` from its destination's round-robin counter: each near
    /// endpoint in turn, then each far one, then around again.
    pub(crate) fn pick(&self, turn: usize, attempt: usize) -> Option<SocketAddr> {
        let i = attempt.checked_rem(self.len())?;
        Some(if i < self.near.len() {
            self.near[(turn + i) % self.near.len()]
        } else {
            let far = i - self.near.len();
            self.far[(turn + far) % self.far.len()]
        })
    }
}

impl Snapshot {
    /// The endpoints of `service` as seen from a caller in `zone`.
    pub(crate) fn endpoints(&self, service: &str, zone: Option<&str>) -> Endpoints {
        let mut endpoints = Endpoints {
            near: Vec::new(),
            far: Vec::new(),
        };
        let Some(service) = self.services.get(service) else {
            return endpoints;
        };
        for address in &service.endpoints {
            let Ok(addr) = address.parse() else {
                continue;
            };
            let near =
                zone.is_none_or(|zone| service.zones.get(address).is_some_and(|z| z == zone));
            if near {
                endpoints.near.push(addr);
            } else {
                endpoints.far.push(addr);
            }
        }
        endpoints
    }

    fn compile(config: SidecarConfig) -> Result<Self, String> {
        Ok(Self {
            policies: CompiledPolicies::compile(config.policies)?,
            version: config.version,
            mesh: config.mesh,
            services: config.services,
        })
    }
}

impl Shared {
    async fn register(&self) -> Result<(), CallError> {
        let registration = Registration {
            service: self.service.clone(),
            address: self.advertise.to_string(),
            protocol: self.app_protocol,
            zone: self.zone.clone(),
            certificate_not_after: unix_seconds(self.tls.load().not_after),
            config_version: self.config.load().version.clone(),
        };
        self.control_plane
            .register(&self.instance, &registration)
            .await
    }

    fn apply(&self, config: SidecarConfig) {
        let version = config.version.clone();
        let snapshot = match Snapshot::compile(config) {
            Ok(snapshot) => snapshot,
            Err(e) => {
                tracing::warn!(%version, error = %e, "cannot apply the new config; keeping the running one");
                return;
            }
        };
        let tracing_changed = snapshot.policies.tracing() != self.config.load().policies.tracing();
        if tracing_changed {
            match start_telemetry(
                &self.service,
                snapshot.policies.tracing(),
                &self.telemetry_counters,
            ) {
                Ok(telemetry) => {
                    let old = self.telemetry.swap(Arc::new(telemetry));
                    tokio::spawn(async move { old.shutdown(Duration::from_secs(5)).await });
                }
                Err(e) => tracing::warn!(error = %e, "cannot apply the tracing policy"),
            }
        }
        self.config.store(Arc::new(snapshot));
        self.metrics.config_updated();
        tracing::info!(%version, "config updated");
    }
}

fn start_telemetry(
    service: &str,
    policy: &TracingPolicy,
    counters: &Arc<TelemetryCounters>,
) -> Result<Telemetry, String> {
    let config = policy.telemetry_config(Some(service));
    Telemetry::start_counting(&config, "weft-mesh", counters.clone()).map_err(|e| e.to_string())
}

/// Resolves once `run` says stop.
async fn until_stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Retries `attempt` until it works, saying once that it waits; a refusal
/// (this sidecar's token) ends the wait at once.
async fn wait_for<T, F, Fut>(what: &str, mut attempt: F) -> Result<T, SidecarError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, CallError>>,
{
    let mut delay = Duration::from_millis(100);
    let mut said = false;
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(CallError::Refused(message)) => {
                return Err(SidecarError::Invalid(format!(
                    "{message} (is this sidecar's token, from --token-file or WEFT_SIDECAR_TOKEN, one that `weft mesh token create --service …` made for this service?)"
                )))
            }
            Err(e) => {
                if !said {
                    tracing::warn!(error = %e, "waiting for the control plane to give {what}");
                    said = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A new key, its CSR signed by the control plane, ready for rustls.
async fn obtain_identity(
    control_plane: &ControlPlaneClient,
    service: &str,
    generation: u64,
) -> Result<MeshTls, CallError> {
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .and_then(|csr| csr.pem())
        .map_err(|e| e.to_string())?;
    let answer = control_plane.certificate(service, csr).await?;
    let identity = SpiffeId::parse(&answer.spiffe_id)
        .filter(|id| id.service() == service)
        .ok_or_else(|| format!("the control plane answered for {}", answer.spiffe_id))?;
    MeshTls::new(
        identity,
        &answer.certificate,
        key.serialize_der(),
        &answer.ca,
        generation,
    )
    .map_err(|e| CallError::Failed(e.to_string()))
}

/// Renews the certificate when 70% of its lifetime has passed; retries
/// until it works (the old one serves meanwhile).
async fn rotate_identity(shared: Arc<Shared>) {
    let mut issued_at = SystemTime::now();
    loop {
        let current = shared.tls.load_full();
        let lifetime = current
            .not_after
            .duration_since(issued_at)
            .unwrap_or(Duration::ZERO);
        tokio::time::sleep(lifetime.mul_f64(0.7)).await;
        let mut delay = Duration::from_millis(200);
        loop {
            match obtain_identity(
                &shared.control_plane,
                &shared.service,
                current.generation + 1,
            )
            .await
            {
                Ok(tls) => {
                    issued_at = SystemTime::now();
                    shared.metrics.certificate_issued(tls.not_after);
                    shared.metrics.rotated();
                    tracing::info!(identity = %tls.identity, "workload certificate renewed");
                    shared.tls.store(Arc::new(tls));
                    let _ = shared.register().await;
                    break;
                }
                Err(e) => {
                    let left = current
                        .not_after
                        .duration_since(SystemTime::now())
                        .unwrap_or(Duration::ZERO);
                    match e {
                        CallError::Refused(_) => {
                            tracing::error!(error = %e, ?left, "the control plane refuses to renew the workload certificate (was the token revoked?); retrying")
                        }
                        CallError::Failed(_) => {
                            tracing::warn!(error = %e, ?left, "cannot renew the workload certificate; retrying")
                        }
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

/// Long-polls the control plane for config changes; when it is away, the
/// running config stays.
async fn follow_config(shared: Arc<Shared>) {
    let mut failing = false;
    loop {
        let version = shared.config.load().version.clone();
        match shared.control_plane.config(Some(&version), POLL_WAIT).await {
            Ok(Some(config)) => {
                if failing {
                    tracing::info!("control plane reachable again");
                    failing = false;
                }
                shared.apply(config);
                let _ = shared.register().await;
            }
            Ok(None) => failing = false,
            Err(e) => {
                if !failing {
                    match e {
                        CallError::Refused(_) => {
                            tracing::error!(error = %e, %version, "the control plane refuses this sidecar's token (was it revoked?); serving with the last config")
                        }
                        CallError::Failed(_) => {
                            tracing::warn!(error = %e, %version, "control plane unreachable; serving with the last config")
                        }
                    }
                    failing = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn heartbeat(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut refused = false;
    loop {
        tick.tick().await;
        match shared.register().await {
            Ok(()) => refused = false,
            Err(e @ CallError::Refused(_)) => {
                if !refused {
                    tracing::error!(error = %e, "the control plane refuses this sidecar's token (was it revoked?); serving with the last config and certificate");
                    refused = true;
                }
            }
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(zones: &[(&str, Option<&str>)]) -> Snapshot {
        let endpoints = ServiceEndpoints {
            protocol: AppProtocol::Http,
            endpoints: zones.iter().map(|(addr, _)| addr.to_string()).collect(),
            zones: zones
                .iter()
                .filter_map(|(addr, zone)| Some((addr.to_string(), (*zone)?.to_string())))
                .collect(),
        };
        Snapshot {
            version: "1".into(),
            mesh: "crm".into(),
            services: [("crm-database".to_string(), endpoints)].into(),
            policies: CompiledPolicies::compile(Default::default()).unwrap(),
        }
    }

    fn picks(endpoints: &Endpoints, turn: usize) -> Vec<u16> {
        (0..endpoints.len())
            .map(|attempt| endpoints.pick(turn, attempt).unwrap().port())
            .collect()
    }

    #[test]
    fn calls_go_to_their_own_zone_first_and_round_robin_within_it() {
        let snapshot = snapshot(&[
            ("127.0.0.1:1", Some("a")),
            ("127.0.0.1:2", Some("b")),
            ("127.0.0.1:3", Some("a")),
            ("127.0.0.1:4", None),
        ]);
        let from_a = snapshot.endpoints("crm-database", Some("a"));
        assert_eq!(picks(&from_a, 0), [1, 3, 2, 4]);
        assert_eq!(picks(&from_a, 1), [3, 1, 4, 2]);
        // A caller in a zone nobody else is in, or in none, spreads over all.
        let from_c = snapshot.endpoints("crm-database", Some("c"));
        assert_eq!(picks(&from_c, 1), [2, 3, 4, 1]);
        let anywhere = snapshot.endpoints("crm-database", None);
        assert_eq!(picks(&anywhere, 0), [1, 2, 3, 4]);
        assert_eq!(snapshot.endpoints("crm-payments", None).pick(0, 0), None);
    }
}
