//! The control plane: signs workload certificates, keeps the registry of
//! live sidecars, and serves every sidecar its config (where the services
//! are, and the policies), pushing changes by answering long polls.
//!
//! Its HTTP API (default port 5681, Kuma's):
//! - `GET /` the mesh, the config version, the CA's expiry;
//! - `GET /dataplanes` the live sidecars with their certificate expiry;
//! - `GET /policies`, `PUT /policies` (YAML or JSON; written back to the file);
//! - `GET /ca.pem`, `GET /metrics`;
//! - `/sidecar/v1/…` what sidecars call (see [`crate::api`]).
//!
//! With authentication on (the default), `/sidecar/v1/…` takes a dataplane
//! token and certificates and registrations are only for the token's
//! service; `PUT /policies` takes an admin token unless it comes from
//! loopback and `localhost_is_admin`. The rest is read-only and open, as
//! Kuma's API is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::{ConnectInfo, Path as UrlPath, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use parking_lot::{Mutex, RwLock};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::watch;
use weft_access::FileVersion;

use crate::api::{
    from_unix_seconds, unix_seconds, CertificateRequest, CertificateResponse, Registration,
    ServiceEndpoints, SidecarConfig,
};
use crate::ca::{CaError, CertificateAuthority};
use crate::config::{is_service_name, AuthenticationConfig, ConfigError, MeshConfig, Policies};
use crate::spiffe::SpiffeId;
use crate::tokens::{Grant, Refusal, TokenError, TokenFile, TokenScope, TokenVerifier};

/// A sidecar not heard from for this long is taken out of the registry.
const DATAPLANE_EXPIRY: Duration = Duration::from_secs(15);
/// Longest a config poll is held open.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Why the control plane could not start.
#[derive(Debug, thiserror::Error)]
pub enum ControlPlaneError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Ca(#[from] CaError),
    #[error(transparent)]
    Tokens(#[from] TokenError),
}

/// A running control plane's state.
#[derive(Clone)]
pub struct ControlPlane {
    state: Arc<CpState>,
}

struct CpState {
    ca: CertificateAuthority,
    mesh: String,
    ttl: Duration,
    authentication: AuthenticationConfig,
    tokens: TokenVerifier,
    config: Mutex<MeshConfig>,
    config_path: Option<PathBuf>,
    policies: RwLock<Arc<Policies>>,
    dataplanes: Mutex<BTreeMap<String, Dataplane>>,
    /// The registry as last written, so a restarted control plane still
    /// knows where services are until their sidecars report in again.
    dataplanes_file: PathBuf,
    /// A random prefix per process, so a sidecar's version from before a
    /// restart never matches by accident.
    epoch: String,
    version: watch::Sender<u64>,
    metrics: CpMetrics,
}

struct Dataplane {
    registration: Registration,
    last_seen: Instant,
    registered_at: SystemTime,
}

struct CpMetrics {
    registry: Registry,
    dataplanes: Gauge,
    issued: Counter,
    policy_updates: Family<Vec<(&'static str, &'static str)>, Counter>,
}

impl ControlPlane {
    /// Loads (or generates) the CA. `config_path` is watched for policy
    /// changes and receives `PUT /policies`.
    pub fn new(
        config: MeshConfig,
        config_path: Option<PathBuf>,
    ) -> Result<Self, ControlPlaneError> {
        let ca = CertificateAuthority::load_or_create(&config)?;
        let tokens = TokenVerifier::load(TokenFile::path_in(&config.state_dir))?;
        if !config.authentication.enabled {
            tracing::warn!("authentication is off: anyone who reaches the control plane can get any service's certificate");
        }
        let mut registry = Registry::default();
        let dataplane_gauge = Gauge::default();
        registry.register(
            "weft_mesh_control_plane_dataplanes",
            "Sidecars that reported in the last 15 seconds",
            dataplane_gauge.clone(),
        );
        let issued = Counter::default();
        registry.register(
            "weft_mesh_control_plane_certificates_issued",
            "Workload certificates signed",
            issued.clone(),
        );
        let policy_updates = Family::default();
        registry.register(
            "weft_mesh_control_plane_policy_updates",
            "Policy changes applied, by source (file or api)",
            policy_updates.clone(),
        );
        let (version, _) = watch::channel(1);
        let dataplanes_file = config.state_dir.join("dataplanes.json");
        let dataplanes = load_dataplanes(&dataplanes_file);
        Ok(Self {
            state: Arc::new(CpState {
                mesh: config.mesh.clone(),
                ttl: config.certificates.ttl,
                authentication: config.authentication.clone(),
                tokens,
                policies: RwLock::new(Arc::new(config.policies.clone())),
                config: Mutex::new(config),
                config_path,
                ca,
                dataplanes: Mutex::new(dataplanes),
                dataplanes_file,
                epoch: format!("{:08x}", fastrand::u32(..)),
                version,
                metrics: CpMetrics {
                    registry,
                    dataplanes: dataplane_gauge,
                    issued,
                    policy_updates,
                },
            }),
        })
    }

    /// Serves the API on `listener` until `shutdown`, expiring silent
    /// sidecars and watching the config file meanwhile.
    pub async fn serve(
        self,
        listener: weft_access::tls::Incoming,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state.clone();
        let housekeeping = tokio::spawn(async move {
            let mut version = state.config_version();
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                state.expire_dataplanes();
                if let Err(e) = state.tokens.reload_if_changed() {
                    tracing::error!(error = %e, "keeping the mesh tokens loaded before");
                }
                let now = state.config_version();
                if now != version {
                    version = now;
                    state.reload_policies_from_file();
                }
            }
        });
        let app = router(self.state.clone());
        let served = listener.serve(app, shutdown).await;
        housekeeping.abort();
        served
    }
}

