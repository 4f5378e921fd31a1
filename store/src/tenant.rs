//! Tenants: whose data a row is, and where each tenant's data lives.
//!
//! Every tenant has a store of its own — its own WAL, segments, indexes and
//! catalogs — so no read or write path can mix two tenants' rows: isolation
//! holds by construction, not by a filter someone could forget. The default
//! tenant (the only one when authentication is off) keeps the data
//! directory's root, so a single-tenant weft's layout is unchanged; every
//! other tenant lives in `tenants/<name>/` below it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::{IoContext, Result};
use crate::table::{Store, StoreConfig};

/// Below the data directory, the directory that holds the non-default tenants.
const TENANTS_DIR: &str = "tenants";

/// A tenant's name: 1 to 63 characters of `a-z`, `0-9`, `-` and `_`,
/// starting with a letter or digit, so it is safe as a directory name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TenantId(Arc<str>);

/// A tenant name that is not one.
#[derive(Debug, thiserror::Error)]
#[error("invalid tenant name {0:?}: use 1 to 63 characters of a-z, 0-9, '-' and '_', starting with a letter or digit")]
pub struct InvalidTenant(String);

impl TenantId {
    pub const DEFAULT_NAME: &'static str = "default";

    /// The tenant everything belongs to when authentication is off.
    pub fn default_tenant() -> Self {
        Self(Arc::from(Self::DEFAULT_NAME))
    }

    pub fn is_default(&self) -> bool {
        &*self.0 == Self::DEFAULT_NAME
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Where this tenant's data lives below the data directory `root`.
    pub fn data_dir(&self, root: &Path) -> PathBuf {
        if self.is_default() {
            root.to_path_buf()
        } else {
            root.join(TENANTS_DIR).join(&*self.0)
        }
    }
}

impl Default for TenantId {
    fn default() -> Self {
        Self::default_tenant()
    }
}

impl std::str::FromStr for TenantId {
    type Err = InvalidTenant;

    fn from_str(name: &str) -> std::result::Result<Self, InvalidTenant> {
        let valid_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let starts_well = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if starts_well && name.len() <= 63 && name.chars().all(valid_char) {
            Ok(Self(Arc::from(name)))
        } else {
            Err(InvalidTenant(name.to_string()))
        }
    }
}

impl TryFrom<String> for TenantId {
    type Error = InvalidTenant;

    fn try_from(name: String) -> std::result::Result<Self, InvalidTenant> {
        name.parse()
    }
}

impl From<TenantId> for String {
    fn from(tenant: TenantId) -> Self {
        tenant.0.to_string()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

/// The tenants that have data under a data directory: the default one and
/// every valid name in `tenants/`.
pub fn existing_tenants(root: &Path) -> Result<Vec<TenantId>> {
    let mut tenants = vec![TenantId::default_tenant()];
    let dir = root.join(TENANTS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(tenants),
        Err(e) => return Err(e).at(&dir),
    };
    for entry in entries {
        let entry = entry.at(&dir)?;
        if let Some(tenant) = entry
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<TenantId>().ok())
            .filter(|t| !t.is_default())
        {
            tenants.push(tenant);
        }
    }
    tenants.sort();
    Ok(tenants)
}

/// One open [`Store`] per tenant, opened on first use.
///
/// The default tenant's store is opened up front and holds the data
/// directory's `LOCK`, so only one process ever opens any tenant below it.
/// Tenants with data already on disk are opened at start-up too, replaying
/// their WALs, so what was acknowledged before a crash reaches Parquet
/// without waiting for that tenant's next request.
pub struct TenantStores {
    template: StoreConfig,
    stores: RwLock<BTreeMap<TenantId, Arc<Store>>>,
    /// Serialises openings: opening replays a WAL and must happen once.
    opening: Mutex<()>,
}

impl TenantStores {
    /// Opens the stores of every tenant under `template.data_dir`. Must be
    /// called inside a Tokio runtime, like [`Store::open`].
    pub fn open(template: StoreConfig) -> Result<Self> {
        let stores = Self {
            stores: RwLock::new(BTreeMap::new()),
            opening: Mutex::new(()),
            template,
        };
        // The default tenant first: it takes the lock on the whole directory.
        stores.get(&TenantId::default_tenant())?;
        for tenant in existing_tenants(&stores.template.data_dir)? {
            stores.get(&tenant)?;
        }
        Ok(stores)
    }

