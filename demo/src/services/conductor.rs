//! `crm-conductor`: the integration layer. Each request fans out to the
//! external CRM (`crm-salesforce`) and the system of record (`crm-database`)
//! at once, maps Salesforce's shapes onto the CRM's and reconciles the two,
//! each step an INTERNAL span of its own.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde_json::{json, Map, Value};

use super::{internal, json_body, passed_on, Callees, CrmService, CustomerTier, Failure};

const SALESFORCE: CrmService = CrmService::Salesforce;
const DATABASE: CrmService = CrmService::Database;
const SF_API: &str = "/services/data/v60.0";

pub(crate) fn routes(callees: Callees) -> Router {
    Router::new()
        .route("/accounts/{id}/profile", get(profile))
        .route("/accounts/{id}/contacts", get(contacts))
        .route("/accounts/{id}/opportunities", get(opportunities))
        .route("/opportunities", post(create_opportunity))
        .with_state(callees)
}

async fn profile(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    Path(id): Path<u64>,
) -> Result<Response, Failure> {
    let (remote_path, local_path) = (
        format!("{SF_API}/sobjects/Account/{id}"),
        format!("/accounts/{id}"),
    );
    let (remote, local) = futures::join!(
        callees.get(SALESFORCE, "/sobjects/Account/{id}", &remote_path, &tier),
        callees.get(DATABASE, "/accounts/{id}", &local_path, &tier),
    );
    let (remote_status, remote) = remote?;
    let (local_status, local) = local?;
    if !local_status.is_success() {
        return Ok(passed_on(local_status, local));
    }
    if !remote_status.is_success() {
        tracing::warn!(
            account.id = id,
            "account {id} is missing from Salesforce; serving the local record alone"
        );
    }
    let remote = remote_status
        .is_success()
        .then(|| internal("map Salesforce Account", || map_salesforce_account(&remote)));
    let profile = internal("merge account profile", || {
        let mut merged = local.as_object().cloned().unwrap_or_default();
        if let Some(Value::Object(remote)) = remote {
            merged.extend(remote);
        }
        Value::Object(merged)
    });
    Ok(Json(profile).into_response())
}

/// Salesforce's PascalCase Account onto the CRM's fields.
fn map_salesforce_account(account: &Value) -> Value {
    let mut mapped = Map::new();
    for (from, to) in [
        ("Id", "salesforce_id"),
        ("Rating", "rating"),
        ("NumberOfEmployees", "employees"),
        ("OwnerId", "owner_id"),
        ("LastActivityDate", "last_activity"),
    ] {
        if let Some(value) = account.get(from) {
            mapped.insert(to.to_string(), value.clone());
        }
    }
    Value::Object(mapped)
}

async fn contacts(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    Path(id): Path<u64>,
) -> Result<Response, Failure> {
    let (status, contacts) = callees
        .get(
            DATABASE,
            "/accounts/{id}/contacts",
            &format!("/accounts/{id}/contacts"),
            &tier,
        )
        .await?;
    if !status.is_success() {
        return Ok(passed_on(status, contacts));
    }
    let normalized = internal("normalize contacts", || {
        contacts
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| {
                json!({
                    "id": c["id"],
                    "name": format!("{} {}", c["first_name"].as_str().unwrap_or(""), c["last_name"].as_str().unwrap_or("")),
                    "email": c["email"],
                    "title": c["title"],
                })
            })
            .collect::<Vec<_>>()
    });
    Ok(Json(normalized).into_response())
}

async fn opportunities(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    Path(id): Path<u64>,
) -> Result<Response, Failure> {
    let (remote_path, local_path) = (
        format!("{SF_API}/sobjects/Account/{id}/Opportunities"),
        format!("/accounts/{id}/opportunities"),
    );
    let (remote, local) = futures::join!(
        callees.get(
            SALESFORCE,
            "/sobjects/Account/{id}/Opportunities",
            &remote_path,
            &tier
        ),
        callees.get(DATABASE, "/accounts/{id}/opportunities", &local_path, &tier),
    );
    let (_, remote) = remote?;
    let (local_status, local) = local?;
    if !local_status.is_success() {
        return Ok(passed_on(local_status, local));
    }
    let reconciled = internal("reconcile opportunities", || {
        let mut all: Vec<Value> = local
            .as_array()
            .into_iter()
            .flatten()
            .map(|o| {
                json!({"name": o["name"], "stage": o["stage"], "amount": o["amount"],
                       "close_date": o["close_date"], "source": "crm"})
            })
            .collect();
        all.extend(remote["records"].as_array().into_iter().flatten().map(|o| {
            json!({"name": o["Name"], "stage": o["StageName"], "amount": o["Amount"],
                   "close_date": o["CloseDate"], "source": "salesforce"})
        }));
        all.sort_by(|a, b| a["close_date"].as_str().cmp(&b["close_date"].as_str()));
        all
    });
    Ok(Json(reconciled).into_response())
}

/// Written to the system of record first, then synced to Salesforce.
async fn create_opportunity(
    State(callees): State<Callees>,
    Extension(tier): Extension<CustomerTier>,
    body: Option<Json<Value>>,
) -> Result<Response, Failure> {
    let body = json_body(body)?;
    let (status, created) = callees
        .call(
            DATABASE,
            Method::POST,
            "/opportunities",
            "/opportunities",
            &tier,
            Some(&body),
        )
        .await?;
    if !status.is_success() {
        return Ok(passed_on(status, created));
    }
    let salesforce = internal("map Opportunity for Salesforce", || {
        json!({
            "AccountId": format!("001{:015}", body["account_id"].as_u64().unwrap_or(0)),
            "Name": body["name"],
            "StageName": body["stage"],
            "Amount": body["amount"],
            "CloseDate": body["close_date"],
        })
    });
    let (status, synced) = callees
        .call(
            SALESFORCE,
            Method::POST,
            "/sobjects/Opportunity",
            &format!("{SF_API}/sobjects/Opportunity"),
            &tier,
            Some(&salesforce),
        )
        .await?;
    if !status.is_success() {
        tracing::warn!(opportunity.id = %created["id"], "Salesforce refused the opportunity: {synced}");
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": created["id"], "salesforce_id": synced["id"] })),
    )
        .into_response())
}
