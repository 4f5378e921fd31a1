//! Upstreams: a service's targets, which of them are healthy, and which one
//! the next request goes to.
//!
//! Health has two inputs: active probes (`health.rs`) and passive outlier
//! detection on proxied responses (`report`). A target taken out by passive
//! checks alone comes back after `recovery`; with active checks, probes bring it back.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use http::uri::Authority;
use http::HeaderName;
use parking_lot::Mutex;
use serde::Serialize;

use crate::config::{ActiveHealthcheck, Algorithm, PassiveHealthcheck, UpstreamConfig};

/// One `host:port` an upstream forwards to.
#[derive(Debug)]
pub(crate) struct Target {
    pub(crate) address: String,
    /// `address` as a URI authority, parsed once (none if it is not one,
    /// which configuration checks rule out).
    pub(crate) authority: Option<Authority>,
    pub(crate) weight: u32,
    healthy: AtomicBool,
    in_flight: AtomicU64,
    passive_failures: AtomicU32,
    ejected_at: Mutex<Option<Instant>>,
    /// Consecutive active probe results, successes positive, failures negative.
    pub(crate) probe_streak: Mutex<i64>,
}

impl Target {
    fn new(address: String, weight: u32, healthy: bool) -> Self {
        Self {
            authority: address.parse().ok(),
            address,
            weight,
            healthy: AtomicBool::new(healthy),
            in_flight: AtomicU64::new(0),
            passive_failures: AtomicU32::new(0),
            ejected_at: Mutex::new(None),
            probe_streak: Mutex::new(0),
        }
    }

    pub(crate) fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Flips the target's health; says whether it changed.
    pub(crate) fn set_healthy(&self, healthy: bool) -> bool {
        let changed = self.healthy.swap(healthy, Ordering::Relaxed) != healthy;
        if healthy {
            self.passive_failures.store(0, Ordering::Relaxed);
            *self.ejected_at.lock() = None;
        } else if changed {
            *self.ejected_at.lock() = Some(Instant::now());
        }
        changed
    }
}

/// A request in flight to a target; counts for least-requests until dropped.
pub(crate) struct InFlight(Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How an attempt went, for passive health checks.
pub(crate) enum Outcome {
    Status(u16),
    /// No response: connection refused or reset, or a timeout.
    Failed,
}

/// A balanced set of targets with their health.
#[derive(Debug)]
pub(crate) struct Upstream {
    pub(crate) name: String,
    algorithm: Algorithm,
    hash_on_header: Option<HeaderName>,
    pub(crate) targets: Vec<Arc<Target>>,
    /// Weighted round-robin order of target indices.
    schedule: Vec<usize>,
    next: AtomicUsize,
    /// Consistent-hashing ring: (point, target index), sorted.
    ring: Vec<(u64, usize)>,
    pub(crate) active: Option<ActiveHealthcheck>,
    passive: Option<PassiveHealthcheck>,
}

/// A target's health as the Admin API shows it.
#[derive(Debug, Serialize)]
pub(crate) struct TargetHealth {
    pub(crate) target: String,
    pub(crate) weight: u32,
    pub(crate) health: &'static str,
    pub(crate) in_flight: u64,
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// Smooth weighted round robin (nginx's), unrolled into one cycle, so weights
/// 5:1:1 give a a b a c a a rather than a a a a a b c.
fn schedule(weights: &[u32]) -> Vec<usize> {
    let gcd = weights.iter().fold(0, |g, &w| num_gcd(g, w)).max(1);
    let weights: Vec<i64> = weights.iter().map(|&w| i64::from(w / gcd)).collect();
    let total: i64 = weights.iter().sum();
    let mut current = vec![0i64; weights.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&weights) {
                *c += w;
            }
            let (best, _) = current
                .iter()
                .enumerate()
                .max_by_key(|(i, c)| (**c, std::cmp::Reverse(*i)))
                .expect("at least one target");
            current[best] -= total;
            best
        })
        .collect()
}

fn num_gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        num_gcd(b, a % b)
    }
}

