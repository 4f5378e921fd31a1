//! The HTTP API on the query port (16686): `/api/v1/*` for weft's own
//! clients and the Jaeger query API (`/api/*`) for Grafana and Jaeger's UI.
//!
//! Every answer is built as SQL and run by the same [`QueryEngine`] that
//! serves `POST /api/v1/sql` — there is no second query path. Errors are
//! `{"error": "..."}` with a 4xx status for a bad request (bad SQL, an
//! invalid parameter) and 5xx only when weft itself failed.

mod jaeger;
mod latency;
pub mod params;
mod rca;
mod search;
mod sql;
mod trends;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use weft_store::TenantId;

use crate::engine::{QueryEngine, QueryEngines, QueryError};

/// The routes of the query API, for the server to mount. Each request must
/// carry its caller's [`TenantId`] as an extension (put there by
/// `weft_access::http::require`) and sees only that tenant's data; one
/// without is answered 500.
pub fn router(engines: Arc<QueryEngines>) -> Router {
    Router::new()
        .route("/api/v1/sql", post(sql::run))
        .route("/api/v1/traces", get(search::find_traces))
        .route("/api/v1/traces/{trace_id}", get(search::trace))
        .route("/api/v1/logs", get(search::find_logs))
        .route("/api/v1/services", get(search::services))
        .route(
            "/api/v1/services/{service}/operations",
            get(search::operations),
        )
        .route("/api/v1/dependencies", get(search::dependencies))
        .route("/api/v1/analysis/rca", get(rca::rca))
        .route("/api/v1/analysis/latency", get(latency::latency))
        .route("/api/v1/analysis/trends", get(trends::trends))
        .route("/api/services", get(jaeger::services))
        .route(
            "/api/services/{service}/operations",
            get(jaeger::service_operations),
        )
        .route("/api/operations", get(jaeger::operations))
        .route("/api/traces", get(jaeger::find_traces))
        .route("/api/traces/{trace_id}", get(jaeger::trace))
        .route("/api/dependencies", get(jaeger::dependencies))
        .with_state(engines)
}

/// The query engine of the request's tenant.
pub(crate) struct TenantEngine(pub Arc<QueryEngine>);

impl FromRequestParts<Arc<QueryEngines>> for TenantEngine {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        engines: &Arc<QueryEngines>,
    ) -> Result<Self, ApiError> {
        let tenant = parts
            .extensions
            .get::<TenantId>()
            .ok_or_else(|| ApiError::internal("the request was not authenticated to a tenant"))?;
        Ok(Self(engines.get(tenant)?))
    }
}

/// An error answer: a status and a message naming the problem.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<QueryError> for ApiError {
    fn from(error: QueryError) -> Self {
        let status = match error {
            // A query that is wrong, too slow or too big for the limits is
            // the request's problem: retrying it unchanged will not help.
            QueryError::Invalid(_) | QueryError::Timeout(_) | QueryError::TooBig(_) => {
                StatusCode::BAD_REQUEST
            }
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            QueryError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        if status.is_server_error() {
            tracing::error!(%error, "query failed");
        }
        Self {
            status,
            message: error.to_string(),
        }
    }
}

impl From<arrow::error::ArrowError> for ApiError {
    fn from(error: arrow::error::ArrowError) -> Self {
        Self::internal(format!("encoding the result: {error}"))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::bad_request(rejection.body_text())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = match rejection.status() {
            StatusCode::UNPROCESSABLE_ENTITY => StatusCode::BAD_REQUEST,
            status => status,
        };
        Self {
            status,
            message: rejection.body_text(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

type ApiResult<T = Response> = Result<T, ApiError>;
