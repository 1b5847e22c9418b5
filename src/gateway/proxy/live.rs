//! The upgraded connections this gateway holds open, by who opened them, so that signing out
//! (or any revocation: a revoked token family, a deactivated or deleted user, a new password)
//! also ends them. A websocket is authenticated once, at its handshake; without this it would go
//! on receiving a tenant's events for as long as it stays open, whatever happened to the session
//! that opened it. Polls need none of this: each is authenticated like any request.
//!
//! Every revocation is known by user, so connections are indexed by user id; a revocation names
//! which of the user's connections it ends: all of them, those of one session, or those of one
//! refresh token family. A connection registers once, when it is upgraded ([`Lease`]), and leaves
//! the index when it ends; nothing happens per frame.
//!
//! With several gateways a revocation must reach the connections every replica holds: it is
//! applied here at once, and published on Redis (when `redis.url` is set) to every gateway, which
//! ends its matching connections and drops its cached identities, so a sign-out also takes effect
//! at once on the other replicas instead of within `session.cache_ms`. Pub/sub is best effort: a
//! message published while a replica's subscription is down (Redis restarting) does not reach it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::Request;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower_sessions::Session;
use tower_sessions::session::Id;
use uuid::Uuid;

use super::upgrade;
use crate::gateway::auth::Authenticated;
use crate::gateway::auth::cache::{self, AuthCache};
pub use crate::identity::lease::Lease;
use crate::infra::redis::RedisHandle;
use crate::infra::workers::Workers;

/// The Redis channel (under `redis.key_prefix`) revocations are published on.
pub(crate) const CHANNEL: &str = "gateway:revocations";
/// How long connecting and subscribing may take before the listener tries again.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before a lost subscription is opened again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);

/// What authenticated an upgraded connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A session cookie, by session id.
    Session(String),
    /// A bearer access token of this refresh token family.
    Family(Uuid),
}

/// Which of a user's connections a revocation ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "id")]
pub enum Scope {
    /// Every one: the user's session epoch moved (new password, deactivation) or the user is gone.
    Everything,
    /// Those opened with this session (signed out).
    Session(String),
    /// Those opened with access tokens of this refresh token family (signed out, or a refresh
    /// token reused).
    Family(Uuid),
}

/// A revocation, as applied here and as published to the other gateways.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Revocation {
    pub user_id: Uuid,
    pub scope: Scope,
}

impl Revocation {
    pub fn user(user_id: Uuid) -> Self {
        Self {
            user_id,
            scope: Scope::Everything,
        }
    }

    pub fn session(user_id: Uuid, session: &Id) -> Self {
        Self {
            user_id,
            scope: Scope::Session(session.to_string()),
        }
    }

    pub fn family(user_id: Uuid, family: Uuid) -> Self {
        Self {
            user_id,
            scope: Scope::Family(family),
        }
    }

    fn ends(&self, credential: &Credential) -> bool {
        match (&self.scope, credential) {
            (Scope::Everything, _) => true,
            (Scope::Session(revoked), Credential::Session(held)) => revoked == held,
            (Scope::Family(revoked), Credential::Family(held)) => revoked == held,
            _ => false,
        }
    }
}

/// One open connection in the index.
struct Held {
    id: u64,
    credential: Credential,
    stop: CancellationToken,
}

/// This gateway's open upgraded connections, and the revocations that end them.
pub struct LiveConnections {
    by_user: Mutex<HashMap<Uuid, Vec<Held>>>,
    next_id: AtomicU64,
    /// Dropped on a revocation from another gateway: its identities may be cached here.
    cache: Arc<AuthCache>,
    redis: Option<RedisHandle>,
    /// Whether revocations published by other gateways reach this one now.
    listening: AtomicBool,
}

impl LiveConnections {
    /// The index, listening to the other gateways' revocations when Redis is configured.
    pub fn start(
        redis: Option<RedisHandle>,
        workers: &Workers,
        cache: Arc<AuthCache>,
    ) -> Arc<Self> {
        let live = Arc::new(Self::new(cache, redis));
        if live.redis.is_some() {
            let listener = live.clone();
            workers.spawn("gateway-revocations", move |stop| async move {
                listener.listen(stop).await;
            });
        }
        live
    }

