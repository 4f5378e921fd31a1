//! Checking one request's credentials.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use base64::Engine as _;
use parking_lot::Mutex;
use weft_store::TenantId;

use crate::credentials::{token_sha256, Credentials, CredentialsError};
use crate::role::Role;
use crate::FileVersion;

/// How authentication is set up.
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Off: every request is the default tenant's admin.
    pub enabled: bool,
    /// The tokens and users (see [`Credentials`]).
    pub credentials_file: PathBuf,
    /// Failed attempts a source address may make per minute; past them it
    /// gets 429 / RESOURCE_EXHAUSTED until the minute has refilled.
    pub max_failures_per_minute: u32,
    /// How often the credentials file is checked for changes.
    pub reload_interval: Duration,
}

/// Who a request comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    pub tenant: TenantId,
    pub role: Role,
    /// `token <id>` or `user <name>`, for logs; never a secret.
    pub name: String,
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No credentials, or ones that are not valid. Deliberately says nothing
    /// about which part was wrong.
    #[error("authentication required: send a valid token (Authorization: Bearer) or user and password (HTTP basic)")]
    Unauthenticated,
    /// Valid credentials whose role does not cover this listener.
    #[error("{who} has the role {role}, which may not {action}")]
    Forbidden {
        who: String,
        role: Role,
        action: &'static str,
    },
    /// Too many failed attempts from this address.
    #[error("too many failed authentication attempts from this address; retry in {} s", .retry_after.as_secs().max(1))]
    Throttled { retry_after: Duration },
}

/// What the `Authorization` header presented.
enum Presented<'a> {
    Token(&'a str),
    Password { user: String, password: String },
}

/// The credentials file, indexed for lookups.
#[derive(Default)]
struct Index {
    tokens_by_sha256: HashMap<String, Principal>,
    users: HashMap<String, (Principal, String)>,
}

impl Index {
    fn new(credentials: &Credentials) -> Self {
        Self {
            tokens_by_sha256: credentials
                .tokens
                .iter()
                .map(|t| {
                    let principal = Principal {
                        tenant: t.tenant.clone(),
                        role: t.role,
                        name: format!("token {}", t.id),
                    };
                    (t.sha256.clone(), principal)
                })
                .collect(),
            users: credentials
                .users
                .iter()
                .map(|u| {
                    let principal = Principal {
                        tenant: u.tenant.clone(),
                        role: u.role,
                        name: format!("user {}", u.name),
                    };
                    (u.name.clone(), (principal, u.password_hash.clone()))
                })
                .collect(),
        }
    }
}

/// Checks credentials against the credentials file and keeps it current.
pub struct Authenticator {
    config: AuthConfig,
    index: ArcSwap<Index>,
    /// The file last loaded (`None` before the first load or while absent).
    loaded_version: Mutex<Option<Option<FileVersion>>>,
    /// Passwords verified since the last reload, by the SHA-256 of the
    /// header that carried them: Argon2 is slow on purpose, and a browser
    /// sends the same header with every request.
    verified_passwords: Mutex<HashMap<String, Principal>>,
    failures: FailureLimiter,
}

impl Authenticator {
    /// Loads the credentials (when enabled); a broken file stops start-up.
    pub fn new(config: AuthConfig) -> Result<Arc<Self>, CredentialsError> {
        let authenticator = Arc::new(Self {
            failures: FailureLimiter::new(config.max_failures_per_minute),
            index: ArcSwap::from_pointee(Index::default()),
            loaded_version: Mutex::new(None),
            verified_passwords: Mutex::new(HashMap::new()),
            config,
        });
        if authenticator.config.enabled {
            authenticator.reload()?;
        }
        Ok(authenticator)
    }

    /// Authentication off: everyone is the default tenant's admin.
    pub fn disabled() -> Arc<Self> {
        Self::new(AuthConfig {
            enabled: false,
            credentials_file: PathBuf::new(),
            max_failures_per_minute: 10,
            reload_interval: Duration::from_secs(1),
        })
        .expect("nothing is loaded when authentication is off")
    }

    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Checks the `Authorization` header of a request from `peer` to a
    /// listener that needs `needed`. Passwords are checked too, which takes
    /// tens of milliseconds of CPU the first time: call it off the reactor
    /// (see [`crate::http`]) unless only tokens can be presented.
    pub fn authenticate(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&[u8]>,
        needed: Role,
    ) -> Result<Principal, Denied> {
        self.check(peer, authorization, needed, true)
    }

    /// [`Authenticator::authenticate`] for tokens only: a user's password
    /// fails like a wrong one, and nothing slow runs.
    pub fn authenticate_without_passwords(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&[u8]>,
        needed: Role,
    ) -> Result<Principal, Denied> {
        self.check(peer, authorization, needed, false)
    }

