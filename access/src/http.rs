//! Authentication for axum routers: every request of a router carries valid
//! credentials for the router's role, or gets 401 / 403 / 429 with a JSON
//! `{"error": ...}` naming the problem.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};

use crate::authenticator::{Authenticator, Denied};
use crate::role::Role;

/// `router` with every request authenticated for `needed`. Requests that
/// pass carry their [`crate::Principal`] and [`weft_store::TenantId`] as
/// extensions. The peer address (for throttling failures) comes from axum's
/// `ConnectInfo<SocketAddr>`, when the server provides it.
pub fn require(router: Router, auth: Arc<Authenticator>, needed: Role) -> Router {
    router.layer(axum::middleware::from_fn(move |request, next| {
        authenticate(auth.clone(), needed, request, next)
    }))
}

async fn authenticate(
    auth: Arc<Authenticator>,
    needed: Role,
    mut request: Request,
    next: Next,
) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec());
    let is_password = authorization
        .as_deref()
        .is_some_and(|a| a.len() > 6 && a[..6].eq_ignore_ascii_case(b"basic "));
    let outcome = if auth.enabled() && is_password {
        // Argon2 takes tens of milliseconds: not on the reactor.
        let checking = auth.clone();
        tokio::task::spawn_blocking(move || {
            checking.authenticate(peer, authorization.as_deref(), needed)
        })
        .await
        .unwrap_or(Err(Denied::Unauthenticated))
    } else {
        auth.authenticate(peer, authorization.as_deref(), needed)
    };
    match outcome {
        Ok(principal) => {
            request.extensions_mut().insert(principal.tenant.clone());
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(denied) => denied_response(&denied),
    }
}

/// The answer to a request turned away.
pub fn denied_response(denied: &Denied) -> Response {
    let body = Json(serde_json::json!({ "error": denied.to_string() }));
    match denied {
        Denied::Unauthenticated => {
            let mut response = (StatusCode::UNAUTHORIZED, body).into_response();
            // Both schemes: API clients send tokens, browsers ask for a
            // user and password when they see Basic.
            let headers = response.headers_mut();
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"weft\""),
            );
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"weft\", charset=\"UTF-8\""),
            );
            response
        }
        Denied::Forbidden { .. } => (StatusCode::FORBIDDEN, body).into_response(),
        Denied::Throttled { retry_after } => {
            let mut response = (StatusCode::TOO_MANY_REQUESTS, body).into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after.as_secs().max(1).into());
            response
        }
    }
}
