//! `cors`: answers preflight requests itself and marks actual responses with
//! the `Access-Control-*` headers browsers need, for the allowed origins only.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use serde::Deserialize;

use super::{forward, Middleware};
use crate::http::{Body, ProxyRequest, ProxyResponse, ProxyService};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Allowed origins (`https://app.example.com`), or `*` for any.
    origins: Vec<String>,
    /// Methods allowed in preflight answers.
    methods: Vec<String>,
    /// Request headers allowed; when empty, those the preflight asks for.
    headers: Vec<String>,
    /// Response headers the browser may read.
    exposed_headers: Vec<String>,
    /// Allow cookies and credentials (the origin is echoed instead of `*`).
    credentials: bool,
    /// Seconds a preflight answer may be cached.
    max_age: Option<u64>,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            origins: vec!["*".to_string()],
            methods: ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE", "OPTIONS"]
                .map(String::from)
                .to_vec(),
            headers: Vec::new(),
            exposed_headers: Vec::new(),
            credentials: false,
            max_age: None,
        }
    }
}

pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: HeaderValue,
    headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn joined(values: &[String], what: &str) -> Result<Option<HeaderValue>, String> {
    if values.is_empty() {
        return Ok(None);
    }
    HeaderValue::try_from(values.join(", "))
        .map(Some)
        .map_err(|_| format!("{what} contain a character not allowed in a header"))
}

impl Cors {
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        for method in &settings.methods {
            method
                .parse::<Method>()
                .map_err(|_| format!("{method:?} is not an HTTP method"))?;
        }
        Ok(Self {
            any_origin: settings.origins.iter().any(|o| o == "*"),
            origins: settings
                .origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_string())
                .collect(),
            methods: joined(&settings.methods, "methods")?
                .unwrap_or(HeaderValue::from_static("GET")),
            headers: joined(&settings.headers, "headers")?,
            exposed: joined(&settings.exposed_headers, "exposed_headers")?,
            credentials: settings.credentials,
            max_age: settings.max_age.map(HeaderValue::from),
        })
    }

    fn allowed(&self, origin: &HeaderValue) -> bool {
        self.any_origin
            || origin
                .to_str()
                .is_ok_and(|o| self.origins.iter().any(|allowed| allowed == o))
    }

    fn mark(&self, origin: &HeaderValue, headers: &mut HeaderMap) {
        let value = if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        if !self.any_origin || self.credentials {
            headers.append(header::VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

impl Middleware for Cors {
    fn handle(
        self: Arc<Self>,
        request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        let origin = request.headers().get(header::ORIGIN).cloned();
        let preflight = request.method() == Method::OPTIONS
            && request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        Box::pin(async move {
            let Some(origin) = origin else {
                return forward(next, request).await;
            };
            if preflight {
                let mut response = http::Response::new(Body::empty());
                *response.status_mut() = StatusCode::NO_CONTENT;
                if self.allowed(&origin) {
                    let headers = response.headers_mut();
                    self.mark(&origin, headers);
                    headers.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
                    let asked = request
                        .headers()
                        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
                        .cloned();
                    if let Some(allowed) = self.headers.clone().or(asked) {
                        headers.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, allowed);
                    }
                    if let Some(max_age) = &self.max_age {
                        headers.insert(header::ACCESS_CONTROL_MAX_AGE, max_age.clone());
                    }
                }
                return response;
            }
            let mut response = forward(next, request).await;
            if self.allowed(&origin) {
                self.mark(&origin, response.headers_mut());
                if let Some(exposed) = &self.exposed {
                    response
                        .headers_mut()
                        .insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
                }
            }
            response
        })
    }
}