    /// The store of `tenant`, opened (and created) if this is its first use.
    pub fn get(&self, tenant: &TenantId) -> Result<Arc<Store>> {
        if let Some(store) = self.stores.read().get(tenant) {
            return Ok(store.clone());
        }
        let _opening = self.opening.lock();
        if let Some(store) = self.stores.read().get(tenant) {
            return Ok(store.clone());
        }
        let store = Arc::new(Store::open(StoreConfig {
            data_dir: tenant.data_dir(&self.template.data_dir),
            ..self.template.clone()
        })?);
        if !tenant.is_default() {
            tracing::info!(%tenant, "opened the tenant's store");
        }
        self.stores.write().insert(tenant.clone(), store.clone());
        Ok(store)
    }

    /// Every open store, by tenant.
    pub fn all(&self) -> Vec<(TenantId, Arc<Store>)> {
        self.stores
            .read()
            .iter()
            .map(|(tenant, store)| (tenant.clone(), store.clone()))
            .collect()
    }

    /// Names `url` (an Arrow Flight URL) in every tenant's catalogs in the
    /// object store as where this process serves its unflushed rows, and in
    /// those of tenants opened later. Blocks while the catalogs are written.
    pub fn advertise_live(&self, url: &str) -> Result<()> {
        let Some(storage) = &self.template.storage else {
            return Ok(());
        };
        storage.set_live_url(Some(url.to_string()));
        for (_, store) in self.all() {
            store.advertise_live()?;
        }
        Ok(())
    }

    /// Flushes and stops every tenant's store; the first error is returned
    /// after all were tried.
    pub async fn shutdown(&self) -> Result<()> {
        // Everything is about to be in segments: the final flushes commit
        // the catalogs without this process's address, so readers stop
        // asking it in the same commit that shows them its last rows.
        if let Some(storage) = &self.template.storage {
            storage.set_live_url(None);
        }
        let mut first_error = None;
        for (tenant, store) in self.all() {
            if let Err(e) = store.shutdown().await {
                tracing::error!(%tenant, error = %e, "final flush failed");
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_are_safe_directory_names() {
        for good in ["acme", "a", "team-7_prod", &"x".repeat(63)] {
            assert!(good.parse::<TenantId>().is_ok(), "{good}");
        }
        for bad in [
            "",
            "Acme",
            "../etc",
            "a/b",
            "-x",
            "_x",
            ".",
            "a b",
            &"x".repeat(64),
        ] {
            assert!(bad.parse::<TenantId>().is_err(), "{bad}");
        }
        let root = Path::new("/data");
        assert_eq!(TenantId::default_tenant().data_dir(root), root);
        assert_eq!(
            "acme".parse::<TenantId>().unwrap().data_dir(root),
            Path::new("/data/tenants/acme")
        );
    }

    #[tokio::test]
    async fn tenants_with_data_are_opened_again_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig::new(dir.path());
        let acme: TenantId = "acme".parse().unwrap();
        {
            let stores = TenantStores::open(config.clone()).unwrap();
            stores.get(&acme).unwrap();
            stores.shutdown().await.unwrap();
        }
        let stores = TenantStores::open(config).unwrap();
        let open: Vec<TenantId> = stores.all().into_iter().map(|(t, _)| t).collect();
        assert_eq!(open, vec![acme, TenantId::default_tenant()]);
        stores.shutdown().await.unwrap();
    }
}
