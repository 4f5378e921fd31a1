//! The four CRM services. Each is a real HTTP server on loopback that calls
//! the others through its mesh sidecar's outbound listeners, traces every
//! request it serves and every call it makes, logs what a service would log,
//! and injects the faults it is told to (`PUT /_demo/faults`, not through the
//! mesh: the demo's control API calls the app port directly).

mod conductor;
mod database;
mod mobile;
mod salesforce;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use axum::Json;
use opentelemetry::baggage::BaggageExt;
use opentelemetry::KeyValue;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::field::Empty;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::fault::{Fault, Faults, RequestFacts};
use crate::telemetry::{HeaderExtractor, HeaderInjector};

/// The services of the CRM, in call order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum CrmService {
    #[serde(rename = "crm-mobile")]
    Mobile,
    #[serde(rename = "crm-conductor")]
    Conductor,
    #[serde(rename = "crm-salesforce")]
    Salesforce,
    #[serde(rename = "crm-database")]
    Database,
}

impl CrmService {
    pub const ALL: [CrmService; 4] = [
        CrmService::Mobile,
        CrmService::Conductor,
        CrmService::Salesforce,
        CrmService::Database,
    ];

    pub fn name(self) -> &'static str {
        match self {
            CrmService::Mobile => "crm-mobile",
            CrmService::Conductor => "crm-conductor",
            CrmService::Salesforce => "crm-salesforce",
            CrmService::Database => "crm-database",
        }
    }

    /// The services this one calls.
    pub fn callees(self) -> &'static [CrmService] {
        match self {
            CrmService::Mobile => &[CrmService::Conductor],
            CrmService::Conductor => &[CrmService::Salesforce, CrmService::Database],
            CrmService::Salesforce | CrmService::Database => &[],
        }
    }
}

impl fmt::Display for CrmService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for CrmService {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        CrmService::ALL
            .into_iter()
            .find(|s| s.name() == name)
            .ok_or_else(|| {
                let known: Vec<_> = CrmService::ALL.iter().map(|s| s.name()).collect();
                format!("unknown service {name:?} (one of {})", known.join(", "))
            })
    }
}

/// How to run one service.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    pub service: CrmService,
    /// Where the app listens (its sidecar's `--app`).
    pub listen: SocketAddr,
    /// Base URL of each callee: the sidecar's outbound listener for it.
    pub callees: BTreeMap<CrmService, String>,
    pub faults: Vec<Fault>,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{service} calls {callee} but was given no address for it")]
    MissingCallee {
        service: CrmService,
        callee: CrmService,
    },
    #[error("fault {fault} is for {}, not {service}", fault.service)]
    ForeignFault { service: CrmService, fault: Fault },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot seed the CRM database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("cannot build the HTTP client for calls: {0}")]
    Client(reqwest::Error),
    #[error("HTTP server failed: {0}")]
    Serve(std::io::Error),
}

/// Runs a service until `shutdown` completes, then finishes in-flight requests.
pub async fn run(
    options: ServiceOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    let service = options.service;
    if let Some(fault) = options.faults.iter().find(|f| f.service != service) {
        return Err(ServiceError::ForeignFault {
            service,
            fault: fault.clone(),
        });
    }
    let callees = Callees::new(service, &options.callees)?;
    let faults = Faults::new(options.faults);
    let routes = match service {
        CrmService::Mobile => mobile::routes(callees),
        CrmService::Conductor => conductor::routes(callees),
        CrmService::Salesforce => salesforce::routes(),
        CrmService::Database => database::routes(database::Crm::seeded()?),
    };
    let app = routes
        .layer(axum::middleware::from_fn_with_state(
            (service, faults.clone()),
            traced,
        ))
        .route("/health", get(|| async { "ok" }))
        .route(
            "/_demo/faults",
            get(list_faults)
                .put(replace_faults)
                .with_state((service, faults)),
        );
    let listener = tokio::net::TcpListener::bind(options.listen)
        .await
        .map_err(|source| ServiceError::Listen {
            addr: options.listen,
            source,
        })?;
    tracing::info!(%service, addr = %options.listen, "CRM service listening");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServiceError::Serve)
}

