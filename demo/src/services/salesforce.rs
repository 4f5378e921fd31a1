//! `crm-salesforce`: stands in for an external CRM SaaS API, in Salesforce's
//! REST shapes (`/services/data/v60.0/sobjects/…`, PascalCase fields, error
//! arrays) and with its latency: log-normal, a median around 20 ms and a tail
//! a few times longer, as a remote API over the internet has.

use std::time::Duration;

use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::database::STAGES;
use super::{seeded, ACCOUNTS, COMPANIES};

const API: &str = "/services/data/v60.0";

pub(crate) fn routes() -> Router {
    Router::new()
        .route(&format!("{API}/sobjects/Account/{{id}}"), get(account))
        .route(
            &format!("{API}/sobjects/Account/{{id}}/Opportunities"),
            get(opportunities),
        )
        .route(
            &format!("{API}/sobjects/Opportunity"),
            post(create_opportunity),
        )
}

/// exp(N(ln 20 ms, 0.5²)): p50 20 ms, p99 about 64 ms.
async fn remote_latency() {
    let normal = {
        // Box–Muller from two uniforms.
        let (u, v) = (fastrand::f64().max(f64::MIN_POSITIVE), fastrand::f64());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    };
    let millis = (20f64.ln() + 0.5 * normal).exp().min(2_000.0);
    tokio::time::sleep(Duration::from_secs_f64(millis / 1_000.0)).await;
}

fn salesforce_id(prefix: &str, id: u64) -> String {
    format!("{prefix}{id:015}")
}

fn not_found(id: u64) -> Response {
    tracing::warn!(account.id = id, "Salesforce has no account {id}");
    (
        StatusCode::NOT_FOUND,
        Json(
            json!([{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]),
        ),
    )
        .into_response()
}

async fn account(Path(id): Path<u64>) -> Response {
    remote_latency().await;
    if !(1..=ACCOUNTS).contains(&id) {
        return not_found(id);
    }
    let mut rng = seeded(2, id);
    let rating = ["Hot", "Warm", "Cold"][rng.usize(..3)];
    Json(json!({
        "attributes": {"type": "Account", "url": format!("{API}/sobjects/Account/{id}")},
        "Id": salesforce_id("001", id),
        "Name": format!("{} {}", COMPANIES[rng.usize(..COMPANIES.len())], id),
        "Rating": rating,
        "NumberOfEmployees": rng.u32(10..50_000),
        "OwnerId": salesforce_id("005", rng.u64(1..40)),
        "LastActivityDate": format!("2026-{:02}-{:02}", rng.u8(1..12), rng.u8(1..29)),
    }))
    .into_response()
}

async fn opportunities(Path(id): Path<u64>) -> Response {
    remote_latency().await;
    if !(1..=ACCOUNTS).contains(&id) {
        return not_found(id);
    }
    let mut rng = seeded(3, id);
    let records: Vec<Value> = (0..rng.u8(0..3))
        .map(|n| {
            json!({
                "Id": salesforce_id("006", id * 10 + u64::from(n)),
                "Name": format!("Expansion {}", 2026 + u32::from(n)),
                "StageName": STAGES[rng.usize(..STAGES.len())],
                "Amount": rng.u32(10_000..2_000_000),
                "Probability": rng.u8(5..95),
                "CloseDate": format!("2027-{:02}-01", rng.u8(1..13)),
            })
        })
        .collect();
    Json(json!({ "totalSize": records.len(), "done": true, "records": records })).into_response()
}

async fn create_opportunity(body: Option<Json<Value>>) -> Response {
    remote_latency().await;
    let Some(Json(body)) = body else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!([{"errorCode": "JSON_PARSER_ERROR", "message": "the body is not an Opportunity"}])),
        )
            .into_response();
    };
    if body["AccountId"].as_str().is_none() || body["Name"].as_str().is_none() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!([{"errorCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [AccountId, Name]"}])),
        )
            .into_response();
    }
    let id = salesforce_id("006", fastrand::u64(1_000_000..9_000_000));
    tracing::info!(salesforce.id = %id, "Opportunity created");
    (
        StatusCode::CREATED,
        Json(json!({ "id": id, "success": true, "errors": [] })),
    )
        .into_response()
}
