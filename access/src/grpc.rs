//! Authentication for tonic services, as an interceptor: a request without
//! valid credentials gets UNAUTHENTICATED, a role that does not cover the
//! service PERMISSION_DENIED, a source with too many failures
//! RESOURCE_EXHAUSTED with retry info. Requests that pass carry their
//! [`crate::Principal`] and [`weft_store::TenantId`] as extensions.
//!
//! Only tokens are taken here (Bearer, or as the password of Basic): the
//! interceptor runs on the reactor, where Argon2 password checks must not.

use std::sync::Arc;

use tonic::{Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::authenticator::{Authenticator, Denied};
use crate::role::Role;

/// Authenticates each request of the service it wraps for `needed`.
#[derive(Clone)]
pub struct Interceptor {
    auth: Arc<Authenticator>,
    needed: Role,
}

impl Interceptor {
    pub fn new(auth: Arc<Authenticator>, needed: Role) -> Self {
        Self { auth, needed }
    }
}

impl tonic::service::Interceptor for Interceptor {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let authorization = request
            .metadata()
            .get("authorization")
            .map(|value| value.as_bytes());
        let principal = self
            .auth
            .authenticate_without_passwords(peer, authorization, self.needed)
            .map_err(|denied| status(&denied))?;
        request.extensions_mut().insert(principal.tenant.clone());
        request.extensions_mut().insert(principal);
        Ok(request)
    }
}

/// The gRPC status of a request turned away.
pub fn status(denied: &Denied) -> Status {
    let message = denied.to_string();
    match denied {
        Denied::Unauthenticated => Status::unauthenticated(message),
        Denied::Forbidden { .. } => Status::permission_denied(message),
        Denied::Throttled { retry_after } => Status::with_error_details(
            tonic::Code::ResourceExhausted,
            message,
            ErrorDetails::with_retry_info(Some(*retry_after)),
        ),
    }
}
