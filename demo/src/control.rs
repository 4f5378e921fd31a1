//! The demo's own API, served on weft's query port beside the UI: what is
//! running, how the load is doing, and the faults, switchable at run time.
//!
//! - `GET /api/v1/demo`: the gateway URL and API key, the services, the load's latest report, the faults.
//! - `GET /api/v1/demo/faults`, `PUT` (`{"faults": [...]}`: the whole set),
//!   `POST` (`{"fault": "crm-database:latency=300ms"}`: one more), `DELETE` (none).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use crate::fault::Fault;
use crate::load::LoadStats;
use crate::services::CrmService;
use crate::topology::{Topology, API_KEY, GATEWAY};

/// The demo's running state that the API reads and changes.
pub struct Control {
    topology: Topology,
    rate: f64,
    load: Arc<LoadStats>,
    /// Held across a change so two changes never interleave their pushes.
    faults: tokio::sync::Mutex<Vec<Fault>>,
    client: reqwest::Client,
}

impl Control {
    pub fn new(
        topology: Topology,
        rate: f64,
        load: Arc<LoadStats>,
        faults: Vec<Fault>,
    ) -> Arc<Self> {
        Arc::new(Self {
            topology,
            rate,
            load,
            faults: tokio::sync::Mutex::new(faults),
            client: reqwest::Client::new(),
        })
    }

    pub fn router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/api/v1/demo", get(status))
            .route(
                "/api/v1/demo/faults",
                get(list).put(replace).post(add).delete(clear),
            )
            .with_state(self.clone())
    }

    /// Sends every service its share of the changed set, then keeps it as the current one.
    async fn change(
        &self,
        change: impl FnOnce(&[Fault]) -> Vec<Fault>,
    ) -> Result<Vec<Fault>, Response> {
        let mut current = self.faults.lock().await;
        let faults = change(&current);
        for service in CrmService::ALL {
            let share: Vec<&Fault> = faults.iter().filter(|f| f.service == service).collect();
            let url = format!("{}/_demo/faults", self.topology.app_url(service));
            let answer = self.client.put(&url).json(&share).send().await;
            match answer {
                Ok(response) if response.status().is_success() => {}
                Ok(response) => {
                    let status = response.status();
                    let body = response.text().await.unwrap_or_default();
                    return Err(error(
                        StatusCode::BAD_GATEWAY,
                        format!("{service} refused its faults ({status}): {body}"),
                    ));
                }
                Err(e) => {
                    return Err(error(
                        StatusCode::BAD_GATEWAY,
                        format!("{service} is unreachable: {e}"),
                    ))
                }
            }
        }
        tracing::warn!(faults = ?faults.iter().map(ToString::to_string).collect::<Vec<_>>(), "demo faults changed");
        *current = faults.clone();
        Ok(faults)
    }
}

fn error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn faults_answer(faults: &[Fault]) -> Response {
    Json(json!({ "faults": faults })).into_response()
}

async fn status(State(control): State<Arc<Control>>) -> Response {
    let topology = &control.topology;
    let services: Vec<_> = CrmService::ALL
        .iter()
        .map(|&service| {
            json!({
                "name": service.name(),
                "app": topology.apps[&service].to_string(),
                "sidecar_inbound": topology.inbound[service.name()].to_string(),
                "sidecar_admin": topology.sidecar_admin[service.name()].to_string(),
                "calls": service.callees().iter().map(|c| c.name()).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(json!({
        "gateway": topology.gateway_url(),
        "gateway_admin": format!("http://{}", topology.ports.gateway_admin),
        "control_plane": format!("http://{}", topology.ports.control_plane),
        "gateway_sidecar_admin": topology.sidecar_admin[GATEWAY].to_string(),
        "api_key": API_KEY,
        "rate": control.rate,
        "load": {"latest": control.load.last(), "totals": control.load.totals()},
        "services": services,
        "faults": *control.faults.lock().await,
    }))
    .into_response()
}

async fn list(State(control): State<Arc<Control>>) -> Response {
    faults_answer(&control.faults.lock().await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultSet {
    faults: Vec<Fault>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OneFault {
    fault: Fault,
}

/// The body as JSON whatever its declared type (`curl -d` sends form encoding);
/// a `400` naming the expected shape otherwise.
fn parse<T: DeserializeOwned>(body: &[u8], shape: &str) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("the body is not {shape}: {e}"))
}

async fn replace(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let set: FaultSet = match parse(&body, r#"{"faults": ["service:latency=300ms", ...]}"#) {
        Ok(set) => set,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    match control.change(|_| set.faults).await {
        Ok(faults) => faults_answer(&faults),
        Err(response) => response,
    }
}

async fn add(State(control): State<Arc<Control>>, body: Bytes) -> Response {
    let fault = match parse::<OneFault>(&body, r#"{"fault": "service:latency=300ms"}"#) {
        Ok(one) => one.fault,
        Err(message) => return error(StatusCode::BAD_REQUEST, message),
    };
    let added = control
        .change(|current| current.iter().cloned().chain([fault]).collect())
        .await;
    match added {
        Ok(faults) => faults_answer(&faults),
        Err(response) => response,
    }
}

async fn clear(State(control): State<Arc<Control>>) -> Response {
    match control.change(|_| Vec::new()).await {
        Ok(faults) => faults_answer(&faults),
        Err(response) => response,
    }
}
