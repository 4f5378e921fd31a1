//! The credentials file: every token and user that may reach weft.
//!
//! A TOML file (`credentials.toml` in the data directory unless configured
//! otherwise) that `weft token` and `weft user` edit and a running weft
//! rereads when it changes. Secrets are never stored: a token is kept as the
//! SHA-256 of its text (tokens are 256 random bits, so a fast hash is as good
//! as a slow one), a password as an Argon2id PHC string. The file is written
//! whole to a temporary file and renamed over the old one, readable by its
//! owner only, so a reader never sees half of it.
//!
//! ```toml
//! [[token]]
//! id = "3f9c2a71"
//! tenant = "acme"
//! role = "ingest"
//! name = "checkout service"
//! created = "2026-11-26T10:00:00Z"
//! sha256 = "9b74c9897bac770ffc029102a200c5de..."
//!
//! [[user]]
//! name = "alice"
//! tenant = "acme"
//! role = "read"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."
//! ```

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use ring::rand::SecureRandom;
use serde::{Deserialize, Serialize};
use weft_store::TenantId;

use crate::role::Role;

/// What every token's text starts with, so secret scanners and people can
/// tell a weft token when they see one.
pub const TOKEN_PREFIX: &str = "weft_";

/// The tokens and users of one credentials file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Credentials {
    #[serde(default, rename = "token", skip_serializing_if = "Vec::is_empty")]
    pub tokens: Vec<TokenEntry>,
    #[serde(default, rename = "user", skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserEntry>,
}

/// One API token, by the hash of its text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// A short public handle, to list and revoke the token by.
    pub id: String,
    pub tenant: TenantId,
    pub role: Role,
    /// What the token is for, free text.
    #[serde(default)]
    pub name: String,
    /// When it was created (RFC 3339).
    #[serde(default)]
    pub created: String,
    /// Lowercase hex SHA-256 of the token's text.
    pub sha256: String,
}

/// One user who logs in with a name and password (HTTP basic auth).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    pub tenant: TenantId,
    pub role: Role,
    /// Argon2id, as a PHC string.
    pub password_hash: String,
}

/// Why a credentials file could not be used or changed.
#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read the credentials file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the credentials file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid credentials file {path}: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{0}")]
    Rejected(String),
}

impl Credentials {
    /// Reads and checks the file at `path`; a file that does not exist yet
    /// holds no credentials.
    pub fn load(path: &Path) -> Result<Self, CredentialsError> {
        let invalid = |reason: String| CredentialsError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let credentials: Self = match read_toml_file(path) {
            Ok(credentials) => credentials,
            Err(TomlFileError::Io(source)) => {
                return Err(CredentialsError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(TomlFileError::Invalid(reason)) => return Err(invalid(reason)),
        };
        credentials.validate().map_err(invalid)?;
        Ok(credentials)
    }

    fn validate(&self) -> Result<(), String> {
        let mut ids = HashSet::new();
        for token in &self.tokens {
            if !ids.insert(token.id.as_str()) {
                return Err(format!("token id {} appears twice", token.id));
            }
            if !is_sha256_hex(&token.sha256) {
                return Err(format!(
                    "token {}: sha256 must be 64 lowercase hex digits",
                    token.id
                ));
            }
        }
        let mut names = HashSet::new();
        for user in &self.users {
            if user.name.is_empty() || user.name.contains(':') {
                return Err(format!(
                    "user name {:?} must be non-empty and without ':'",
                    user.name
                ));
            }
            if !names.insert(user.name.as_str()) {
                return Err(format!("user {} appears twice", user.name));
            }
            PasswordHash::new(&user.password_hash).map_err(|e| {
                format!("user {}: password_hash is not a PHC string: {e}", user.name)
            })?;
        }
        Ok(())
    }

    /// Writes the file atomically, readable and writable by its owner only.
    pub fn save(&self, path: &Path) -> Result<(), CredentialsError> {
        let write_error = |source| CredentialsError::Write {
            path: path.to_path_buf(),
            source,
        };
        write_toml_file(path, self).map_err(write_error)
    }

    /// Adds a new token and returns it with its text, which is shown once
    /// and never stored.
    pub fn create_token(
        &mut self,
        tenant: TenantId,
        role: Role,
        name: &str,
    ) -> Result<(TokenEntry, String), CredentialsError> {
        let text = random_token(TOKEN_PREFIX)?;
        let id = random_id(|id| self.tokens.iter().any(|t| t.id == id))?;
        let entry = TokenEntry {
            id,
            tenant,
            role,
            name: name.to_string(),
            created: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            sha256: token_sha256(&text),
        };
        self.tokens.push(entry.clone());
        Ok((entry, text))
    }

    /// Removes the token with `id`; false if there was none.
    pub fn revoke_token(&mut self, id: &str) -> bool {
        let before = self.tokens.len();
        self.tokens.retain(|t| t.id != id);
        self.tokens.len() != before
    }

    /// Adds the user `name`, or sets their tenant, role and password if they exist.
    pub fn set_user(
        &mut self,
        name: &str,
        tenant: TenantId,
        role: Role,
        password: &str,
    ) -> Result<(), CredentialsError> {
        if name.is_empty() || name.contains(':') {
            return Err(CredentialsError::Rejected(format!(
                "user name {name:?} must be non-empty and without ':'"
            )));
        }
        if password.len() < 8 {
            return Err(CredentialsError::Rejected(
                "the password must be at least 8 characters".to_string(),
            ));
        }
        let salt = SaltString::encode_b64(&random_bytes::<16>()?)
            .map_err(|e| CredentialsError::Rejected(e.to_string()))?;
        let password_hash = Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map_err(|e| CredentialsError::Rejected(e.to_string()))?
            .to_string();
        self.users.retain(|u| u.name != name);
        self.users.push(UserEntry {
            name: name.to_string(),
            tenant,
            role,
            password_hash,
        });
        Ok(())
    }

    /// Removes the user `name`; false if there was none.
    pub fn remove_user(&mut self, name: &str) -> bool {
        let before = self.users.len();
        self.users.retain(|u| u.name != name);
        self.users.len() != before
    }
}

/// The hex SHA-256 of a token's text, as the file stores it.
pub fn token_sha256(text: &str) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()))
}