fn router(state: Arc<CpState>) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/ca.pem", get(ca_pem))
        .route("/dataplanes", get(dataplanes))
        .route("/policies", get(get_policies).put(put_policies))
        .route("/metrics", get(metrics))
        .route("/sidecar/v1/certificate", post(issue_certificate))
        .route("/sidecar/v1/dataplanes/{id}", put(register))
        .route("/sidecar/v1/config", get(sidecar_config))
        .with_state(state)
}

/// The registry a previous run saved; each entry gets the usual time to
/// report in before it expires.
fn load_dataplanes(path: &std::path::Path) -> BTreeMap<String, Dataplane> {
    let Ok(json) = std::fs::read(path) else {
        return BTreeMap::new();
    };
    let registrations: BTreeMap<String, Registration> =
        serde_json::from_slice(&json).unwrap_or_default();
    registrations
        .into_iter()
        .map(|(id, registration)| {
            let dataplane = Dataplane {
                registration,
                last_seen: Instant::now(),
                registered_at: SystemTime::now(),
            };
            (id, dataplane)
        })
        .collect()
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "message": message.into() }))).into_response()
}

/// Why the control plane refuses a request.
enum Denied {
    /// No valid token: 401 with a challenge, the same message for every
    /// invalid token.
    Token(Refusal),
    /// A valid token that does not cover the request.
    Forbidden(String),
    /// The request would take over what another service's sidecar holds.
    Conflict(String),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        match self {
            Self::Token(refusal) => {
                let message = match refusal {
                    Refusal::Missing => {
                        "a token is needed (Authorization: Bearer …; `weft mesh token create` makes one)"
                    }
                    Refusal::Invalid => "the token is not valid (unknown, revoked or expired)",
                };
                let mut response = error(StatusCode::UNAUTHORIZED, message);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    header::HeaderValue::from_static("Bearer realm=\"weft-mesh\""),
                );
                response
            }
            Self::Forbidden(message) => error(StatusCode::FORBIDDEN, message),
            Self::Conflict(message) => error(StatusCode::CONFLICT, message),
        }
    }
}

/// Whether `grant` (none: authentication is off) may act for `service`.
fn acts_for(grant: Option<&Grant>, service: &str, peer: SocketAddr) -> Result<(), Denied> {
    match grant {
        None => Ok(()),
        Some(Grant {
            scope: TokenScope::Dataplane(own),
            ..
        }) if own == service => Ok(()),
        Some(grant) => {
            tracing::warn!(%peer, token = %grant.id, scope = %grant.scope, service, "refused a sidecar acting for another service");
            Err(Denied::Forbidden(format!(
                "this token is for the {}, not for {service}",
                grant.scope
            )))
        }
    }
}

fn rfc3339(unix: u64) -> String {
    humantime::format_rfc3339_seconds(from_unix_seconds(unix as i64)).to_string()
}

