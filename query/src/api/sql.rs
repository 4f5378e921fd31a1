//! `POST /api/v1/sql`: one read-only SQL statement, answered as JSON, CSV or
//! an Arrow IPC stream depending on `Accept`.

use axum::extract::rejection::JsonRejection;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, ApiResult, TenantEngine};
use crate::format;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SqlRequest {
    sql: String,
}

/// The result formats, by the media type a client asks for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Json,
    Csv,
    Arrow,
}

fn negotiate(headers: &HeaderMap) -> Format {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // The first type the client lists that weft serves wins.
    for media_type in accept
        .split(',')
        .map(|t| t.split(';').next().unwrap_or("").trim())
    {
        match media_type {
            "application/json" => return Format::Json,
            "text/csv" => return Format::Csv,
            format::ARROW_STREAM => return Format::Arrow,
            _ => {}
        }
    }
    Format::Json
}

pub(super) async fn run(
    TenantEngine(engine): TenantEngine,
    headers: HeaderMap,
    request: Result<Json<SqlRequest>, JsonRejection>,
) -> ApiResult {
    let Json(request) = request?;
    if request.sql.trim().is_empty() {
        return Err(ApiError::bad_request("\"sql\" is empty"));
    }
    let result = engine.statement(&request.sql).await?;
    let truncated = HeaderValue::from_static(if result.truncated { "true" } else { "false" });
    let mut response = match negotiate(&headers) {
        Format::Json => Json(json!({
            "columns": format::json_columns(&result.schema),
            "rows": format::json_rows(&result.schema, &result.batches)?,
            "truncated": result.truncated,
        }))
        .into_response(),
        Format::Csv => (
            [(header::CONTENT_TYPE, "text/csv; charset=utf-8")],
            format::csv(&result.schema, &result.batches)?,
        )
            .into_response(),
        Format::Arrow => (
            [(header::CONTENT_TYPE, format::ARROW_STREAM)],
            format::arrow_ipc(&result.schema, &result.batches)?,
        )
            .into_response(),
    };
    // CSV and Arrow have no field for it: a header says the rows were cut at the limit.
    response.headers_mut().insert("x-weft-truncated", truncated);
    Ok(response)
}