async fn list_faults(State((_, faults)): State<(CrmService, Faults)>) -> Json<Vec<Fault>> {
    Json(faults.list())
}

async fn replace_faults(
    State((service, faults)): State<(CrmService, Faults)>,
    Json(new): Json<Vec<Fault>>,
) -> Response {
    if let Some(fault) = new.iter().find(|f| f.service != service) {
        let message = format!("fault {fault} is for {}, not {service}", fault.service);
        return (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response();
    }
    tracing::warn!(faults = ?new.iter().map(ToString::to_string).collect::<Vec<_>>(), "faults replaced");
    faults.replace(new);
    StatusCode::NO_CONTENT.into_response()
}

/// The customer tier a request is for; set by the mobile app, carried as baggage.
#[derive(Debug, Clone)]
pub(crate) struct CustomerTier(pub String);

const TIER_BAGGAGE: &str = "customer.tier";

/// The SERVER span of every request, its parent taken from `traceparent`;
/// then the faults, then the handler.
async fn traced(
    State((service, faults)): State<(CrmService, Faults)>,
    mut request: Request,
    next: Next,
) -> Response {
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HeaderExtractor(request.headers()))
    });
    let tier = match parent.baggage().get(TIER_BAGGAGE) {
        Some(tier) => tier.to_string(),
        // The mobile app says which customer it serves; deeper services learn it from baggage.
        None => request
            .headers()
            .get("x-customer-tier")
            .and_then(|v| v.to_str().ok())
            .filter(|t| ["gold", "silver", "bronze"].contains(t))
            .unwrap_or("unknown")
            .to_string(),
    };
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |p| p.as_str().to_string(),
    );
    let method = request.method().clone();
    let span = tracing::info_span!(
        "request",
        otel.name = %format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = Empty,
        http.request.method = %method,
        http.route = %route,
        url.path = %request.uri().path(),
        http.response.status_code = Empty,
        customer.tier = %tier,
    );
    let _ = span.set_parent(parent);
    let injected = faults.decide(&RequestFacts {
        customer_tier: &tier,
        http_route: &route,
        http_request_method: method.as_str(),
    });
    request.extensions_mut().insert(CustomerTier(tier));
    let response = async move {
        if !injected.delay.is_zero() {
            tokio::time::sleep(injected.delay).await;
        }
        if injected.error {
            let message = injected_error_message(service);
            tracing::error!(error.type = "injected", "{message}");
            return failure(StatusCode::INTERNAL_SERVER_ERROR, message);
        }
        next.run(request).await
    }
    .instrument(span.clone())
    .await;
    let status = response.status();
    span.record("http.response.status_code", status.as_u16());
    if status.is_server_error() {
        span.record("otel.status_code", "ERROR");
    }
    response
}

/// What each service says when its injected fault fires.
fn injected_error_message(service: CrmService) -> &'static str {
    match service {
        CrmService::Mobile => "session store unavailable: connection reset by peer (injected fault)",
        CrmService::Conductor => "integration mapping failed: worker pool exhausted (injected fault)",
        CrmService::Salesforce => {
            "Salesforce API error UNABLE_TO_LOCK_ROW: unable to obtain exclusive access to this record (injected fault)"
        }
        CrmService::Database => "database is locked: SQLITE_BUSY after 5000 ms (injected fault)",
    }
}

