//! `request-size-limiting`: 413 for bodies over the limit — at once when the
//! declared `Content-Length` says so, while streaming when the body is chunked
//! (the proxy turns the cut-off into a 413).

use std::sync::Arc;

use futures::future::BoxFuture;
use http::StatusCode;
use serde::Deserialize;

use super::{forward, Middleware};
use crate::http::{gateway_response, Body, ProxyRequest, ProxyResponse, ProxyService};

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "lowercase")]
enum SizeUnit {
    Bytes,
    Kilobytes,
    Megabytes,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Largest body allowed, in `size_unit`s.
    allowed_payload_size: u64,
    /// Unit of `allowed_payload_size`.
    size_unit: SizeUnit,
    /// Refuse bodies without a `Content-Length` (411).
    require_content_length: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            allowed_payload_size: 128,
            size_unit: SizeUnit::Megabytes,
            require_content_length: false,
        }
    }
}

pub(crate) struct SizeLimit {
    limit: u64,
    require_content_length: bool,
}

pub(crate) const TOO_LARGE: &str = "Request size limit exceeded";

impl SizeLimit {
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        let unit = match settings.size_unit {
            SizeUnit::Bytes => 1,
            SizeUnit::Kilobytes => 1024,
            SizeUnit::Megabytes => 1024 * 1024,
        };
        let limit = settings
            .allowed_payload_size
            .checked_mul(unit)
            .ok_or("allowed_payload_size is too large")?;
        Ok(Self {
            limit,
            require_content_length: settings.require_content_length,
        })
    }
}

impl Middleware for SizeLimit {
    fn handle(
        self: Arc<Self>,
        request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        let declared = request
            .headers()
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let has_body = declared.is_some()
            || request
                .headers()
                .contains_key(http::header::TRANSFER_ENCODING);
        Box::pin(async move {
            match declared {
                Some(length) if length > self.limit => {
                    gateway_response(StatusCode::PAYLOAD_TOO_LARGE, TOO_LARGE)
                }
                Some(_) => forward(next, request).await,
                None if has_body && self.require_content_length => gateway_response(
                    StatusCode::LENGTH_REQUIRED,
                    "A valid Content-Length header is required",
                ),
                None => {
                    let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
                    let request =
                        request.map(|body| Body::new(http_body_util::Limited::new(body, limit)));
                    forward(next, request).await
                }
            }
        })
    }
}
