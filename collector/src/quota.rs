//! Per-tenant quotas: how fast a tenant may send and how much it may keep.
//!
//! The ingest rate is a token bucket of request bytes (after decompression)
//! per tenant; the storage quota compares the tenant's stored bytes with its
//! limit. Past either, requests are refused with 429 / RESOURCE_EXHAUSTED and
//! a retry delay, and other tenants are unaffected.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use weft_store::{Store, TenantId};

use crate::ingest::IngestError;

/// One tenant's limits; 0 means unlimited.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TenantLimits {
    /// Sustained ingest rate, in request bytes (after decompression) per second.
    pub ingest_bytes_per_second: u64,
    /// Bytes a tenant may send at once above the rate [default: one second's worth].
    pub ingest_burst_bytes: u64,
    /// Bytes of segments and buffered data the tenant may store.
    pub max_stored_bytes: u64,
}

/// How long a tenant over its storage quota is told to wait: space only
/// frees up when an operator raises the quota or removes data.
const STORAGE_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Every tenant's limits and ingest buckets.
#[derive(Debug, Default)]
pub struct Quotas {
    defaults: TenantLimits,
    per_tenant: HashMap<TenantId, TenantLimits>,
    buckets: Mutex<HashMap<TenantId, Bucket>>,
}

#[derive(Debug)]
struct Bucket {
    /// Bytes the tenant may still send; negative after a request larger
    /// than what was left, which the tenant then pays back.
    allowance: f64,
    updated: Instant,
}

impl Quotas {
    /// `defaults` for every tenant, except those in `per_tenant`.
    pub fn new(defaults: TenantLimits, per_tenant: HashMap<TenantId, TenantLimits>) -> Self {
        Self {
            defaults,
            per_tenant,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn limits(&self, tenant: &TenantId) -> &TenantLimits {
        self.per_tenant.get(tenant).unwrap_or(&self.defaults)
    }

    /// Admits `bytes` more from `tenant`, whose data is in `store`, or
    /// says how long to wait.
    pub fn admit(&self, tenant: &TenantId, store: &Store, bytes: usize) -> Result<(), IngestError> {
        let limits = self.limits(tenant);
        if limits.max_stored_bytes > 0 {
            let stored = store.stored_bytes();
            if stored >= limits.max_stored_bytes {
                return Err(IngestError::QuotaExceeded {
                    message: format!(
                        "tenant {tenant} stores {stored} bytes, at its quota of {} bytes",
                        limits.max_stored_bytes
                    ),
                    retry_after: STORAGE_RETRY_AFTER,
                });
            }
        }
        if limits.ingest_bytes_per_second == 0 {
            return Ok(());
        }
        let rate = limits.ingest_bytes_per_second as f64;
        let burst = match limits.ingest_burst_bytes {
            0 => rate,
            burst => burst as f64,
        };
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let bucket = buckets.entry(tenant.clone()).or_insert(Bucket {
            allowance: burst,
            updated: now,
        });
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.allowance = (bucket.allowance + elapsed * rate).min(burst);
        bucket.updated = now;
        // A request larger than the burst passes when the bucket is full, so
        // no request size is refused forever; the debt delays the next ones.
        let needed = (bytes as f64).min(burst);
        if bucket.allowance >= needed {
            bucket.allowance -= bytes as f64;
            return Ok(());
        }
        let wait = (needed - bucket.allowance) / rate;
        Err(IngestError::QuotaExceeded {
            message: format!(
                "tenant {tenant} is over its ingest rate of {} bytes/s",
                limits.ingest_bytes_per_second
            ),
            retry_after: Duration::from_secs_f64(wait).max(Duration::from_secs(1)),
        })
    }
}
