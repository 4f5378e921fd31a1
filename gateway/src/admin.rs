//! The Admin API (port 8001), in the shape Kong's users know: lists under
//! `data`, upstream health per target, and `POST /config` to replace the
//! declarative configuration (as Kong does without a database).
//! Credentials never leave the gateway: keys and secrets are not serialized.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::config::GatewayConfig;
use crate::server::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(info))
        .route("/status", get(status))
        .route("/services", get(services))
        .route("/services/{name}", get(service))
        .route("/routes", get(routes))
        .route("/upstreams", get(upstreams))
        .route("/upstreams/{name}/health", get(upstream_health))
        .route("/plugins", get(plugins))
        .route("/consumers", get(consumers))
        .route("/config", post(replace_config))
        .route("/config/reload", post(reload))
        .route("/metrics", get(metrics))
        .with_state(shared)
}

fn message(status: StatusCode, text: impl Into<String>) -> Response {
    (status, Json(json!({ "message": text.into() }))).into_response()
}

async fn info(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "config_path": shared.config_path.as_ref().map(|p| p.display().to_string()),
        "plugins": {"available_on_server": crate::plugins::available()},
    }))
}

async fn status(State(shared): State<Arc<Shared>>) -> Json<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    let runtime = shared.runtime.load();
    let t = shared.telemetry.counters();
    Json(json!({
        "services": runtime.config.services.len(),
        "routes": runtime.config.services.iter().map(|s| s.routes.len()).sum::<usize>(),
        "upstreams": runtime.upstreams.len(),
        "telemetry": {
            "spans_exported": t.spans_exported.load(Relaxed),
            "spans_dropped": t.spans_dropped.load(Relaxed),
            "logs_exported": t.logs_exported.load(Relaxed),
            "logs_dropped": t.logs_dropped.load(Relaxed),
        }
    }))
}

async fn services(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let runtime = shared.runtime.load();
    Json(json!({ "data": runtime.config.services }))
}

async fn service(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let runtime = shared.runtime.load();
    match runtime.config.services.iter().find(|s| s.name == name) {
        Some(service) => Json(service).into_response(),
        None => message(StatusCode::NOT_FOUND, format!("no service named {name:?}")),
    }
}

async fn routes(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let runtime = shared.runtime.load();
    let data: Vec<Value> = runtime
        .config
        .services
        .iter()
        .flat_map(|s| {
            s.routes.iter().map(move |r| {
                let mut route = serde_json::to_value(r).unwrap_or_default();
                route["service"] = json!(s.name);
                route
            })
        })
        .collect();
    Json(json!({ "data": data }))
}

async fn upstreams(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let runtime = shared.runtime.load();
    Json(json!({ "data": runtime.config.upstreams }))
}

async fn upstream_health(State(shared): State<Arc<Shared>>, Path(name): Path<String>) -> Response {
    let runtime = shared.runtime.load();
    match runtime.upstreams.get(&name) {
        Some(upstream) => Json(json!({ "data": upstream.health() })).into_response(),
        None => message(StatusCode::NOT_FOUND, format!("no upstream named {name:?}")),
    }
}

async fn plugins(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let runtime = shared.runtime.load();
    let config = &runtime.config;
    let mut data: Vec<Value> = config
        .plugins
        .iter()
        .map(|p| json!({"name": p.name, "enabled": p.enabled, "config": p.config, "scope": "global"}))
        .collect();
    for s in &config.services {
        data.extend(
            s.plugins
                .iter()
                .map(|p| json!({"name": p.name, "enabled": p.enabled, "config": p.config, "service": s.name})),
        );
        for r in &s.routes {
            data.extend(
                r.plugins
                    .iter()
                    .map(|p| json!({"name": p.name, "enabled": p.enabled, "config": p.config, "route": r.name})),
            );
        }
    }
    Json(json!({ "data": data }))
}

async fn consumers(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let runtime = shared.runtime.load();
    Json(json!({ "data": runtime.config.consumers }))
}

/// Replaces the configuration with the YAML body; the file on disk is untouched.
async fn replace_config(State(shared): State<Arc<Shared>>, body: String) -> Response {
    match GatewayConfig::parse(&body).and_then(|config| shared.apply(config)) {
        Ok(()) => message(StatusCode::OK, "configuration applied"),
        Err(e) => message(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Re-reads the configuration file, as SIGHUP does.
async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    if shared.config_path.is_none() {
        return message(
            StatusCode::CONFLICT,
            "the gateway was started without a configuration file",
        );
    }
    match shared.reload() {
        Ok(()) => message(StatusCode::OK, "configuration reloaded"),
        Err(e) => message(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}