/// An error answer: `{"error": message}` with its status.
pub(crate) fn failure(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// A callee's answer passed on to our caller as it is (its 4xx, or what we created).
pub(crate) fn passed_on(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

/// A request's JSON body, or the `400` that says it is not JSON.
pub(crate) fn json_body(body: Option<Json<Value>>) -> Result<Value, Failure> {
    body.map(|Json(body)| body).ok_or_else(|| Failure {
        status: StatusCode::BAD_REQUEST,
        message: "the body is not JSON".to_string(),
    })
}

/// The services this one calls, each through its sidecar's outbound listener.
#[derive(Clone)]
pub(crate) struct Callees {
    client: reqwest::Client,
    base: BTreeMap<CrmService, String>,
}

/// What ends a request early — a call to another service that failed, or a
/// bad request — answered as `status` with the message.
pub(crate) struct Failure {
    pub status: StatusCode,
    pub message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        failure(self.status, self.message)
    }
}

impl Callees {
    fn new(
        service: CrmService,
        given: &BTreeMap<CrmService, String>,
    ) -> Result<Self, ServiceError> {
        let mut base = BTreeMap::new();
        for &callee in service.callees() {
            let url = given
                .get(&callee)
                .ok_or(ServiceError::MissingCallee { service, callee })?;
            base.insert(callee, url.trim_end_matches('/').to_string());
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .map_err(ServiceError::Client)?;
        Ok(Self { client, base })
    }

    /// `GET` from `callee`, as [`Callees::call`].
    pub(crate) async fn get(
        &self,
        callee: CrmService,
        route: &str,
        path: &str,
        tier: &CustomerTier,
    ) -> Result<(StatusCode, Value), Failure> {
        self.call(callee, Method::GET, route, path, tier, None)
            .await
    }

    /// Calls `callee` inside a CLIENT span, with trace context and the
    /// customer tier as baggage. A 4xx answer comes back as it is; a 5xx or a
    /// transport error becomes a `502` naming the callee.
    pub(crate) async fn call(
        &self,
        callee: CrmService,
        method: Method,
        route: &str,
        path: &str,
        tier: &CustomerTier,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), Failure> {
        let Some(base) = self.base.get(&callee) else {
            return Err(Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: format!("no route to {callee}"),
            });
        };
        let url = format!("{base}{path}");
        let span = tracing::info_span!(
            "call",
            otel.name = %format!("{method} {route}"),
            otel.kind = "client",
            otel.status_code = Empty,
            peer.service = %callee,
            http.request.method = %method,
            url.full = %url,
            http.response.status_code = Empty,
        );
        let mut headers = http::HeaderMap::new();
        let context = span
            .context()
            .with_baggage([KeyValue::new(TIER_BAGGAGE, tier.0.clone())]);
        opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.inject_context(&context, &mut HeaderInjector(&mut headers))
        });
        let mut request = self.client.request(method, &url).headers(headers);
        if let Some(body) = body {
            request = request.json(body);
        }
        let outcome = async {
            let response = request.send().await.map_err(|e| Failure {
                status: StatusCode::BAD_GATEWAY,
                message: format!("{callee} unreachable: {e}"),
            })?;
            let status = response.status();
            tracing::Span::current().record("http.response.status_code", status.as_u16());
            let body: Value = response.json().await.unwrap_or(Value::Null);
            if status.is_server_error() {
                let reason = body["error"].as_str().unwrap_or("no reason given");
                return Err(Failure {
                    status: StatusCode::BAD_GATEWAY,
                    message: format!("{callee} answered {status}: {reason}"),
                });
            }
            Ok((status, body))
        }
        .instrument(span.clone())
        .await;
        if let Err(failure) = &outcome {
            span.record("otel.status_code", "ERROR");
            span.in_scope(|| tracing::error!("{}", failure.message));
        }
        outcome
    }
}

/// Runs `f` in an INTERNAL span: the service's own work between its calls.
pub(crate) fn internal<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    tracing::info_span!("internal", otel.name = name, otel.kind = "internal").in_scope(f)
}

/// A deterministic random source per entity, so every service describes
/// account 42 the same way on every run.
pub(crate) fn seeded(kind: u64, id: u64) -> fastrand::Rng {
    fastrand::Rng::with_seed(kind.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ id)
}

/// How many accounts the CRM holds; ids are 1..=ACCOUNTS.
pub const ACCOUNTS: u64 = 1_000;

pub(crate) const COMPANIES: [&str; 12] = [
    "Acme",
    "Globex",
    "Initech",
    "Umbrella",
    "Hooli",
    "Vandelay",
    "Stark",
    "Wayne",
    "Wonka",
    "Tyrell",
    "Cyberdyne",
    "Soylent",
];
pub(crate) const INDUSTRIES: [&str; 6] = [
    "Manufacturing",
    "Retail",
    "Healthcare",
    "Finance",
    "Energy",
    "Technology",
];