    fn check(
        &self,
        peer: Option<IpAddr>,
        authorization: Option<&[u8]>,
        needed: Role,
        passwords: bool,
    ) -> Result<Principal, Denied> {
        if !self.config.enabled {
            return Ok(Principal {
                tenant: TenantId::default_tenant(),
                role: Role::Admin,
                name: "anonymous".to_string(),
            });
        }
        let peer = peer.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        self.failures.check(peer)?;
        let principal = authorization
            .and_then(parse_authorization)
            .and_then(|presented| {
                self.verify(authorization.unwrap_or_default(), presented, passwords)
            });
        let Some(principal) = principal else {
            self.failures.record(peer);
            return Err(Denied::Unauthenticated);
        };
        if !principal.role.covers(needed) {
            return Err(Denied::Forbidden {
                who: principal.name,
                role: principal.role,
                action: match needed {
                    Role::Ingest => "send telemetry",
                    Role::Read => "read data",
                    Role::Admin => "read weft's own metrics",
                },
            });
        }
        Ok(principal)
    }

    fn verify(
        &self,
        header: &[u8],
        presented: Presented<'_>,
        passwords: bool,
    ) -> Option<Principal> {
        let index = self.index.load();
        match presented {
            Presented::Token(token) => index.tokens_by_sha256.get(&token_sha256(token)).cloned(),
            Presented::Password { user, password } => {
                if let Some((principal, hash)) = index.users.get(&user) {
                    if !passwords {
                        return None;
                    }
                    let key = token_sha256(&String::from_utf8_lossy(header));
                    if let Some(known) = self.verified_passwords.lock().get(&key) {
                        return Some(known.clone());
                    }
                    let hash = PasswordHash::new(hash).ok()?;
                    Argon2::default()
                        .verify_password(password.as_bytes(), &hash)
                        .ok()?;
                    let mut verified = self.verified_passwords.lock();
                    if verified.len() >= 10_000 {
                        verified.clear();
                    }
                    verified.insert(key, principal.clone());
                    Some(principal.clone())
                } else {
                    // Grafana and other clients that only speak basic auth
                    // send a token as the password, under any user name.
                    index
                        .tokens_by_sha256
                        .get(&token_sha256(&password))
                        .cloned()
                }
            }
        }
    }

    /// Rereads the credentials file if it changed since it was last loaded.
    /// A file that fails to load leaves the credentials as they were (and
    /// is reported once, not at every check, until it changes again).
    pub fn reload(&self) -> Result<bool, CredentialsError> {
        let path = &self.config.credentials_file;
        let version = FileVersion::of(path);
        {
            let loaded = self.loaded_version.lock();
            if *loaded == Some(version) {
                return Ok(false);
            }
        }
        *self.loaded_version.lock() = Some(version);
        let credentials = Credentials::load(path)?;
        self.index.store(Arc::new(Index::new(&credentials)));
        self.verified_passwords.lock().clear();
        tracing::info!(
            file = %path.display(),
            tokens = credentials.tokens.len(),
            users = credentials.users.len(),
            "credentials loaded"
        );
        Ok(true)
    }

    /// Rereads the credentials file whenever it changes, until the
    /// returned task is dropped.
    pub fn watch(self: &Arc<Self>) -> Option<crate::BackgroundTask> {
        if !self.config.enabled {
            return None;
        }
        let this = self.clone();
        Some(crate::BackgroundTask::reload_every(
            self.config.reload_interval,
            "credentials",
            move || this.reload(),
        ))
    }
}

fn parse_authorization(header: &[u8]) -> Option<Presented<'_>> {
    let header = std::str::from_utf8(header).ok()?;
    let (scheme, value) = header.split_once(' ')?;
    let value = value.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        Some(Presented::Token(value))
    } else if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(value)
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (user, password) = decoded.split_once(':')?;
        Some(Presented::Password {
            user: user.to_string(),
            password: password.to_string(),
        })
    } else {
        None
    }
}

