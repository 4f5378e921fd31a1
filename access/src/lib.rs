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

impl BackgroundTask {
    /// Calls `reload` (on a blocking thread: it reads files) every
    /// `interval` until dropped. A failed reload is logged as keeping `what`
    /// loaded before; `reload` itself decides whether anything changed.
    fn reload_every<E: std::fmt::Display + Send + 'static>(
        interval: std::time::Duration,
        what: &'static str,
        reload: impl Fn() -> Result<bool, E> + Send + Sync + 'static,
    ) -> Self {
        let reload = std::sync::Arc::new(reload);
        Self(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let reload = reload.clone();
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || reload()).await {
                    tracing::error!(error = %e, "keeping the {what} loaded before");
                }
            }
        }))
    }
}

/// Tells one version of a file from the next: editors, `weft token` and
/// certificate renewals replace files, which changes their inode even
/// within one mtime tick. `None` for a file that cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileVersion {
    modified: std::time::SystemTime,
    len: u64,
    inode: u64,
}

impl FileVersion {
    pub fn of(path: &std::path::Path) -> Option<Self> {
        let metadata = std::fs::metadata(path).ok()?;
        Some(Self {
            modified: metadata.modified().unwrap_or(std::time::UNIX_EPOCH),
            len: metadata.len(),
            inode: std::os::unix::fs::MetadataExt::ino(&metadata),
        })
    }
}

impl Drop for BackgroundTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}
