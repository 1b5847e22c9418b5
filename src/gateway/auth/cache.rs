//! Resolved identities, kept for a moment. Resolving a session costs three database round trips
//! (the session record, the user, their roles); at thousands of requests a second that dominates
//! the gateway. A hit skips all three.
//!
//! The price is bounded staleness: a revocation made on another replica (a password change, a
//! deactivation, a sign-out) takes effect here within `session.cache_ms`. Changes made through
//! this replica invalidate at once.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Authenticated;

/// Past this many entries, expired ones are swept on insert, so memory follows the number of
/// active clients, not the number ever seen.
const SWEEP_ABOVE: usize = 10_000;

pub struct AuthCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (Instant, Authenticated)>>,
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

    pub fn get(&self, key: &str) -> Option<Authenticated> {
        if !self.enabled() {
            return None;
        }
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        entries
            .get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, auth)| auth.clone())
    }

    pub fn put(&self, key: String, auth: Authenticated) {
        if !self.enabled() {
            return;
        }
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= SWEEP_ABOVE {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() < ttl);
        }
        entries.insert(key, (Instant::now(), auth));
    }

    pub fn forget(&self, key: &str) {
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

/// The cache key of a session, by its id from the cookie.
pub fn session_key(id: &tower_sessions::session::Id) -> String {
    format!("s:{id}")
}

/// The cache key of a bearer token.
pub fn token_key(token: &str) -> String {
    format!("t:{token}")
}
