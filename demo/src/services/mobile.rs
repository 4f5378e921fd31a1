//! `crm-mobile`: the API the CRM's mobile app calls (through the gateway):
//! accounts, their contacts and opportunities, and new opportunities. It asks
//! `crm-conductor` for the data and shapes it into the app's screens.

use axum::extract::{Path, State};
use axum::http::Method;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Value};

use super::{internal, json_body, passed_on, Callees, CrmService, CustomerTier, Failure};

const CONDUCTOR: CrmService = CrmService::Conductor;

pub(crate) fn routes(callees: Callees) -> Router {
    Router::new()
        .route("/api/accounts/{id}", get(account))
        .route("/api/accounts/{id}/contacts", get(contacts))
        .route("/api/accounts/{id}/opportunities", get(opportunities))
        .route("/api/opportunities", post(create_opportunity))
        .with_state(callees)
}

async fn fetch(
    callees: &Callees,
    tier: &CustomerTier,
    route: &str,
    path: String,
) -> Result<Result<Value, Response>, Failure> {
    let (status, body) = callees.get(CONDUCTOR, route, &path, tier).await?;
    Ok(if status.is_success() {
        Ok(body)
    } else {
        Err(passed_on(status, body))
    })
}

async fn account(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    Path(id): Path<u64>,
) -> Result<Response, Failure> {
    let profile = match fetch(
        &callees,
        &tier,
        "/accounts/{id}/profile",
        format!("/accounts/{id}/profile"),
    )
    .await?
    {
        Ok(profile) => profile,
        Err(answer) => return Ok(answer),
    };
    let card = internal("render account card", || {
        json!({
            "title": profile["name"],
            "subtitle": format!("{} · {}", profile["industry"].as_str().unwrap_or("-"), profile["region"].as_str().unwrap_or("-")),
            "badge": profile["tier"],
            "rating": profile["rating"],
            "details": profile,
        })
    });
    Ok(Json(card).into_response())
}

async fn contacts(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    Path(id): Path<u64>,
) -> Result<Response, Failure> {
    Ok(
        match fetch(
            &callees,
            &tier,
            "/accounts/{id}/contacts",
            format!("/accounts/{id}/contacts"),
        )
        .await?
        {
            Ok(contacts) => Json(json!({ "account_id": id, "contacts": contacts })).into_response(),
            Err(answer) => answer,
        },
    )
}

async fn opportunities(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    Path(id): Path<u64>,
) -> Result<Response, Failure> {
    let list = match fetch(
        &callees,
        &tier,
        "/accounts/{id}/opportunities",
        format!("/accounts/{id}/opportunities"),
    )
    .await?
    {
        Ok(list) => list,
        Err(answer) => return Ok(answer),
    };
    let pipeline = internal("summarize pipeline", || {
        let total: f64 = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|o| o["amount"].as_f64())
            .sum();
        json!({ "account_id": id, "pipeline_total": total, "opportunities": list })
    });
    Ok(Json(pipeline).into_response())
}

async fn create_opportunity(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    body: Option<Json<Value>>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let (status, created) = callees
        .call(
            CONDUCTOR,
            Method::POST,
            "/opportunities",
            "/opportunities",
            &tier,
            Some(&body),
        )
        .await?;
    if status.is_success() {
        tracing::info!(opportunity.id = %created["id"], "opportunity created from the mobile app");
    }
    Ok(passed_on(status, created))
}