impl Upstream {
    /// An upstream from its configuration; targets that `previous` (the same
    /// upstream before a reload) had taken out stay out until checks say otherwise.
    pub(crate) fn new(config: &UpstreamConfig, previous: Option<&Upstream>) -> Self {
        let was_healthy = |address: &str| {
            previous
                .and_then(|p| p.targets.iter().find(|t| t.address == address))
                .is_none_or(|t| t.is_healthy())
        };
        let targets: Vec<Arc<Target>> = config
            .targets
            .iter()
            .map(|t| {
                Arc::new(Target::new(
                    t.target.clone(),
                    t.weight,
                    was_healthy(&t.target),
                ))
            })
            .collect();
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        let mut ring: Vec<(u64, usize)> = targets
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..t.weight.max(1) * 4).map(move |v| (hash_of((&t.address, v)), i)))
            .collect();
        ring.sort_unstable();
        Self {
            name: config.name.clone(),
            algorithm: config.algorithm,
            hash_on_header: config
                .hash_on_header
                .as_deref()
                .and_then(|h| HeaderName::from_bytes(h.as_bytes()).ok()),
            schedule: schedule(&weights),
            targets,
            next: AtomicUsize::new(0),
            ring,
            active: config.healthchecks.active.clone(),
            passive: config.healthchecks.passive.clone(),
        }
    }

    /// A single-target upstream for a service with a plain `host:port` URL.
    pub(crate) fn single(name: &str, address: String) -> Self {
        Self::new(
            &UpstreamConfig {
                name: name.to_string(),
                algorithm: Algorithm::RoundRobin,
                hash_on_header: None,
                targets: vec![crate::config::TargetConfig {
                    target: address,
                    weight: 100,
                }],
                healthchecks: Default::default(),
            },
            None,
        )
    }

    fn usable(&self, index: usize, tried: &[usize]) -> bool {
        !tried.contains(&index) && self.available(&self.targets[index])
    }

    /// Healthy, or taken out by passive checks long enough ago to be tried again.
    fn available(&self, target: &Target) -> bool {
        if target.is_healthy() {
            return true;
        }
        let (Some(passive), None) = (&self.passive, &self.active) else {
            return false;
        };
        let due = target
            .ejected_at
            .lock()
            .is_some_and(|at| at.elapsed() >= passive.recovery);
        if due {
            tracing::info!(upstream = %self.name, target = %target.address, "target back after its passive-check recovery time");
            target.set_healthy(true);
        }
        due
    }

    /// The target for the next attempt, skipping unhealthy ones and those
    /// already `tried` for this request; `hash_key` feeds consistent hashing.
    pub(crate) fn pick(
        &self,
        hash_key: Option<&[u8]>,
        tried: &[usize],
    ) -> Option<(usize, Arc<Target>, InFlight)> {
        let n = self.targets.len();
        let index = match self.algorithm {
            Algorithm::RoundRobin => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..self.schedule.len())
                    .map(|k| self.schedule[(start + k) % self.schedule.len()])
                    .find(|&i| self.usable(i, tried))
            }
            Algorithm::LeastRequests => {
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                (0..n)
                    .map(|k| (start + k) % n)
                    .filter(|&i| self.usable(i, tried))
                    .min_by(|&a, &b| {
                        let load = |i: usize| {
                            let t = &self.targets[i];
                            (t.in_flight.load(Ordering::Relaxed) + 1) as f64 / f64::from(t.weight)
                        };
                        load(a).total_cmp(&load(b))
                    })
            }
            Algorithm::ConsistentHashing => {
                let point = hash_of(hash_key.unwrap_or_default());
                let start = self.ring.partition_point(|(p, _)| *p < point);
                (0..self.ring.len())
                    .map(|k| self.ring[(start + k) % self.ring.len()].1)
                    .find(|&i| self.usable(i, tried))
            }
        }?;
        let target = self.targets[index].clone();
        target.in_flight.fetch_add(1, Ordering::Relaxed);
        Some((index, target.clone(), InFlight(target)))
    }

    /// The header consistent hashing uses, if this upstream hashes on one.
    pub(crate) fn hash_on_header(&self) -> Option<&HeaderName> {
        match self.algorithm {
            Algorithm::ConsistentHashing => self.hash_on_header.as_ref(),
            _ => None,
        }
    }

    pub(crate) fn hashes(&self) -> bool {
        self.algorithm == Algorithm::ConsistentHashing
    }

    /// Feeds a proxied attempt's outcome to passive health checks.
    pub(crate) fn report(&self, target: &Target, outcome: Outcome) {
        let Some(passive) = &self.passive else {
            return;
        };
        let failed = match outcome {
            Outcome::Failed => true,
            Outcome::Status(status) => passive.unhealthy_statuses.contains(&status),
        };
        if !failed {
            target.passive_failures.store(0, Ordering::Relaxed);
            return;
        }
        let failures = target.passive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= passive.unhealthy_failures && target.set_healthy(false) {
            tracing::warn!(upstream = %self.name, target = %target.address, failures, "target taken out by passive health checks");
        }
    }

    pub(crate) fn health(&self) -> Vec<TargetHealth> {
        self.targets
            .iter()
            .map(|t| TargetHealth {
                target: t.address.clone(),
                weight: t.weight,
                health: if t.is_healthy() {
                    "HEALTHY"
                } else {
                    "UNHEALTHY"
                },
                in_flight: t.in_flight.load(Ordering::Relaxed),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::TargetConfig;

    fn upstream(algorithm: Algorithm, weights: &[u32]) -> Upstream {
        Upstream::new(
            &UpstreamConfig {
                name: "u".into(),
                algorithm,
                hash_on_header: None,
                targets: weights
                    .iter()
                    .enumerate()
                    .map(|(i, &weight)| TargetConfig {
                        target: format!("10.0.0.{i}:80"),
                        weight,
                    })
                    .collect(),
                healthchecks: Default::default(),
            },
            None,
        )
    }

    #[test]
    fn weighted_round_robin_interleaves_by_weight() {
        assert_eq!(schedule(&[500, 100, 100]), [0, 0, 1, 0, 2, 0, 0]);
        let u = upstream(Algorithm::RoundRobin, &[100, 100]);
        let picks: Vec<usize> = (0..4).map(|_| u.pick(None, &[]).unwrap().0).collect();
        assert_eq!(picks, [0, 1, 0, 1]);
    }

    #[test]
    fn unhealthy_and_already_tried_targets_are_skipped() {
        let u = upstream(Algorithm::RoundRobin, &[100, 100, 100]);
        u.targets[1].set_healthy(false);
        for _ in 0..6 {
            assert_ne!(u.pick(None, &[]).unwrap().0, 1);
        }
        assert_eq!(u.pick(None, &[0]).unwrap().0, 2);
        u.targets[0].set_healthy(false);
        u.targets[2].set_healthy(false);
        assert!(u.pick(None, &[]).is_none());
    }

    #[test]
    fn least_requests_prefers_the_idlest_target() {
        let u = upstream(Algorithm::LeastRequests, &[100, 100]);
        let (first, _, held) = u.pick(None, &[]).unwrap();
        let (second, _, _) = u.pick(None, &[]).unwrap();
        assert_ne!(first, second, "the busy target is avoided");
        drop(held);
    }

    #[test]
    fn consistent_hashing_is_sticky_and_moves_only_when_its_target_is_down() {
        let u = upstream(Algorithm::ConsistentHashing, &[100, 100, 100]);
        let home = u.pick(Some(b"user-42"), &[]).unwrap().0;
        for _ in 0..5 {
            assert_eq!(u.pick(Some(b"user-42"), &[]).unwrap().0, home);
        }
        let spread: std::collections::HashSet<usize> = (0..200)
            .map(|i| u.pick(Some(format!("user-{i}").as_bytes()), &[]).unwrap().0)
            .collect();
        assert_eq!(spread.len(), 3);
        u.targets[home].set_healthy(false);
        assert_ne!(u.pick(Some(b"user-42"), &[]).unwrap().0, home);
    }
}
