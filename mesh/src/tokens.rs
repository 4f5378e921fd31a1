//! Who may talk to the control plane: Kuma's dataplane tokens, kept in a file.
//!
//! A sidecar presents a token (`Authorization: Bearer weftmesh_…`) bound to
//! one service: with it, it gets certificates for that service only,
//! registers instances of that service only, and reads the mesh config. An
//! admin token may replace the policies. Tokens are 256 random bits shown
//! once at creation; `tokens.toml` in the control plane's state dir keeps
//! only their SHA-256, is written by `weft mesh token` (atomically, owner
//! only) and is reread by a running control plane within a second, so a new
//! or revoked token takes effect without a restart.
//!
//! ```toml
//! [[token]]
//! id = "3f9c2a71"
//! kind = "dataplane"
//! service = "crm-conductor"
//! name = "conductor hosts"
//! created = "2026-11-26T10:00:00Z"
//! expires = "2027-11-26T10:00:00Z"
//! sha256 = "9b74c9897bac770ffc029102a200c5de..."
//! ```

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_access::credentials::{
    is_sha256_hex, random_id, random_token, read_toml_file, token_sha256, write_toml_file,
    TomlFileError,
};
use weft_access::FileVersion;

use crate::config::is_service_name;

/// What every mesh token's text starts with (and so tells it from a weft
/// API token, `weft_…`).
pub const TOKEN_PREFIX: &str = "weftmesh_";

/// The name of the token file in the control plane's state dir.
pub const TOKENS_FILE: &str = "tokens.toml";

/// What a token lets its bearer do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenScope {
    /// A sidecar of this service.
    Dataplane(String),
    /// Whoever manages the mesh: `PUT /policies`.
    Admin,
}

impl fmt::Display for TokenScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Dataplane(service) => write!(f, "dataplane of {service}"),
            Self::Admin => f.write_str("admin"),
        }
    }
}

/// The tokens of one control plane.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default, rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
}

/// One token, by the hash of its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A short public handle, to list and revoke the token by.
    pub id: String,
    pub kind: TokenKind,
    /// The service of a dataplane token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// What the token is for, free text.
    #[serde(default)]
    pub name: String,
    /// RFC 3339.
    #[serde(default)]
    pub created: String,
    /// RFC 3339; none: until revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
    /// Lowercase hex SHA-256 of the token's text.
    pub sha256: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Dataplane,
    Admin,
}

/// Why the token file could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read the token file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the token file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid token file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Rejected(String),
}

impl TokenEntry {
    fn scope(&self) -> Option<TokenScope> {
        match (self.kind, &self.service) {
            (TokenKind::Dataplane, Some(service)) => Some(TokenScope::Dataplane(service.clone())),
            (TokenKind::Admin, None) => Some(TokenScope::Admin),
            _ => None,
        }
    }

    fn expires_at(&self) -> Result<Option<SystemTime>, String> {
        self.expires
            .as_deref()
            .map(|text| {
                humantime::parse_rfc3339_weak(text)
                    .map_err(|e| format!("token {}: expires {text:?}: {e}", self.id))
            })
            .transpose()
    }
}

impl TokenFile {
    /// The token file of the control plane keeping its state in `state_dir`.
    pub fn path_in(state_dir: &Path) -> PathBuf {
        state_dir.join(TOKENS_FILE)
    }

    /// Reads and checks the file; one that does not exist yet holds no tokens.
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let invalid = |reason: String| TokenError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file: Self = match read_toml_file(path) {
            Ok(file) => file,
            Err(TomlFileError::Io(source)) => {
                return Err(TokenError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(TomlFileError::Invalid(reason)) => return Err(invalid(reason)),
        };
        file.validate().map_err(invalid)?;
        Ok(file)
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        for token in &self.tokens {
            if !ids.insert(token.id.as_str()) {
                return Err(format!("token id {} appears twice", token.id));
            }
            match token.scope() {
                Some(TokenScope::Dataplane(service)) if !is_service_name(&service) => {
                    return Err(format!(
                        "token {}: {service:?} is not a service name",
                        token.id
                    ))
                }
                Some(_) => {}
                None => {
                    return Err(format!(
                        "token {}: a dataplane token names its service, an admin token none",
                        token.id
                    ))
                }
            }
            token.expires_at()?;
            if !is_sha256_hex(&token.sha256) {
                return Err(format!(
                    "token {}: sha256 must be 64 lowercase hex digits",
                    token.id
                ));
            }
        }
        Ok(())
    }

    /// Writes the file atomically, readable and writable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), TokenError> {
        let write_error = |source| TokenError::Write {
            path: path.to_path_buf(),
            source,
        };
        write_toml_file(path, self).map_err(write_error)
    }

    /// Adds a token and returns it with its text, which is shown once and
    /// never stored.
    pub fn create(
        &mut self,
        scope: TokenScope,
        name: &str,
        valid_for: Option<Duration>,
    ) -> Result<(TokenEntry, String), TokenError> {
        let rejected = |e: weft_access::CredentialsError| TokenError::Rejected(e.to_string());
        let (kind, service) = match scope {
            TokenScope::Dataplane(service) => {
                if !is_service_name(&service) {
                    return Err(TokenError::Rejected(format!(
                        "{service:?} is not a service name (letters, digits, '-', '_', '.')"
                    )));
                }
                (TokenKind::Dataplane, Some(service))
            }
            TokenScope::Admin => (TokenKind::Admin, None),
        };
        let text = random_token(TOKEN_PREFIX).map_err(rejected)?;
        let id = random_id(|id| self.tokens.iter().any(|t| t.id == id)).map_err(rejected)?;
        let now = SystemTime::now();
        let rfc3339 = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
        let entry = TokenEntry {
            id,
            kind,
            service,
            name: name.to_string(),
            created: rfc3339(now),
            expires: valid_for.map(|d| rfc3339(now + d)),
            sha256: token_sha256(&text),
        };
        self.tokens.push(entry.clone());
        Ok((entry, text))
    }