impl CpState {
    /// The grant of a sidecar's dataplane token; none when authentication
    /// is off.
    fn sidecar(&self, headers: &HeaderMap) -> Result<Option<Grant>, Denied> {
        if !self.authentication.enabled {
            return Ok(None);
        }
        let grant = self.verify(headers)?;
        match grant.scope {
            TokenScope::Dataplane(_) => Ok(Some(grant)),
            TokenScope::Admin => Err(Denied::Forbidden(
                "an admin token is not a sidecar's: `weft mesh token create --service <name>` makes one".to_string(),
            )),
        }
    }

    /// Whether the caller may change the mesh: an admin token, or loopback
    /// when `localhost_is_admin`.
    fn admin(&self, headers: &HeaderMap, peer: SocketAddr) -> Result<(), Denied> {
        let auth = &self.authentication;
        if !auth.enabled || (auth.localhost_is_admin && peer.ip().to_canonical().is_loopback()) {
            return Ok(());
        }
        match self.verify(headers)?.scope {
            TokenScope::Admin => Ok(()),
            TokenScope::Dataplane(_) => Err(Denied::Forbidden(
                "changing the mesh takes an admin token (`weft mesh token create --admin`)"
                    .to_string(),
            )),
        }
    }

    fn verify(&self, headers: &HeaderMap) -> Result<Grant, Denied> {
        let authorization = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok());
        match self.tokens.verify(authorization) {
            // A token made a moment ago: read the file now rather than at
            // the next tick, so a sidecar started right after `weft mesh
            // token create` is not refused.
            Err(Refusal::Invalid) if matches!(self.tokens.reload_if_changed(), Ok(true)) => {
                self.tokens.verify(authorization)
            }
            verified => verified,
        }
        .map_err(Denied::Token)
    }

    fn current_version(&self) -> String {
        format!("{}-{}", self.epoch, *self.version.borrow())
    }

    fn bump(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    fn config_version(&self) -> Option<FileVersion> {
        FileVersion::of(self.config_path.as_ref()?)
    }

    fn expire_dataplanes(&self) {
        let mut dataplanes = self.dataplanes.lock();
        let before = dataplanes.len();
        dataplanes.retain(|id, dp| {
            let alive = dp.last_seen.elapsed() < DATAPLANE_EXPIRY;
            if !alive {
                tracing::info!(%id, service = %dp.registration.service, "sidecar stopped reporting; removed");
            }
            alive
        });
        let after = dataplanes.len();
        if after != before {
            self.persist_dataplanes(&dataplanes);
        }
        drop(dataplanes);
        self.metrics.dataplanes.set(after as i64);
        if after != before {
            self.bump();
        }
    }

    fn persist_dataplanes(&self, dataplanes: &BTreeMap<String, Dataplane>) {
        let registrations: BTreeMap<&String, &Registration> = dataplanes
            .iter()
            .map(|(id, dp)| (id, &dp.registration))
            .collect();
        let written = serde_json::to_vec(&registrations)
            .map_err(std::io::Error::other)
            .and_then(|json| {
                let tmp = self.dataplanes_file.with_extension("json.tmp");
                std::fs::write(&tmp, json)?;
                std::fs::rename(&tmp, &self.dataplanes_file)
            });
        if let Err(e) = written {
            tracing::warn!(path = %self.dataplanes_file.display(), error = %e, "cannot save the sidecar registry");
        }
    }

    fn reload_policies_from_file(&self) {
        let Some(path) = &self.config_path else {
            return;
        };
        match MeshConfig::load(path) {
            Ok(config) => {
                let mut current = self.config.lock();
                if config.mesh != current.mesh
                    || config.ca != current.ca
                    || config.certificates != current.certificates
                    || config.authentication != current.authentication
                    || config.state_dir != current.state_dir
                {
                    tracing::warn!(
                        "mesh, ca, certificates, authentication and state_dir take effect at the next restart"
                    );
                }
                if config.policies != current.policies {
                    current.policies = config.policies.clone();
                    drop(current);
                    self.set_policies(config.policies, "file");
                }
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "config file changed but is invalid; keeping the running policies")
            }
        }
    }

    fn set_policies(&self, policies: Policies, source: &'static str) {
        *self.policies.write() = Arc::new(policies);
        self.metrics
            .policy_updates
            .get_or_create(&vec![("source", source)])
            .inc();
        self.bump();
        tracing::info!(source, version = %self.current_version(), "policies updated");
    }

    fn sidecar_config(&self) -> SidecarConfig {
        let mut services: BTreeMap<String, ServiceEndpoints> = BTreeMap::new();
        for dp in self.dataplanes.lock().values() {
            let r = &dp.registration;
            let entry = services
                .entry(r.service.clone())
                .or_insert_with(|| ServiceEndpoints {
                    protocol: r.protocol,
                    endpoints: Vec::new(),
                    zones: BTreeMap::new(),
                });
            entry.protocol = r.protocol;
            if !entry.endpoints.contains(&r.address) {
                entry.endpoints.push(r.address.clone());
            }
            if let Some(zone) = &r.zone {
                entry.zones.insert(r.address.clone(), zone.clone());
            }
        }
        SidecarConfig {
            version: self.current_version(),
            mesh: self.mesh.clone(),
            services,
            policies: (**self.policies.read()).clone(),
        }
    }
}

