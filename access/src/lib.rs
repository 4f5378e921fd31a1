//! Who may reach weft, and as whom.
//!
//! [`tls`] encrypts every listener (certificates reloaded when their files
//! change; client certificates required where configured).
//! A [`Credentials`] file lists the tokens and users that may call weft,
//! stored hashed (SHA-256 for random tokens, Argon2id for passwords), each
//! belonging to one tenant with one [`Role`]. The [`Authenticator`] checks
//! every request's `Authorization` against it — [`http`] as an axum
//! middleware, [`grpc`] as a tonic interceptor — and tags the request with
//! its caller's [`Principal`] and [`TenantId`], which is all the collector
//! and the query API look at to pick the tenant's store. It rereads the file
//! when it changes, so new and revoked credentials take effect without a
//! restart, and slows down sources that keep failing.
//!
//! With authentication off every request is the default tenant's admin, so a
//! weft on localhost works as it always did.

mod authenticator;
pub mod credentials;
pub mod grpc;
pub mod http;
mod role;
pub mod tls;

pub use authenticator::{AuthConfig, Authenticator, Denied, Principal};
pub use credentials::{Credentials, CredentialsError};
pub use role::Role;
pub use weft_store::TenantId;

/// A background task (a file watcher) that stops when this is dropped.
#[must_use = "the task stops when this is dropped"]
pub struct BackgroundTask(tokio::task::JoinHandle<()>);

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
