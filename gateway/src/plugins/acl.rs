//! `acl`: after an auth plugin has identified the consumer, lets in only the
//! consumers of the allowed groups (or keeps out those of the denied ones): 403 otherwise.

use std::sync::Arc;

use futures::future::BoxFuture;
use http::StatusCode;
use serde::Deserialize;

use super::{forward, AuthenticatedConsumer, Middleware};
use crate::http::{gateway_response, ProxyRequest, ProxyResponse, ProxyService};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Settings {
    /// Groups let in (all others are refused).
    allow: Vec<String>,
    /// Groups refused (all others are let in).
    deny: Vec<String>,
}

pub(crate) struct Acl {
    settings: Settings,
}

impl Acl {
    pub(crate) fn new(settings: Settings) -> Result<Self, String> {
        if settings.allow.is_empty() == settings.deny.is_empty() {
            return Err("set exactly one of allow or deny".to_string());
        }
        Ok(Self { settings })
    }

    fn admits(&self, groups: &[String]) -> bool {
        if self.settings.allow.is_empty() {
            !groups.iter().any(|g| self.settings.deny.contains(g))
        } else {
            groups.iter().any(|g| self.settings.allow.contains(g))
        }
    }
}

impl Middleware for Acl {
    fn handle(
        self: Arc<Self>,
        request: ProxyRequest,
        next: ProxyService,
    ) -> BoxFuture<'static, ProxyResponse> {
        let verdict = match request.extensions().get::<AuthenticatedConsumer>() {
            None => Err(gateway_response(
                StatusCode::UNAUTHORIZED,
                "Unauthorized: the acl plugin needs an authentication plugin on the route",
            )),
            Some(AuthenticatedConsumer(consumer)) if !self.admits(&consumer.groups) => Err(
                gateway_response(StatusCode::FORBIDDEN, "You cannot consume this service"),
            ),
            Some(_) => Ok(()),
        };
        Box::pin(async move {
            match verdict {
                Ok(()) => forward(next, request).await,
                Err(refusal) => refusal,
            }
        })
    }
}