    /// Removes the token with `id`; false if there was none.
    pub fn revoke(&mut self, id: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        self.tokens.len() != before
    }
}

/// Why a request's token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No `Authorization: Bearer` at all.
    Missing,
    /// Unknown, revoked or expired: the same answer for each, so a guesser
    /// learns nothing.
    Invalid,
}

/// A valid token's grant.
#[derive(Clone, Debug)]
pub(crate) struct Grant {
    pub(crate) id: String,
    pub(crate) scope: TokenScope,
    expires: Option<SystemTime>,
}

/// The running control plane's view of the token file.
pub(crate) struct TokenVerifier {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

/// The token file as last read: its version, and the grants by SHA-256.
#[derive(Default)]
struct Loaded {
    version: Option<FileVersion>,
    grants: Arc<HashMap<String, Grant>>,
}

impl TokenVerifier {
    /// Reads the file now; a broken one stops the control plane at start.
    pub(crate) fn load(path: PathBuf) -> Result<Self, TokenError> {
        let verifier = Self {
            path,
            loaded: Mutex::default(),
        };
        verifier.reload_if_changed()?;
        Ok(verifier)
    }

    /// Rereads the file if it changed; on an error the tokens loaded
    /// before stay.
    pub(crate) fn reload_if_changed(&self) -> Result<bool, TokenError> {
        let version = FileVersion::of(&self.path);
        if self.loaded.lock().version == version && version.is_some() {
            return Ok(false);
        }
        let file = TokenFile::load(&self.path)?;
        let mut grants = HashMap::with_capacity(file.tokens.len());
        for token in file.tokens {
            let (Some(scope), Ok(expires)) = (token.scope(), token.expires_at()) else {
                continue; // validated in load
            };
            grants.insert(
                token.sha256.clone(),
                Grant {
                    id: token.id,
                    scope,
                    expires,
                },
            );
        }
        let count = grants.len();
        let mut loaded = self.loaded.lock();
        let changed = loaded.version != version;
        *loaded = Loaded {
            version,
            grants: Arc::new(grants),
        };
        drop(loaded);
        if changed {
            tracing::info!(path = %self.path.display(), tokens = count, "mesh tokens loaded");
        }
        Ok(changed)
    }

    /// The grant of the bearer token in an `Authorization` header value.
    pub(crate) fn verify(&self, authorization: Option<&str>) -> Result<Grant, Refusal> {
        let token = authorization
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(Refusal::Missing)?;
        let grants = self.loaded.lock().grants.clone();
        let grant = grants
            .get(&token_sha256(token))
            .ok_or(Refusal::Invalid)?
            .clone();
        if grant.expires.is_some_and(|at| at <= SystemTime::now()) {
            return Err(Refusal::Invalid);
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_verified_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let path = TokenFile::path_in(dir.path());
        let mut file = TokenFile::default();
        let (db, db_text) = file
            .create(
                TokenScope::Dataplane("crm-database".into()),
                "db hosts",
                None,
            )
            .unwrap();
        let (_, admin_text) = file.create(TokenScope::Admin, "", None).unwrap();
        let (_, expired_text) = file
            .create(
                TokenScope::Dataplane("crm-mobile".into()),
                "",
                Some(Duration::ZERO),
            )
            .unwrap();
        file.save(&path).unwrap();
        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&db_text) && stored.contains(&db.sha256));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let verifier = TokenVerifier::load(path.clone()).unwrap();
        let grant = verifier.verify(Some(&format!("Bearer {db_text}"))).unwrap();
        assert_eq!(grant.scope, TokenScope::Dataplane("crm-database".into()));
        let admin = verifier.verify(Some(&format!("Bearer {admin_text}")));
        assert_eq!(admin.unwrap().scope, TokenScope::Admin);
        assert_eq!(
            verifier
                .verify(Some(&format!("Bearer {expired_text}")))
                .unwrap_err(),
            Refusal::Invalid
        );
        assert_eq!(verifier.verify(None).unwrap_err(), Refusal::Missing);
        assert_eq!(
            verifier.verify(Some("Bearer weftmesh_guess")).unwrap_err(),
            Refusal::Invalid
        );

        let mut file = TokenFile::load(&path).unwrap();
        assert!(file.revoke(&db.id));
        assert!(!file.revoke(&db.id));
        file.save(&path).unwrap();
        assert!(verifier.reload_if_changed().unwrap());
        assert_eq!(
            verifier
                .verify(Some(&format!("Bearer {db_text}")))
                .unwrap_err(),
            Refusal::Invalid
        );
    }

    #[test]
    fn a_broken_file_is_refused_and_the_loaded_tokens_stay() {
        let dir = tempfile::tempdir().unwrap();
        let path = TokenFile::path_in(dir.path());
        let mut file = TokenFile::default();
        let (_, text) = file.create(TokenScope::Admin, "", None).unwrap();
        file.save(&path).unwrap();
        let verifier = TokenVerifier::load(path.clone()).unwrap();
        std::fs::write(
            &path,
            "[[token]]\nid = \"x\"\nkind = \"dataplane\"\nsha256 = \"00\"\n",
        )
        .unwrap();
        let error = verifier.reload_if_changed().unwrap_err().to_string();
        assert!(error.contains("names its service"), "{error}");
        assert!(verifier.verify(Some(&format!("Bearer {text}"))).is_ok());
        assert!(TokenVerifier::load(path).is_err());
        let bad_name = TokenFile::default().create(TokenScope::Dataplane("a b".into()), "", None);
        assert!(bad_name.is_err());
    }
}