/// A token bucket of failed attempts per source address.
struct FailureLimiter {
    per_minute: f64,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

struct Bucket {
    /// Failures this address may still make.
    allowance: f64,
    updated: Instant,
}

/// Addresses tracked at most; past it, those that have refilled are forgotten.
const MAX_TRACKED_ADDRESSES: usize = 65_536;

impl FailureLimiter {
    fn new(per_minute: u32) -> Self {
        Self {
            per_minute: f64::from(per_minute.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.allowance =
            (bucket.allowance + elapsed * self.per_minute / 60.0).min(self.per_minute);
        bucket.updated = now;
    }

    fn check(&self, peer: IpAddr) -> Result<(), Denied> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let Some(bucket) = buckets.get_mut(&peer) else {
            return Ok(());
        };
        self.refill(bucket, now);
        if bucket.allowance >= 1.0 {
            return Ok(());
        }
        let wait = (1.0 - bucket.allowance) * 60.0 / self.per_minute;
        Err(Denied::Throttled {
            retry_after: Duration::from_secs_f64(wait).max(Duration::from_secs(1)),
        })
    }

    fn record(&self, peer: IpAddr) {
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_TRACKED_ADDRESSES && !buckets.contains_key(&peer) {
            let full = self.per_minute;
            for bucket in buckets.values_mut() {
                self.refill(bucket, now);
            }
            buckets.retain(|_, b| b.allowance < full);
            if buckets.len() >= MAX_TRACKED_ADDRESSES {
                buckets.clear();
            }
        }
        let bucket = buckets.entry(peer).or_insert(Bucket {
            allowance: self.per_minute,
            updated: now,
        });
        self.refill(bucket, now);
        bucket.allowance -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup(max_failures: u32) -> (tempfile::TempDir, Arc<Authenticator>, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.toml");
        let mut credentials = Credentials::default();
        let (_, token) = credentials
            .create_token("acme".parse().unwrap(), Role::Ingest, "")
            .unwrap();
        credentials
            .set_user("alice", "beta".parse().unwrap(), Role::Read, "s3cret-pass")
            .unwrap();
        credentials.save(&path).unwrap();
        let auth = Authenticator::new(AuthConfig {
            enabled: true,
            credentials_file: path,
            max_failures_per_minute: max_failures,
            reload_interval: Duration::from_millis(10),
        })
        .unwrap();
        (dir, auth, token)
    }

    fn basic(user: &str, password: &str) -> Vec<u8> {
        let encoded =
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        format!("Basic {encoded}").into_bytes()
    }

    #[test]
    fn tokens_and_passwords_name_their_tenant_and_role() {
        let (_dir, auth, token) = setup(10);
        let peer = Some(IpAddr::from([10, 0, 0, 1]));
        let bearer = format!("Bearer {token}").into_bytes();
        let principal = auth
            .authenticate(peer, Some(&bearer), Role::Ingest)
            .unwrap();
        assert_eq!(
            (principal.tenant.as_str(), principal.role),
            ("acme", Role::Ingest)
        );
        // A token as the password of basic auth, as Grafana sends it.
        let principal = auth
            .authenticate(peer, Some(&basic("grafana", &token)), Role::Ingest)
            .unwrap();
        assert_eq!(principal.tenant.as_str(), "acme");

        let user = basic("alice", "s3cret-pass");
        let principal = auth.authenticate(peer, Some(&user), Role::Read).unwrap();
        assert_eq!(
            (principal.tenant.as_str(), principal.role),
            ("beta", Role::Read)
        );
        assert!(matches!(
            auth.authenticate(peer, Some(&user), Role::Ingest),
            Err(Denied::Forbidden { .. })
        ));
    }

    #[test]
    fn every_wrong_credential_gets_the_same_answer_and_repeated_failures_are_throttled() {
        let (_dir, auth, token) = setup(4);
        let peer = Some(IpAddr::from([10, 0, 0, 2]));
        let wrong: [Option<Vec<u8>>; 4] = [
            None,
            Some(format!("Bearer {token}x").into_bytes()),
            Some(basic("alice", "wrong-password")),
            Some(basic("mallory", "s3cret-pass")),
        ];
        for header in &wrong {
            assert_eq!(
                auth.authenticate(peer, header.as_deref(), Role::Ingest),
                Err(Denied::Unauthenticated)
            );
        }
        // The fifth attempt is refused before its credentials are looked at,
        // even good ones; another address is unaffected.
        let bearer = format!("Bearer {token}").into_bytes();
        assert!(matches!(
            auth.authenticate(peer, Some(&bearer), Role::Ingest),
            Err(Denied::Throttled { .. })
        ));
        assert!(auth
            .authenticate(
                Some(IpAddr::from([10, 0, 0, 3])),
                Some(&bearer),
                Role::Ingest
            )
            .is_ok());
    }

    #[test]
    fn revoking_a_token_takes_effect_at_the_next_reload() {
        let (dir, auth, token) = setup(100);
        let path = dir.path().join("credentials.toml");
        let bearer = format!("Bearer {token}").into_bytes();
        assert!(auth.authenticate(None, Some(&bearer), Role::Ingest).is_ok());
        let mut credentials = Credentials::load(&path).unwrap();
        let id = credentials.tokens[0].id.clone();
        assert!(credentials.revoke_token(&id));
        credentials.save(&path).unwrap();
        assert!(auth.reload().unwrap());
        assert_eq!(
            auth.authenticate(None, Some(&bearer), Role::Ingest),
            Err(Denied::Unauthenticated)
        );
    }

    #[test]
    fn with_authentication_off_everyone_is_the_default_tenant() {
        let auth = Authenticator::disabled();
        let principal = auth.authenticate(None, None, Role::Admin).unwrap();
        assert!(principal.tenant.is_default());
    }
}