    fn new(cache: Arc<AuthCache>, redis: Option<RedisHandle>) -> Self {
        Self {
            by_user: Mutex::default(),
            next_id: AtomicU64::new(0),
            cache,
            redis,
            listening: AtomicBool::new(false),
        }
    }

    /// A lease for `request` by a signed-in user when it opens a connection that outlives it: a
    /// websocket handshake (held by the splice, or in role `all` by the socket in this process),
    /// or the long-polling handshake of a Socket.IO session (its socket, in role `all`, holds it
    /// and disconnects when it ends, whatever transport it upgrades to; a split order service
    /// never sees it, and needs not: each poll is authenticated). `None` for any other request.
    pub fn lease_for(self: &Arc<Self>, request: &Request) -> Option<Lease> {
        if !upgrade::is_websocket(request.headers()) && !opens_socket_io_session(request) {
            return None;
        }
        let auth = request.extensions().get::<Authenticated>()?;
        let credential = match auth.token_family {
            Some(family) => Credential::Family(family),
            None => {
                let id = request.extensions().get::<Session>()?.id()?;
                Credential::Session(id.to_string())
            }
        };
        Some(self.lease(auth.context.user_id, credential))
    }

    /// Registers a connection of `user_id` opened with `credential`.
    pub fn lease(self: &Arc<Self>, user_id: Uuid, credential: Credential) -> Lease {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = CancellationToken::new();
        self.index().entry(user_id).or_default().push(Held {
            id,
            credential,
            stop: stop.clone(),
        });
        let registration = Arc::new(Registration {
            live: self.clone(),
            user_id,
            id,
        });
        Lease::new(stop, registration)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Vec<Held>>> {
        self.by_user.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends this gateway's connections that `revocation` names; returns how many.
    pub fn close(&self, revocation: &Revocation) -> usize {
        let mut index = self.index();
        let Some(held) = index.get_mut(&revocation.user_id) else {
            return 0;
        };
        let mut closed = 0;
        held.retain(|h| {
            let ends = revocation.ends(&h.credential);
            if ends {
                h.stop.cancel();
                closed += 1;
            }
            !ends
        });
        if held.is_empty() {
            index.remove(&revocation.user_id);
        }
        closed
    }

    /// Applies `revocation` here and tells the other gateways. Call it once the revocation is
    /// stored (the session deleted, the family or the user changed): a connection that opens
    /// after it cannot authenticate any more. A failed publish is logged: the revocation itself
    /// holds; only the other replicas' connections stay open.
    pub async fn revoke(&self, revocation: Revocation) {
        let closed = self.close(&revocation);
        if closed > 0 {
            tracing::debug!(user = %revocation.user_id, closed, "revoked connections closed");
        }
        let Some(redis) = &self.redis else {
            return;
        };
        let published = async {
            let message = serde_json::to_string(&revocation).map_err(|e| e.to_string())?;
            let mut conn = redis.connection().await.map_err(|e| e.to_string())?;
            redis::cmd("PUBLISH")
                .arg(redis.key(CHANNEL))
                .arg(message)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        if let Err(error) = published.await {
            tracing::warn!(user = %revocation.user_id, %error, "a revocation could not be published to the other gateways");
        }
    }

    /// A revocation published by a gateway (this one included, which finds nothing left).
    fn received(&self, revocation: &Revocation) {
        self.close(revocation);
        match &revocation.scope {
            Scope::Session(id) => match id.parse::<Id>() {
                Ok(id) => self.cache.forget(&cache::session_key(&id)),
                Err(_) => self.cache.clear(),
            },
            // Cached by token, not by family or user: rare enough to drop everything.
            Scope::Family(_) | Scope::Everything => self.cache.clear(),
        }
    }

    /// Whether revocations published by other gateways reach this one now (for tests).
    pub fn listening(&self) -> bool {
        self.listening.load(Ordering::Acquire)
    }

    /// Applies the revocations the gateways publish until `stop`, subscribing again after Redis
    /// comes back.
    async fn listen(&self, stop: CancellationToken) {
        let Some(redis) = &self.redis else {
            return;
        };
        let channel = redis.key(CHANNEL);
        loop {
            tokio::select! {
                () = stop.cancelled() => break,
                ended = self.subscribed(redis, &channel) => {
                    self.listening.store(false, Ordering::Release);
                    if let Err(error) = ended {
                        tracing::debug!(%error, "gateway revocations: no subscription");
                    }
                }
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(RESUBSCRIBE_AFTER) => {}
            }
        }
    }

    /// Subscribes and applies each revocation until the subscription ends.
    async fn subscribed(&self, redis: &RedisHandle, channel: &str) -> Result<(), String> {
        let subscribe = async {
            let mut pubsub = redis.pubsub().await.map_err(|e| e.to_string())?;
            pubsub.subscribe(channel).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(pubsub)
        };
        let pubsub = tokio::time::timeout(SUBSCRIBE_TIMEOUT, subscribe)
            .await
            .map_err(|_| format!("no subscription within {SUBSCRIBE_TIMEOUT:?}"))??;
        self.listening.store(true, Ordering::Release);
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            let revocation = message
                .get_payload::<String>()
                .ok()
                .and_then(|text| serde_json::from_str::<Revocation>(&text).ok());
            match revocation {
                Some(revocation) => self.received(&revocation),
                None => tracing::warn!("an unreadable gateway revocation was ignored"),
            }
        }
        Ok(())
    }
}

/// A Socket.IO (engine.io) handshake: the request that opens a session carries no `sid` yet.
fn opens_socket_io_session(request: &Request) -> bool {
    super::routes::is_socket_io(request.uri().path())
        && crate::http::paths::opens_engine_io_session(request.uri().query())
}

/// A connection's place in the index: dropping its [`Lease`]'s last clone (the connection ended)
/// removes it.
struct Registration {
    live: Arc<LiveConnections>,
    user_id: Uuid,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut index = self.live.index();
        if let Some(held) = index.get_mut(&self.user_id) {
            held.retain(|h| h.id != self.id);
            if held.is_empty() {
                index.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live() -> Arc<LiveConnections> {
        Arc::new(LiveConnections::new(
            Arc::new(AuthCache::new(Duration::ZERO)),
            None,
        ))
    }

    fn ended(lease: &Lease) -> bool {
        lease.is_stopped()
    }

    #[test]
    fn a_revocation_ends_exactly_the_connections_it_names() {
        let live = live();
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let family = Uuid::now_v7();
        let alice_cookie = live.lease(alice, Credential::Session("s1".into()));
        let alice_other_cookie = live.lease(alice, Credential::Session("s2".into()));
        let alice_token = live.lease(alice, Credential::Family(family));
        let bob_cookie = live.lease(bob, Credential::Session("s1".into()));

        let session = Revocation {
            user_id: alice,
            scope: Scope::Session("s1".into()),
        };
        assert_eq!(live.close(&session), 1);
        assert!(ended(&alice_cookie));
        assert!(!ended(&alice_other_cookie) && !ended(&alice_token) && !ended(&bob_cookie));

        assert_eq!(live.close(&Revocation::family(alice, family)), 1);
        assert!(ended(&alice_token) && !ended(&alice_other_cookie));

        assert_eq!(live.close(&Revocation::user(alice)), 1);
        assert!(ended(&alice_other_cookie) && !ended(&bob_cookie));
    }

    #[test]
    fn a_connection_that_ended_leaves_the_index() {
        let live = live();
        let user = Uuid::now_v7();
        let lease = live.lease(user, Credential::Session("s".into()));
        drop(lease);
        assert!(live.index().is_empty());
        assert_eq!(live.close(&Revocation::user(user)), 0);
    }

    #[test]
    fn a_revocation_travels_as_json_and_back() {
        for revocation in [
            Revocation::user(Uuid::now_v7()),
            Revocation::family(Uuid::now_v7(), Uuid::now_v7()),
            Revocation {
                user_id: Uuid::now_v7(),
                scope: Scope::Session("abc".into()),
            },
        ] {
            let text = serde_json::to_string(&revocation).unwrap();
            assert_eq!(
                serde_json::from_str::<Revocation>(&text).unwrap(),
                revocation
            );
        }
    }
}
