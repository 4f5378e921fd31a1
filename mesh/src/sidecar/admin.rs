//! The sidecar's admin API: its identity and config (`GET /`, `GET /config`)
//! and `/metrics`. Keep it on loopback.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use super::Shared;

pub(super) async fn serve(
    shared: Arc<Shared>,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/", get(overview))
        .route("/config", get(config))
        .route("/metrics", get(metrics))
        .with_state(shared);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::warn!(error = %e, "sidecar admin API stopped");
    }
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

async fn overview(State(shared): State<Arc<Shared>>) -> Response {
    let tls = shared.tls.load();
    let snapshot = shared.config.load();
    Json(json!({
        "service": shared.service,
        "spiffe_id": tls.identity.to_string(),
        "certificate_expires_at": rfc3339(tls.not_after),
        "certificate_generation": tls.generation,
        "config_version": snapshot.version,
        "app": shared.app.to_string(),
        "app_protocol": shared.app_protocol,
        "outbound": shared.outbound,
    }))
    .into_response()
}

async fn config(State(shared): State<Arc<Shared>>) -> Response {
    let snapshot = shared.config.load();
    Json(json!({
        "version": snapshot.version,
        "mesh": snapshot.mesh,
        "services": snapshot.services,
        "policies": snapshot.policies.policies(),
    }))
    .into_response()
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        shared.metrics.render(),
    )
        .into_response()
}
