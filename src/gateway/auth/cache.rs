//! Resolved identities, kept for a moment. Resolving a session costs three database round trips
//! (the session record, the user, their roles); at thousands of requests a second that dominates
//! the gateway. A hit skips all three.
//!
//! The price is bounded staleness: a revocation made on another replica (a password change, a
//! deactivation, a sign-out) takes effect here within `session.cache_ms`. Changes made through
//! this replica invalidate at once.
//!
//! A busy sign-in is resolved again ahead of time: once its entry is half its time old, exactly one
//! request is told "miss" and resolves it while the others keep using the entry. So the entry of a
//! client sending a steady stream never expires under all its in-flight requests at once (which
//! would send every one of them to the stores together, a stampede each `cache_ms`), and no entry
//! is ever used past its time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Authenticated;

/// Past this many entries, expired ones are swept on insert, so memory follows the number of
/// active clients, not the number ever seen.
const SWEEP_ABOVE: usize = 10_000;

pub struct AuthCache {
    ttl: Duration,
    entries: Mutex<HashMap<CacheKey, Entry>>,
}

struct Entry {
    resolved_at: Instant,
    auth: Authenticated,
    /// A request was told to resolve it again (it is past half its time).
    refreshing: bool,
}

impl AuthCache {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        !self.ttl.is_zero()
    }

    /// The sign-in kept under `key`; `None` tells the caller to resolve it and [`put`](Self::put)
    /// the result (or [`forget`](Self::forget) the key when it no longer holds).
    pub fn get(&self, key: &CacheKey) -> Option<Authenticated> {
        self.get_at(key, Instant::now())
    }

    /// `get` at `now`; tests drive the clock through it.
    fn get_at(&self, key: &CacheKey, now: Instant) -> Option<Authenticated> {
        if !self.enabled() {
            return None;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let entry = entries.get_mut(key)?;
        let age = now.saturating_duration_since(entry.resolved_at);
        if age >= self.ttl {
            return None;
        }
        if age >= self.ttl / 2 && !entry.refreshing {
            entry.refreshing = true;
            return None;
        }
        Some(entry.auth.clone())
    }

    pub fn put(&self, key: CacheKey, auth: Authenticated) {
        self.put_at(key, auth, Instant::now());
    }

    fn put_at(&self, key: CacheKey, auth: Authenticated, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= SWEEP_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, entry| now.saturating_duration_since(entry.resolved_at) < ttl);
        }
        let entry = Entry {
            resolved_at: now,
            auth,
            refreshing: false,
        };
        entries.insert(key, entry);
    }

    pub fn forget(&self, key: &CacheKey) {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .remove(key);
    }

    /// After any change to a user: simpler and safer than tracking which entries it touched, and
    /// such changes are rare.
    pub fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clear();
    }
}

/// What a resolved sign-in is kept under: the session id of its cookie, or its bearer token.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CacheKey {
    Session(tower_sessions::session::Id),
    Token(String),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::users::User;

    fn someone() -> Authenticated {
        Authenticated::new(User::in_memory(uuid::Uuid::new_v4()), Vec::new())
    }

    fn key() -> CacheKey {
        CacheKey::Token("t1".into())
    }

    const TTL: Duration = Duration::from_millis(1000);

    #[test]
    fn past_half_its_time_one_caller_resolves_again_while_the_others_keep_the_entry() {
        let cache = AuthCache::new(TTL);
        let start = Instant::now();
        cache.put_at(key(), someone(), start);
        let at = |ms| start + Duration::from_millis(ms);
        assert!(cache.get_at(&key(), at(499)).is_some());
        assert!(cache.get_at(&key(), at(500)).is_none(), "the refresher");
        for ms in [500, 700, 999] {
            assert!(
                cache.get_at(&key(), at(ms)).is_some(),
                "the others, at {ms} ms"
            );
        }
        assert!(
            cache.get_at(&key(), at(1000)).is_none(),
            "never used past its time"
        );
        cache.put_at(key(), someone(), at(800));
        assert!(cache.get_at(&key(), at(1000)).is_some(), "refreshed");
        assert!(
            cache.get_at(&key(), at(1300)).is_none(),
            "the next refresher"
        );
    }

    #[test]
    fn a_forgotten_entry_and_a_disabled_cache_hold_nothing() {
        let cache = AuthCache::new(TTL);
        cache.put(key(), someone());
        assert!(cache.get(&key()).is_some());
        cache.forget(&key());
        assert!(cache.get(&key()).is_none());
        let off = AuthCache::new(Duration::ZERO);
        off.put(key(), someone());
        assert!(off.get(&key()).is_none());
    }
}