async fn overview(State(state): State<Arc<CpState>>) -> Response {
    Json(json!({
        "mesh": state.mesh,
        "version": state.current_version(),
        "dataplanes": state.dataplanes.lock().len(),
        "ca": { "not_after": rfc3339(unix_seconds(state.ca.not_after())) },
        "certificates": { "ttl": humantime::format_duration(state.ttl).to_string() },
    }))
    .into_response()
}

async fn ca_pem(State(state): State<Arc<CpState>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        state.ca.certificate_pem().to_string(),
    )
        .into_response()
}

async fn dataplanes(State(state): State<Arc<CpState>>) -> Response {
    let policies = state.policies.read().clone();
    let list: Vec<_> = state
        .dataplanes
        .lock()
        .iter()
        .map(|(id, dp)| {
            let r = &dp.registration;
            let permissions: Vec<&str> = policies
                .traffic_permissions
                .rules
                .iter()
                .filter(|rule| {
                    rule.to == r.service
                        || rule.to == "*"
                        || rule.from == r.service
                        || rule.from == "*"
                })
                .map(|rule| rule.name.as_str())
                .collect();
            let authorization: Vec<&str> = policies
                .authorization
                .iter()
                .filter(|p| p.to == r.service || p.to == "*")
                .map(|p| p.name.as_str())
                .collect();
            json!({
                "id": id,
                "service": r.service,
                "spiffe_id": SpiffeId::new(&state.mesh, &r.service).to_string(),
                "address": r.address,
                "zone": r.zone,
                "protocol": r.protocol,
                "certificate_expires_at": rfc3339(r.certificate_not_after),
                "config_version": r.config_version,
                "registered_at": rfc3339(unix_seconds(dp.registered_at)),
                "last_seen_seconds_ago": dp.last_seen.elapsed().as_secs(),
                "policies": {
                    "traffic_permissions_enabled": policies.traffic_permissions.enabled,
                    "traffic_permissions": permissions,
                    "authorization": authorization,
                },
            })
        })
        .collect();
    Json(json!({ "dataplanes": list })).into_response()
}

async fn get_policies(State(state): State<Arc<CpState>>) -> Response {
    Json(&**state.policies.read()).into_response()
}

async fn put_policies(
    State(state): State<Arc<CpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: String,
) -> Result<Response, Denied> {
    state.admin(&headers, peer)?;
    let policies = match Policies::parse(&body) {
        Ok(policies) => policies,
        Err(e) => return Ok(error(StatusCode::BAD_REQUEST, e.to_string())),
    };
    if let Some(path) = &state.config_path {
        let mut config = state.config.lock().clone();
        config.policies = policies.clone();
        if let Err(e) = write_config(path, &config) {
            return Ok(error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot write {}: {e}", path.display()),
            ));
        }
        *state.config.lock() = config;
    }
    state.set_policies(policies, "api");
    Ok(Json(json!({ "version": state.current_version() })).into_response())
}

