//! Resolved identities, kept for a moment. Resolving a session costs three database round trips
//! (the session record, the user, their roles); at thousands of requests a second that dominates
//! the gateway. A hit skips all three.
//!
//! The price is bounded staleness: a revocation made on another replica (a password change, a
//! deactivation, a sign-out) takes effect here within `session.cache_ms`. Changes made through
//! this replica invalidate at once.
//!
//! A sign-in resolved while a change was made (a role changed, a session ended) is not kept: each
//! `forget` and `clear` moves a counter, a resolution notes it before reading the stores
//! ([`AuthCache::changes`]), and [`AuthCache::put`] drops what was read before a change. Else a
//! resolution that read the old roles could finish after the change cleared the cache, and put
//! them back for another `cache_ms`.
//!
//! A busy sign-in is resolved again ahead of time: once its entry is half its time old, exactly one
//! request is told "miss" and resolves it while the others keep using the entry. So the entry of a
//! client sending a steady stream never expires under all its in-flight requests at once (which
//! would send every one of them to the stores together, a stampede each `cache_ms`), and no entry
//! is ever used past its time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Authenticated;

/// Past this many entries, expired ones are swept on insert, so memory follows the number of
/// active clients, not the number ever seen. After a sweep the bar is twice what is left, so many
/// live entries are not swept again on every insert.
const SWEEP_ABOVE: usize = 10_000;

pub struct AuthCache {
    ttl: Duration,
    entries: Mutex<Entries>,
    /// How many `forget`s and `clear`s there were.
    changes: AtomicU64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<CacheKey, Entry>,
    sweep_above: usize,
}

/// The count of changes a resolution began after (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes(u64);

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
            entries: Mutex::new(Entries {
                map: HashMap::new(),
                sweep_above: SWEEP_ABOVE,
            }),
            changes: AtomicU64::new(0),
        }
    }

    /// Noted before a sign-in is resolved, and given to [`put`](Self::put) with the result.
    pub fn changes(&self) -> Changes {
        Changes(self.changes.load(Ordering::SeqCst))
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
        let entry = entries.map.get_mut(key)?;
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

    /// Keeps `auth`, resolved since `seen`, unless the cache was changed since: then it may hold
    /// what the change undid, and the next request resolves it again.
    pub fn put(&self, key: CacheKey, auth: Authenticated, seen: Changes) {
        self.put_at(key, auth, seen, Instant::now());
    }

    fn put_at(&self, key: CacheKey, auth: Authenticated, seen: Changes, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Under the lock `forget` and `clear` take before they count: a change is either seen
        // here, or it comes after the insert and removes it.
        if self.changes() != seen {
            return;
        }
        if entries.map.len() >= entries.sweep_above {
            let ttl = self.ttl;
            entries
                .map
                .retain(|_, entry| now.saturating_duration_since(entry.resolved_at) < ttl);
            entries.sweep_above = SWEEP_ABOVE.max(entries.map.len() * 2);
        }
        let entry = Entry {
            resolved_at: now,
            auth,
            refreshing: false,
        };
        entries.map.insert(key, entry);
    }

    pub fn forget(&self, key: &CacheKey) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.changes.fetch_add(1, Ordering::SeqCst);
        entries.map.remove(key);
    }

    /// After any change to a user: simpler and safer than tracking which entries it touched, and
    /// such changes are rare.
    pub fn clear(&self) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.changes.fetch_add(1, Ordering::SeqCst);
        entries.map.clear();
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
        cache.put_at(key(), someone(), cache.changes(), start);
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
        cache.put_at(key(), someone(), cache.changes(), at(800));
        assert!(cache.get_at(&key(), at(1000)).is_some(), "refreshed");
        assert!(
            cache.get_at(&key(), at(1300)).is_none(),
            "the next refresher"
        );
    }

    #[test]
    fn a_forgotten_entry_and_a_disabled_cache_hold_nothing() {
        let cache = AuthCache::new(TTL);
        cache.put(key(), someone(), cache.changes());
        assert!(cache.get(&key()).is_some());
        cache.forget(&key());
        assert!(cache.get(&key()).is_none());
        let off = AuthCache::new(Duration::ZERO);
        off.put(key(), someone(), off.changes());
        assert!(off.get(&key()).is_none());
    }

    /// A resolution reads the roles, an admin changes them (the cache is cleared), and the
    /// resolution finishes: what it read is not kept, or the old roles would hold for `cache_ms`.
    #[test]
    fn a_sign_in_resolved_across_a_change_is_not_kept() {
        let cache = AuthCache::new(TTL);
        let seen = cache.changes();
        cache.clear();
        cache.put(key(), someone(), seen);
        assert!(cache.get(&key()).is_none(), "across a clear");
        let seen = cache.changes();
        cache.forget(&CacheKey::Token("another".into()));
        cache.put(key(), someone(), seen);
        assert!(cache.get(&key()).is_none(), "across a sign-out");
        cache.put(key(), someone(), cache.changes());
        assert!(cache.get(&key()).is_some(), "resolved after the change");
    }

    /// Past the sweep bar with every entry live, an insert does not sweep them all again.
    #[test]
    fn a_sweep_that_frees_little_raises_the_bar() {
        let cache = AuthCache::new(TTL);
        let now = Instant::now();
        for n in 0..=SWEEP_ABOVE {
            cache.put_at(
                CacheKey::Token(n.to_string()),
                someone(),
                cache.changes(),
                now,
            );
        }
        let entries = cache.entries.lock().unwrap();
        assert_eq!(entries.map.len(), SWEEP_ABOVE + 1);
        assert_eq!(entries.sweep_above, SWEEP_ABOVE * 2);
    }
}
