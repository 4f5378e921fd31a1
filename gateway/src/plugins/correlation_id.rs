//! `correlation-id`: every request carries an id upstream (the client's, or a
//! new one), optionally echoed back to the client.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;

use super::{forward, header_name, Middleware};
use crate::http::{ProxyRequest, ProxyResponse, ProxyService};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Header carrying the id.
    header_name: String,
    /// Also set it on the response.
    echo_downstream: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            header_name: "X-Request-Id".to_string(),
            echo_downstream: true,
        }
    }
}

pub(crate) struct CorrelationId {
    header: HeaderName,
    echo: bool,
}

impl CorrelationId {
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        let header = header_name(&settings.header_name)?;
        Ok(Self {
            header,
            echo: settings.echo_downstream,
        })
    }
}

impl Middleware for CorrelationId {
    fn handle(
        self: Arc<Self>,
        mut request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        let id = match request.headers().get(&self.header) {
            Some(id) if !id.is_empty() => id.clone(),
            _ => {
                let id = HeaderValue::try_from(uuid::Uuid::now_v7().to_string())
                    .expect("a UUID is a valid header value");
                request
                    .headers_mut()
                    .insert(self.header.clone(), id.clone());
                id
            }
        };
        Box::pin(async move {
            let mut response = forward(next, request).await;
            if self.echo {
                response.headers_mut().insert(self.header.clone(), id);
            }
            response
        })
    }
}
