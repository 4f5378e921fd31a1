//! `key-auth` and `jwt`: identify the consumer or answer 401.
//!
//! Both tell the upstream who called (`X-Consumer-Username`, `X-Consumer-Groups`)
//! after removing any such header the client sent, so it cannot be forged.

use std::collections::HashMap;
use std::sync::Arc;

use futures::future::BoxFuture;
use http::{header, HeaderName, HeaderValue, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use super::{forward, header_names, AuthenticatedConsumer, Middleware};
use crate::config::{ConsumerConfig, JwtAlgorithm};
use crate::http::{gateway_response, ProxyRequest, ProxyResponse, ProxyService};

const CONSUMER_USERNAME: HeaderName = HeaderName::from_static("x-consumer-username");
const CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");

/// The consumers of one configuration, indexed by their credentials.
#[derive(Default)]
pub(crate) struct Consumers {
    by_key: HashMap<String, Arc<ConsumerConfig>>,
    by_jwt_key: HashMap<String, JwtIssuer>,
}

struct JwtIssuer {
    consumer: Arc<ConsumerConfig>,
    algorithm: Algorithm,
    key: DecodingKey,
}

impl Consumers {
    /// Indexes `consumers`; fails on a duplicate credential or an unreadable key.
    pub(crate) fn new(consumers: &[ConsumerConfig]) -> Result<Self, String> {
        let mut index = Consumers::default();
        for consumer in consumers {
            let shared = Arc::new(consumer.clone());
            for credential in &consumer.keyauth_credentials {
                if index
                    .by_key
                    .insert(credential.key.clone(), shared.clone())
                    .is_some()
                {
                    return Err(format!(
                        "consumer {:?} reuses another consumer's API key",
                        consumer.username
                    ));
                }
            }
            for jwt in &consumer.jwt_secrets {
                let (algorithm, key) = match jwt.algorithm {
                    JwtAlgorithm::HS256 => (
                        Algorithm::HS256,
                        DecodingKey::from_secret(
                            jwt.secret.as_deref().unwrap_or_default().as_bytes(),
                        ),
                    ),
                    JwtAlgorithm::RS256 => (
                        Algorithm::RS256,
                        DecodingKey::from_rsa_pem(
                            jwt.rsa_public_key.as_deref().unwrap_or_default().as_bytes(),
                        )
                        .map_err(|e| {
                            format!("consumer {:?}: rsa_public_key: {e}", consumer.username)
                        })?,
                    ),
                };
                let issuer = JwtIssuer {
                    consumer: shared.clone(),
                    algorithm,
                    key,
                };
                if index.by_jwt_key.insert(jwt.key.clone(), issuer).is_some() {
                    return Err(format!("JWT key {:?} belongs to two consumers", jwt.key));
                }
            }
        }
        Ok(index)
    }
}

/// Marks the request (for upstream and later plugins) and the response (for
/// the access log) with the consumer, then forwards.
async fn forward_as(
    consumer: Arc<ConsumerConfig>,
    mut request: ProxyRequest,
    next: ProxyService,
) -> ProxyResponse {
    let headers = request.headers_mut();
    if let Ok(name) = HeaderValue::try_from(consumer.username.as_str()) {
        headers.insert(CONSUMER_USERNAME, name);
    }
    if let Ok(groups) = HeaderValue::try_from(consumer.groups.join(", ")) {
        if !consumer.groups.is_empty() {
            headers.insert(CONSUMER_GROUPS, groups);
        }
    }
    request
        .extensions_mut()
        .insert(AuthenticatedConsumer(consumer.clone()));
    let mut response = forward(next, request).await;
    response
        .extensions_mut()
        .insert(AuthenticatedConsumer(consumer));
    response
}

/// Drops consumer headers the client sent itself, so only the gateway names the consumer.
fn forget_claimed_consumer(request: &mut ProxyRequest) {
    request.headers_mut().remove(CONSUMER_USERNAME);
    request.headers_mut().remove(CONSUMER_GROUPS);
}

fn unauthorized(message: &str, scheme: &'static str) -> ProxyResponse {
    let mut response = gateway_response(StatusCode::UNAUTHORIZED, message);
    response
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(scheme));
    response
}

/// The value of query parameter `name`, and the query without it.
fn take_query_param(query: &str, name: &str) -> Option<(String, String)> {
    let mut found = None;
    let mut rest = form_urlencoded::Serializer::new(String::new());
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        if found.is_none() && key == name {
            found = Some(value.into_owned());
        } else {
            rest.append_pair(&key, &value);
        }
    }
    found.map(|value| (value, rest.finish()))
}

