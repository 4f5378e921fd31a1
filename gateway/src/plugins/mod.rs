//! Plugins: each concern one tower layer around the route's proxy service.
//!
//! A route's stack is built once per configuration from the global, service
//! and route plugins (the most specific of the same name wins) and ordered
//! by Kong's plugin priorities, so correlation ids exist before auth runs and
//! rate limits see the authenticated consumer.

mod acl;
mod auth;
mod correlation_id;
mod cors;
mod rate_limiting;
mod size_limit;
mod transformer;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use serde::de::DeserializeOwned;
use tower::{Layer, Service, ServiceExt};

use crate::config::{ConfigError, ConsumerConfig, PluginConfig};
use crate::http::{ProxyRequest, ProxyResponse, ProxyService};

pub(crate) use auth::Consumers;
pub(crate) use size_limit::TOO_LARGE;

/// One concern applied to a request on its way in and to the response on
/// its way out. `next` is the rest of the route's stack.
pub(crate) trait Middleware: Send + Sync + 'static {
    fn handle(
        self: Arc<Self>,
        request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse>;
}

/// Sends `request` down the rest of the stack.
pub(crate) async fn forward(next: ProxyService, request: ProxyRequest) -> ProxyResponse {
    match next.oneshot(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

/// The layer that puts a [`Middleware`] in front of a service.
pub(crate) struct MiddlewareLayer(pub(crate) Arc<dyn Middleware>);

impl Layer<ProxyService> for MiddlewareLayer {
    type Service = ProxyService;
    fn layer(&self, next: ProxyService) -> ProxyService {
        ProxyService::new(MiddlewareService {
            middleware: self.0.clone(),
            next,
        })
    }
}

#[derive(Clone)]
struct MiddlewareService {
    middleware: Arc<dyn Middleware>,
    next: ProxyService,
}

impl Service<ProxyRequest> for MiddlewareService {
    type Response = ProxyResponse;
    type Error = Infallible;
    type Future = futures::future::Map<
        BoxFuture<'static, ProxyResponse>,
        fn(ProxyResponse) -> Result<ProxyResponse, Infallible>,
    >;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // The rest of the stack is readied when the request reaches it.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: ProxyRequest) -> Self::Future {
        use futures::FutureExt;
        self.middleware
            .clone()
            .handle(request, self.next.clone())
            .map(Ok)
    }
}

/// Every plugin weft knows, by Kong's name, with Kong's priority (higher runs first).
const PLUGINS: &[(&str, u32)] = &[
    ("correlation-id", 100_001),
    ("cors", 2_000),
    ("jwt", 1_450),
    ("key-auth", 1_250),
    ("request-size-limiting", 951),
    ("acl", 950),
    ("rate-limiting", 910),
    ("request-transformer", 801),
    ("response-transformer", 800),
];

fn priority(name: &str) -> Option<u32> {
    PLUGINS.iter().find(|(n, _)| *n == name).map(|(_, p)| *p)
}

fn settings<T: DeserializeOwned>(plugin: &PluginConfig) -> Result<T, String> {
    let value = if plugin.config.is_null() {
        serde_json::json!({})
    } else {
        plugin.config.clone()
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}

/// The plugin's middleware, or why its settings are wrong.
fn instantiate(
    plugin: &PluginConfig,
    consumers: &Arc<Consumers>,
) -> Result<Arc<dyn Middleware>, String> {
    Ok(match plugin.name.as_str() {
        "correlation-id" => Arc::new(correlation_id::CorrelationId::new(settings(plugin)?)?),
        "cors" => Arc::new(cors::Cors::new(settings(plugin)?)?),
        "jwt" => Arc::new(auth::Jwt::new(settings(plugin)?, consumers.clone())?),
        "key-auth" => Arc::new(auth::KeyAuth::new(settings(plugin)?, consumers.clone())?),
        "request-size-limiting" => Arc::new(size_limit::SizeLimit::new(settings(plugin)?)?),
        "acl" => Arc::new(acl::Acl::new(settings(plugin)?)?),
        "rate-limiting" => Arc::new(rate_limiting::RateLimiting::new(settings(plugin)?)?),
        "request-transformer" => Arc::new(transformer::Transformer::request(settings(plugin)?)?),
        "response-transformer" => Arc::new(transformer::Transformer::response(settings(plugin)?)?),
        other => {
            let known: Vec<&str> = PLUGINS.iter().map(|(n, _)| *n).collect();
            return Err(format!(
                "unknown plugin {other:?}; known: {}",
                known.join(", ")
            ));
        }
    })
}

/// Checks each plugin's name and settings.
pub(crate) fn validate(plugins: &[PluginConfig], at: &str) -> Result<(), ConfigError> {
    let nobody = Arc::new(Consumers::default());
    for (i, plugin) in plugins.iter().enumerate() {
        instantiate(plugin, &nobody).map_err(|reason| ConfigError::Invalid {
            at: format!("{at}[{i}]"),
            reason: format!("{}: {reason}", plugin.name),
            line: None,
        })?;
    }
    Ok(())
}

/// The layers of one route, outermost first: the enabled plugins of the
/// three levels, the most specific of each name, in priority order.
pub(crate) fn route_layers(
    levels: [&[PluginConfig]; 3],
    consumers: &Arc<Consumers>,
) -> Result<Vec<(String, MiddlewareLayer)>, String> {
    let mut effective: BTreeMap<&str, &PluginConfig> = BTreeMap::new();
    for level in levels {
        for plugin in level {
            effective.insert(plugin.name.as_str(), plugin);
        }
    }
    let mut chosen: Vec<&PluginConfig> = effective.into_values().filter(|p| p.enabled).collect();
    chosen.sort_by_key(|p| std::cmp::Reverse(priority(&p.name).unwrap_or(0)));
    chosen
        .into_iter()
        .map(|p| Ok((p.name.clone(), MiddlewareLayer(instantiate(p, consumers)?))))
        .collect()
}

/// The consumer an auth plugin identified, in the request's extensions (for
/// the plugins after it) and the response's (for the access log).
#[derive(Debug, Clone)]
pub(crate) struct AuthenticatedConsumer(pub(crate) Arc<ConsumerConfig>);

/// A header name from a plugin's settings, or why it is not one.
pub(crate) fn header_name(text: &str) -> Result<http::HeaderName, String> {
    http::HeaderName::from_bytes(text.trim().as_bytes())
        .map_err(|_| format!("{text:?} is not a header name"))
}

/// A list of header names from a plugin's settings.
pub(crate) fn header_names(texts: &[String]) -> Result<Vec<http::HeaderName>, String> {
    texts.iter().map(|t| header_name(t)).collect()
}

/// Names of the plugins this build knows.
pub(crate) fn available() -> Vec<&'static str> {
    PLUGINS.iter().map(|(name, _)| *name).collect()
}
