use std::fmt;

use serde::{Deserialize, Serialize};

/// What a credential may do. Each listener needs one: OTLP needs `ingest`,
/// the query API and UI `read`, `/metrics` `admin`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send telemetry over OTLP.
    Ingest,
    /// Query the tenant's data: the API, the Jaeger API and the UI.
    Read,
    /// Both, plus weft's own `/metrics`.
    Admin,
}

impl Role {
    /// Whether a credential with this role may do what `needed` names.
    pub fn covers(self, needed: Role) -> bool {
        self == Role::Admin || self == needed
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(format!("unknown role {other:?}: use ingest, read or admin")),
        }
    }
}