/// Writes the whole file anew (comments are not kept), atomically.
fn write_config(path: &std::path::Path, config: &MeshConfig) -> std::io::Result<()> {
    let text = serde_yaml_ng::to_string(config).map_err(std::io::Error::other)?;
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

async fn metrics(State(state): State<Arc<CpState>>) -> Response {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).is_err() {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics");
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response()
}

async fn issue_certificate(
    State(state): State<Arc<CpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Json(request): Json<CertificateRequest>,
) -> Result<Response, Denied> {
    let grant = state.sidecar(&headers)?;
    if !is_service_name(&request.service) {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            format!(
                "{:?} is not a service name (letters, digits, '-', '_', '.')",
                request.service
            ),
        ));
    }
    acts_for(grant.as_ref(), &request.service, peer)?;
    let identity = SpiffeId::new(&state.mesh, &request.service);
    Ok(match state.ca.issue(&identity, &request.csr, state.ttl) {
        Ok(issued) => {
            state.metrics.issued.inc();
            tracing::info!(%identity, "issued a workload certificate");
            Json(CertificateResponse {
                mesh: state.mesh.clone(),
                spiffe_id: identity.to_string(),
                certificate: issued.certificate_pem,
                ca: state.ca.certificate_pem().to_string(),
                not_after: unix_seconds(issued.not_after),
            })
            .into_response()
        }
        Err(e @ CaError::BadRequest(_)) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    })
}

async fn register(
    State(state): State<Arc<CpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    UrlPath(id): UrlPath<String>,
    Json(registration): Json<Registration>,
) -> Result<Response, Denied> {
    let grant = state.sidecar(&headers)?;
    if !is_service_name(&registration.service) {
        return Ok(error(StatusCode::BAD_REQUEST, "invalid service name"));
    }
    acts_for(grant.as_ref(), &registration.service, peer)?;
    if let Some(zone) = registration.zone.as_deref().filter(|z| !is_service_name(z)) {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            format!("zone {zone:?} is not a zone name (letters, digits, '-', '_', '.')"),
        ));
    }
    if registration.address.parse::<SocketAddr>().is_err() {
        return Ok(error(
            StatusCode::BAD_REQUEST,
            format!("address {:?} is not host:port", registration.address),
        ));
    }
    let mut dataplanes = state.dataplanes.lock();
    let changed = match dataplanes.get_mut(&id) {
        // An instance id is its sidecar's: another service's token may not
        // take it over.
        Some(dp) if grant.is_some() && dp.registration.service != registration.service => {
            return Err(Denied::Conflict(format!(
                "dataplane {id} is a sidecar of {}, not of {}",
                dp.registration.service, registration.service
            )));
        }
        Some(dp) => {
            let moved = dp.registration.service != registration.service
                || dp.registration.address != registration.address
                || dp.registration.protocol != registration.protocol
                || dp.registration.zone != registration.zone;
            dp.registration = registration;
            dp.last_seen = Instant::now();
            moved
        }
        None => {
            tracing::info!(%id, service = %registration.service, address = %registration.address, "sidecar registered");
            dataplanes.insert(
                id,
                Dataplane {
                    registration,
                    last_seen: Instant::now(),
                    registered_at: SystemTime::now(),
                },
            );
            true
        }
    };
    let count = dataplanes.len();
    if changed {
        state.persist_dataplanes(&dataplanes);
    }
    drop(dataplanes);
    state.metrics.dataplanes.set(count as i64);
    if changed {
        state.bump();
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[derive(Debug, Deserialize)]
struct ConfigQuery {
    /// The version the sidecar has; the answer waits while it is current.
    version: Option<String>,
    /// How long to wait, e.g. `30s`.
    wait: Option<String>,
}

async fn sidecar_config(
    State(state): State<Arc<CpState>>,
    headers: HeaderMap,
    Query(query): Query<ConfigQuery>,
) -> Result<Response, Denied> {
    state.sidecar(&headers)?;
    let wait = match query.wait.as_deref().map(humantime::parse_duration) {
        None => Duration::ZERO,
        Some(Ok(wait)) => wait.min(MAX_WAIT),
        Some(Err(e)) => return Ok(error(StatusCode::BAD_REQUEST, format!("wait: {e}"))),
    };
    let mut changes = state.version.subscribe();
    changes.borrow_and_update();
    let current = query.version.as_deref() == Some(state.current_version().as_str());
    if current && tokio::time::timeout(wait, changes.changed()).await.is_err() {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    Ok(Json(state.sidecar_config()).into_response())
}