/// A new secret token: `prefix` and 256 random bits, URL-safe base64.
pub fn random_token(prefix: &str) -> Result<String, CredentialsError> {
    let secret = random_bytes::<32>()?;
    Ok(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    ))
}

/// A short random public handle (8 hex digits) to list and revoke a token
/// by, one that is not `taken` yet.
pub fn random_id(taken: impl Fn(&str) -> bool) -> Result<String, CredentialsError> {
    loop {
        let id = hex::encode(random_bytes::<4>()?);
        if !taken(&id) {
            return Ok(id);
        }
    }
}

/// Whether `text` is a SHA-256 as the files store it: 64 lowercase hex digits.
pub fn is_sha256_hex(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why a TOML file of secrets could not be read.
#[derive(Debug)]
pub enum TomlFileError {
    Io(std::io::Error),
    /// Not TOML of the expected shape; the parser's message.
    Invalid(String),
}

/// Reads and parses the TOML file at `path`; one that does not exist yet is
/// `T::default()`.
pub fn read_toml_file<T: serde::de::DeserializeOwned + Default>(
    path: &Path,
) -> Result<T, TomlFileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text).map_err(|e| TomlFileError::Invalid(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(TomlFileError::Io(e)),
    }
}

/// Writes `value` as TOML with [`write_private_file`].
pub fn write_toml_file<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let text = toml::to_string(value).map_err(|e| std::io::Error::other(e.to_string()))?;
    write_private_file(path, text.as_bytes())
}

/// Writes `contents` to `path` so that a reader sees the old file or the
/// new one, never half of it: a temporary file readable and writable by its
/// owner only, synced, then renamed over `path`.
pub fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(contents)?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

fn random_bytes<const N: usize>() -> Result<[u8; N], CredentialsError> {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| CredentialsError::Rejected("the system's random source failed".to_string()))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_users_survive_a_round_trip_without_their_secrets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.toml");
        let mut credentials = Credentials::load(&path).unwrap();
        let (entry, text) = credentials
            .create_token("acme".parse().unwrap(), Role::Ingest, "ci")
            .unwrap();
        credentials
            .set_user(
                "alice",
                "acme".parse().unwrap(),
                Role::Read,
                "correct horse",
            )
            .unwrap();
        credentials.save(&path).unwrap();

        let stored = std::fs::read_to_string(&path).unwrap();
        assert!(!stored.contains(&text) && !stored.contains("correct horse"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);

        let loaded = Credentials::load(&path).unwrap();
        assert_eq!(loaded, credentials);
        assert_eq!(loaded.tokens[0].sha256, token_sha256(&text));
        assert!(text.starts_with(TOKEN_PREFIX));

        let mut loaded = loaded;
        assert!(loaded.revoke_token(&entry.id));
        assert!(!loaded.revoke_token(&entry.id));
    }

    #[test]
    fn a_broken_file_is_named_with_its_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("credentials.toml");
        std::fs::write(
            &path,
            "[[token]]\nid = \"a\"\ntenant = \"Acme\"\nrole = \"ingest\"\nsha256 = \"00\"\n",
        )
        .unwrap();
        let err = Credentials::load(&path).unwrap_err().to_string();
        assert!(
            err.contains("Acme") && err.contains("credentials.toml"),
            "{err}"
        );
    }
}