/// Replaces the request's query string.
fn set_query(request: &mut ProxyRequest, query: &str) {
    let path = request.uri().path();
    let path_and_query = if query.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{query}")
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = http::Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct KeyAuthSettings {
    /// Header and query parameter names that may carry the key.
    key_names: Vec<String>,
    /// Look for the key in headers.
    key_in_header: bool,
    /// Look for the key in the query string.
    key_in_query: bool,
    /// Remove the key before forwarding.
    hide_credentials: bool,
}

impl Default for KeyAuthSettings {
    fn default() -> Self {
        Self {
            key_names: vec!["apikey".to_string()],
            key_in_header: true,
            key_in_query: true,
            hide_credentials: false,
        }
    }
}

pub(crate) struct KeyAuth {
    settings: KeyAuthSettings,
    headers: Vec<HeaderName>,
    consumers: Arc<Consumers>,
}

impl KeyAuth {
    pub(crate) fn new(
        settings: KeyAuthSettings,
        consumers: Arc<Consumers>,
    ) -> Result<Self, String> {
        if settings.key_names.is_empty() {
            return Err("key_names is empty".to_string());
        }
        let headers = header_names(&settings.key_names)?;
        Ok(Self {
            settings,
            headers,
            consumers,
        })
    }

    fn key(&self, request: &mut ProxyRequest) -> Option<String> {
        if self.settings.key_in_header {
            for name in &self.headers {
                if let Some(key) = request
                    .headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(String::from)
                {
                    if self.settings.hide_credentials {
                        request.headers_mut().remove(name);
                    }
                    return Some(key);
                }
            }
        }
        if self.settings.key_in_query {
            let query = request.uri().query().unwrap_or_default().to_string();
            for name in &self.settings.key_names {
                if let Some((key, rest)) = take_query_param(&query, name) {
                    if self.settings.hide_credentials {
                        set_query(request, &rest);
                    }
                    return Some(key);
                }
            }
        }
        None
    }
}

impl Middleware for KeyAuth {
    fn handle(
        self: Arc<Self>,
        mut request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        forget_claimed_consumer(&mut request);
        let found = self.key(&mut request);
        Box::pin(async move {
            let Some(key) = found else {
                return unauthorized("No API key found in request", "Key realm=\"weft\"");
            };
            match self.consumers.by_key.get(&key) {
                Some(consumer) => forward_as(consumer.clone(), request, next).await,
                None => unauthorized("Invalid authentication credentials", "Key realm=\"weft\""),
            }
        })
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct JwtSettings {
    /// Headers that may carry `Bearer <token>`.
    header_names: Vec<String>,
    /// Query parameters that may carry the token.
    uri_param_names: Vec<String>,
    /// Claim whose value selects the consumer's credential.
    key_claim_name: String,
    /// Registered claims checked: `exp`, `nbf`.
    claims_to_verify: Vec<String>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            header_names: vec!["authorization".to_string()],
            uri_param_names: vec!["jwt".to_string()],
            key_claim_name: "iss".to_string(),
            claims_to_verify: vec!["exp".to_string()],
        }
    }
}

pub(crate) struct Jwt {
    settings: JwtSettings,
    headers: Vec<HeaderName>,
    consumers: Arc<Consumers>,
}

impl Jwt {
    pub(crate) fn new(settings: JwtSettings, consumers: Arc<Consumers>) -> Result<Self, String> {
        if let Some(claim) = settings
            .claims_to_verify
            .iter()
            .find(|c| !matches!(c.as_str(), "exp" | "nbf"))
        {
            return Err(format!(
                "claims_to_verify: {claim:?} is not one of exp, nbf"
            ));
        }
        let headers = header_names(&settings.header_names)?;
        Ok(Self {
            settings,
            headers,
            consumers,
        })
    }

    fn token(&self, request: &ProxyRequest) -> Option<String> {
        for name in &self.headers {
            if let Some(value) = request.headers().get(name).and_then(|v| v.to_str().ok()) {
                let value = value.trim();
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .unwrap_or(value);
                return Some(token.trim().to_string());
            }
        }
        let query = request.uri().query().unwrap_or_default();
        self.settings
            .uri_param_names
            .iter()
            .find_map(|name| take_query_param(query, name).map(|(v, _)| v))
    }

    /// The consumer the token proves, or the 401 message.
    fn verify(&self, token: &str) -> Result<Arc<ConsumerConfig>, &'static str> {
        let claims = jsonwebtoken::dangerous::insecure_decode::<serde_json::Value>(token)
            .map_err(|_| "Bad token; invalid JSON or encoding")?
            .claims;
        let key = claims
            .get(&self.settings.key_claim_name)
            .and_then(|v| v.as_str())
            .ok_or("No mandatory key claim in token")?;
        let issuer = self
            .consumers
            .by_jwt_key
            .get(key)
            .ok_or("No credentials found for the token's key claim")?;
        let mut validation = Validation::new(issuer.algorithm);
        validation.leeway = 0;
        validation.validate_exp = self.settings.claims_to_verify.iter().any(|c| c == "exp");
        validation.validate_nbf = self.settings.claims_to_verify.iter().any(|c| c == "nbf");
        validation.validate_aud = false;
        validation.required_spec_claims = self.settings.claims_to_verify.iter().cloned().collect();
        match jsonwebtoken::decode::<serde_json::Value>(token, &issuer.key, &validation) {
            Ok(_) => Ok(issuer.consumer.clone()),
            Err(e) => Err(match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => "Token expired",
                jsonwebtoken::errors::ErrorKind::ImmatureSignature => "Token not valid yet",
                jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => "Invalid algorithm",
                jsonwebtoken::errors::ErrorKind::MissingRequiredClaim(_) => {
                    "Token lacks a claim to verify"
                }
                _ => "Invalid signature",
            }),
        }
    }
}

impl Middleware for Jwt {
    fn handle(
        self: Arc<Self>,
        mut request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        forget_claimed_consumer(&mut request);
        let verified = match self.token(&request) {
            None => Err("Unauthorized"),
            Some(token) => self.verify(&token),
        };
        Box::pin(async move {
            match verified {
                Ok(consumer) => forward_as(consumer, request, next).await,
                Err(message) => unauthorized(message, "Bearer realm=\"weft\""),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_parameter_is_taken_out_and_the_rest_kept() {
        let (value, rest) = take_query_param("a=1&apikey=s%3Dcret&b=x+y", "apikey").unwrap();
        assert_eq!(value, "s=cret");
        assert_eq!(rest, "a=1&b=x+y");
        assert!(take_query_param("a=1", "apikey").is_none());
    }
}
