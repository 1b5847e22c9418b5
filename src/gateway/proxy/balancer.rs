//! Which instance of a service gets a request (SPEC §5.2): round-robin, least-connections or a
//! consistent hash, skipping instances that failed their health check or were ejected after
//! consecutive connection failures.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::LoadBalancing;

/// Passive ejection (`proxy.eject_after_failures`, `proxy.eject_for_ms`): this many connection
/// failures in a row take an instance out for that long.
#[derive(Debug, Clone, Copy)]
pub(super) struct Ejection {
    pub after_failures: u32,
    pub duration: Duration,
}

pub(super) struct InFlight(Arc<Instance>);

impl InFlight {
    pub(super) fn start(instance: &Arc<Instance>) -> Self {
        instance.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(instance))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

pub(super) struct Instance {
    pub(super) base: String,
    pub(super) in_flight: AtomicUsize,
    pub(super) consecutive_failures: AtomicU32,
    /// Milliseconds since the balancer's origin until which the instance is skipped; 0 = never.
    pub(super) ejected_until_ms: AtomicU64,
    /// The verdict of the last active health check.
    pub(super) healthy: AtomicBool,
}

/// Picks an instance per request: skipping unhealthy, ejected and already-tried instances while
/// another one is left, then by the configured policy.
pub(super) struct Balancer {
    policy: LoadBalancing,
    ejection: Ejection,
    pub(super) instances: Vec<Arc<Instance>>,
    next: AtomicUsize,
    origin: Instant,
}

impl Balancer {
    pub(super) fn new(policy: LoadBalancing, ejection: Ejection, bases: Vec<String>) -> Self {
        let instances = bases
            .into_iter()
            .map(|base| {
                Arc::new(Instance {
                    base,
                    in_flight: AtomicUsize::new(0),
                    consecutive_failures: AtomicU32::new(0),
                    ejected_until_ms: AtomicU64::new(0),
                    healthy: AtomicBool::new(true),
                })
            })
            .collect();
        Self {
            policy,
            ejection,
            instances,
            next: AtomicUsize::new(0),
            origin: Instant::now(),
        }
    }

    pub(super) fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub(super) fn pick(&self, key: Option<&str>, tried: &[usize]) -> usize {
        self.pick_by(self.policy, key, tried)
    }

    /// Whether [`pick`](Self::pick) (or [`pick_pinned`](Self::pick_pinned), when `pinned`) reads
    /// its key: not with one instance, nor under a policy that ignores it.
    pub(super) fn keys_on_client(&self, pinned: bool) -> bool {
        self.instances.len() > 1 && (pinned || self.policy == LoadBalancing::ConsistentHash)
    }

    /// Picks by the consistent hash of `key` whatever the configured policy: for clients whose
    /// state lives in one instance's memory (a Socket.IO session).
    pub(super) fn pick_pinned(&self, key: Option<&str>, tried: &[usize]) -> usize {
        self.pick_by(LoadBalancing::ConsistentHash, key, tried)
    }

    fn pick_by(&self, policy: LoadBalancing, key: Option<&str>, tried: &[usize]) -> usize {
        // One instance is the only answer under every policy (an unusable one is tried anyway).
        if self.instances.len() == 1 {
            return 0;
        }
        let now = self.now_ms();
        let all = 0..self.instances.len();
        let untried = |i: &usize| !tried.contains(i);
        let usable = |i: &usize| {
            let instance = &self.instances[*i];
            instance.healthy.load(Ordering::Relaxed)
                && instance.ejected_until_ms.load(Ordering::Relaxed) <= now
        };
        let mut candidates: Vec<usize> = all.clone().filter(|i| untried(i) && usable(i)).collect();
        // When every instance is out, trying one anyway beats refusing the request.
        if candidates.is_empty() {
            candidates = all.clone().filter(untried).collect();
        }
        if candidates.is_empty() {
            candidates = all.collect();
        }
        let turn = self.next.fetch_add(1, Ordering::Relaxed);
        let rotated = || (0..candidates.len()).map(|k| candidates[(turn + k) % candidates.len()]);
        match (policy, key) {
            (LoadBalancing::ConsistentHash, Some(key)) => candidates
                .iter()
                .copied()
                .max_by_key(|&i| rendezvous_score(key, &self.instances[i].base))
                .unwrap_or(candidates[0]),
            (LoadBalancing::LeastConnections, _) => rotated()
                .min_by_key(|&i| self.instances[i].in_flight.load(Ordering::Relaxed))
                .unwrap_or(candidates[0]),
            _ => candidates[turn % candidates.len()],
        }
    }

    pub(super) fn answered(&self, index: usize) {
        let instance = &self.instances[index];
        instance.consecutive_failures.store(0, Ordering::Relaxed);
        instance.ejected_until_ms.store(0, Ordering::Relaxed);
    }

    pub(super) fn connection_failed(&self, index: usize) {
        let instance = &self.instances[index];
        let failures = instance
            .consecutive_failures
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if failures >= self.ejection.after_failures.max(1) {
            let eject_for = u64::try_from(self.ejection.duration.as_millis()).unwrap_or(u64::MAX);
            let until = self.now_ms().saturating_add(eject_for);
            instance.ejected_until_ms.store(until, Ordering::Relaxed);
            tracing::warn!(instance = %instance.base, failures, "upstream instance ejected");
        }
    }
}

/// Rendezvous (highest random weight) hashing: a key moves only when its own instance leaves.
/// FNV-1a with a final mix, so every gateway replica agrees whatever its build.
fn rendezvous_score(key: &str, instance: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes().chain([0xff]).chain(instance.bytes()) {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^ (hash >> 33)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn balancer(policy: LoadBalancing, instances: usize) -> Balancer {
        let ejection = Ejection {
            after_failures: 1,
            duration: Duration::ZERO,
        };
        let bases = (0..instances).map(|i| format!("http://10.0.0.{i}:3001"));
        Balancer::new(policy, ejection, bases.collect())
    }

    #[test]
    fn the_client_key_is_asked_for_only_where_it_places_the_request() {
        for policy in [
            LoadBalancing::RoundRobin,
            LoadBalancing::LeastConnections,
            LoadBalancing::ConsistentHash,
        ] {
            let alone = balancer(policy, 1);
            assert!(!alone.keys_on_client(false) && !alone.keys_on_client(true));
            assert!(
                balancer(policy, 2).keys_on_client(true),
                "pinned, {policy:?}"
            );
        }
        assert!(balancer(LoadBalancing::ConsistentHash, 2).keys_on_client(false));
        assert!(!balancer(LoadBalancing::RoundRobin, 2).keys_on_client(false));
        assert!(!balancer(LoadBalancing::LeastConnections, 2).keys_on_client(false));
    }
}
