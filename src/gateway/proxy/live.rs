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
//! message published while a replica's subscription is down (Redis restarting) does not reach it,
//! so once subscribed again a gateway checks every connection it holds against the stores.
//!
//! A sign-in also ends without anyone revoking it: a session after 24 h without a request, an
//! access token at its expiry. Each connection keeps when its sign-in lapses; a sweep closes those
//! whose session is gone or expired (or moves the time on, when other requests kept the session
//! alive) and those whose token expired (the client reconnects with a fresh one).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::Request;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tower_sessions::Session;
use tower_sessions::session::Id;
use tower_sessions::session_store::SessionStore;
use uuid::Uuid;

use super::upgrade;
use crate::gateway::auth::Authenticated;
use crate::gateway::auth::cache::{AuthCache, CacheKey};
use crate::gateway::auth::tokens;
pub use crate::identity::lease::Lease;
use crate::identity::lease::Stop;
use crate::identity::users;
use crate::infra::db::Db;
use crate::infra::redis::RedisHandle;
use crate::infra::sessions::Sessions;
use crate::infra::workers::Workers;

/// The Redis channel (under `redis.key_prefix`) revocations are published on.
pub(crate) const CHANNEL: &str = "gateway:revocations";
/// How long connecting and subscribing may take before the listener tries again.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The pause before a lost subscription is opened again.
const RESUBSCRIBE_AFTER: Duration = Duration::from_secs(1);
/// How often held connections whose sign-in may have lapsed are looked at.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What authenticated an upgraded connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// What a connection was opened with: its credential, the user's session epoch then, and when
/// the sign-in lapses unless renewed (`None`: not known to).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub credential: Credential,
    pub epoch: i64,
    pub until: Option<DateTime<Utc>>,
}

/// One open connection in the index (by its id).
struct Held {
    grant: Grant,
    stop: Stop,
}

/// Where a held connection's sign-in is checked: the session store and the database.
#[derive(Clone)]
pub struct Stores {
    pub db: Db,
    pub sessions: Sessions,
}

/// Which held connections a check looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Due {
    /// Those whose sign-in has lapsed.
    Lapsed,
    /// All of them: revocations may have been missed.
    All,
}

/// This gateway's open upgraded connections, and the revocations that end them.
pub struct LiveConnections {
    /// A user's connections by id: one user may hold thousands (a shared kiosk session), and each
    /// leaves the index on its own.
    by_user: Mutex<HashMap<Uuid, HashMap<u64, Held>>>,
    next_id: AtomicU64,
    /// Dropped on a revocation from another gateway: its identities may be cached here.
    cache: Arc<AuthCache>,
    redis: Option<RedisHandle>,
    /// Whether revocations published by other gateways reach this one now.
    listening: AtomicBool,
    stores: Stores,
}

impl LiveConnections {
    /// The index, listening to the other gateways' revocations when Redis is configured.
    pub fn start(
        redis: Option<RedisHandle>,
        workers: &Workers,
        cache: Arc<AuthCache>,
        stores: Stores,
    ) -> Arc<Self> {
        let live = Arc::new(Self::new(cache, redis, stores));
        if live.redis.is_some() {
            let listener = live.clone();
            workers.spawn("gateway-revocations", move |stop| async move {
                listener.listen(stop).await;
            });
        }
        let sweeper = live.clone();
        workers.every("gateway-lapsed-connections", SWEEP_EVERY, move || {
            let sweeper = sweeper.clone();
            async move {
                sweeper.sweep(Utc::now()).await;
                Ok(())
            }
        });
        live
    }

    fn new(cache: Arc<AuthCache>, redis: Option<RedisHandle>, stores: Stores) -> Self {
        Self {
            by_user: Mutex::default(),
            next_id: AtomicU64::new(0),
            cache,
            redis,
            listening: AtomicBool::new(false),
            stores,
        }
    }

    /// A lease for `request` by `auth`, the signed-in user, when it opens a connection that
    /// outlives it and something will hold the lease for that connection's life: sent over HTTP
    /// (`in_process` false), a websocket, which the gateway's splice holds; served in this process
    /// (role `all`), a request that opens a Socket.IO session (its polling handshake, or a direct
    /// websocket), which the socket holds and disconnects by, whatever transport it upgrades to.
    /// `None` for any other request: a polling handshake sent to a split order service (each poll
    /// is authenticated), or the websocket upgrade of a session the socket already holds a lease
    /// for.
    pub fn lease_for(
        self: &Arc<Self>,
        request: &Request,
        auth: &Authenticated,
        in_process: bool,
    ) -> Option<Lease> {
        let held = if in_process {
            opens_socket_io_session(request)
        } else {
            upgrade::is_websocket(request.headers())
        };
        if !held {
            return None;
        }
        let (credential, until) = match auth.token_family {
            Some(family) => (Credential::Family(family), auth.token_expires_at),
            None => {
                let session = request.extensions().get::<Session>()?;
                let id = session.id()?;
                (
                    Credential::Session(id.to_string()),
                    DateTime::from_timestamp(session.expiry_date().unix_timestamp(), 0),
                )
            }
        };
        let grant = Grant {
            credential,
            epoch: auth.user.session_epoch,
            until,
        };
        Some(self.lease(auth.context.user_id, grant))
    }

    /// Registers a connection of `user_id` opened with `grant`.
    pub fn lease(self: &Arc<Self>, user_id: Uuid, grant: Grant) -> Lease {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stop = Stop::new();
        self.index().entry(user_id).or_default().insert(
            id,
            Held {
                grant,
                stop: stop.clone(),
            },
        );
        let registration = Arc::new(Registration {
            live: self.clone(),
            user_id,
            id,
        });
        held_connections().increment(1.0);
        Lease::new(stop, registration)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, HashMap<u64, Held>>> {
        self.by_user.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends this gateway's connections that `revocation` names; returns how many.
    pub fn close(&self, revocation: &Revocation) -> usize {
        self.close_where(revocation.user_id, |_, h| {
            revocation.ends(&h.grant.credential)
        })
    }

    /// Ends the connections of `user_id` that `ends` picks; returns how many.
    fn close_where(&self, user_id: Uuid, ends: impl Fn(u64, &Held) -> bool) -> usize {
        let mut stops = Vec::new();
        {
            let mut index = self.index();
            let Some(held) = index.get_mut(&user_id) else {
                return 0;
            };
            held.retain(|&id, h| {
                let this_one = ends(id, h);
                if this_one {
                    stops.push(h.stop.clone());
                }
                !this_one
            });
            if held.is_empty() {
                index.remove(&user_id);
            }
        }
        // Fired once the index is let go: ending a connection drops its lease, whose registration
        // takes the index to leave it.
        for stop in &stops {
            stop.fire();
        }
        stops.len()
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
                Ok(id) => self.cache.forget(&CacheKey::Session(id)),
                Err(_) => self.cache.clear(),
            },
            // Cached by token, not by family or user: rare enough to drop everything.
            Scope::Family(_) | Scope::Everything => self.cache.clear(),
        }
    }

    /// Closes the connections whose sign-in lapsed by `now` and no longer holds: a session that
    /// is gone or expired, a token that expired. A session that other requests kept alive gets
    /// its new expiry. Returns how many were closed.
    pub async fn sweep(&self, now: DateTime<Utc>) -> usize {
        self.check(Due::Lapsed, now).await
    }

    /// Checks every held connection against the stores, as a request would be (used once the
    /// revocations channel is back: what was published meanwhile never arrived). Returns how
    /// many were closed.
    pub async fn revalidate(&self, now: DateTime<Utc>) -> usize {
        self.check(Due::All, now).await
    }

    async fn check(&self, due: Due, now: DateTime<Utc>) -> usize {
        // Each sign-in is asked about once, however many connections it opened.
        let mut due_grants: HashMap<(Uuid, Grant), HashSet<u64>> = HashMap::new();
        for (user, held) in self.index().iter() {
            for (&id, h) in held {
                let is_due = match due {
                    Due::All => true,
                    Due::Lapsed => h.grant.until.is_some_and(|until| until <= now),
                };
                if is_due {
                    due_grants
                        .entry((*user, h.grant.clone()))
                        .or_default()
                        .insert(id);
                }
            }
        }
        let mut closed = 0;
        for ((user_id, grant), ids) in due_grants {
            match self.holds(user_id, &grant, now).await {
                // A store that does not answer ends nothing: the next sweep asks again.
                Err(error) => {
                    tracing::warn!(user = %user_id, %error, "a held connection's sign-in could not be checked");
                }
                Ok(Some(until)) => self.renew(user_id, &ids, until),
                Ok(None) => closed += self.close_where(user_id, |id, _| ids.contains(&id)),
            }
        }
        if closed > 0 {
            tracing::debug!(
                closed,
                "connections whose sign-in lapsed or was revoked closed"
            );
        }
        closed
    }

    /// `Some(until)` when `grant` still signs `user_id` in at `now`, until `until`.
    async fn holds(
        &self,
        user_id: Uuid,
        grant: &Grant,
        now: DateTime<Utc>,
    ) -> Result<Option<Option<DateTime<Utc>>>, String> {
        let until = match &grant.credential {
            Credential::Session(id) => {
                let Ok(id) = id.parse::<Id>() else {
                    return Ok(None);
                };
                let record = self
                    .stores
                    .sessions
                    .load(&id)
                    .await
                    .map_err(|e| e.to_string())?;
                let Some(record) = record else {
                    return Ok(None);
                };
                let until = DateTime::from_timestamp(record.expiry_date.unix_timestamp(), 0);
                if until.is_none_or(|until| until <= now) {
                    return Ok(None);
                }
                until
            }
            Credential::Family(family) => {
                if grant.until.is_some_and(|until| until <= now) {
                    return Ok(None);
                }
                let db = &self.stores.db;
                if !tokens::family_is_active(db, *family)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    return Ok(None);
                }
                grant.until
            }
        };
        let user = users::still_signed_in(&self.stores.db, user_id, grant.epoch)
            .await
            .map_err(|e| e.to_string())?;
        Ok(user.map(|_| until))
    }

    /// Moves the lapse time of held connections `ids` on.
    fn renew(&self, user_id: Uuid, ids: &HashSet<u64>, until: Option<DateTime<Utc>>) {
        if let Some(held) = self.index().get_mut(&user_id) {
            for id in ids {
                if let Some(h) = held.get_mut(id) {
                    h.grant.until = until;
                }
            }
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
        // Whatever was published before this subscription (while Redis was away) is lost:
        // the connections held meanwhile are checked as a request would be.
        self.revalidate(Utc::now()).await;
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

/// Whether `request` opens a connection that outlives it: a websocket handshake, or the
/// long-polling handshake of a Socket.IO session. Such a request may be leased by its session
/// ([`LiveConnections::lease_for`]).
pub fn outlives_its_request(request: &Request) -> bool {
    upgrade::is_websocket(request.headers()) || opens_socket_io_session(request)
}

/// A Socket.IO (engine.io) handshake: the request that opens a session carries no `sid` yet.
fn opens_socket_io_session(request: &Request) -> bool {
    super::routes::is_socket_io(request.uri().path())
        && crate::http::paths::opens_engine_io_session(request.uri().query())
}

/// `gateway_held_connections`: the upgraded connections (websockets, Socket.IO sessions) this
/// gateway holds open and ends when their sign-in is revoked.
fn held_connections() -> metrics::Gauge {
    metrics::gauge!("gateway_held_connections")
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
        held_connections().decrement(1.0);
        let mut index = self.live.index();
        if let Some(held) = index.get_mut(&self.user_id) {
            held.remove(&self.id);
            if held.is_empty() {
                index.remove(&self.user_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::identity::roles::UserRole;
    use crate::infra::db::Backend;
    use crate::testing::TestApp;
    use tower_sessions::session::Record;

    /// An index whose stores are never asked (the revocation tests).
    async fn live() -> Arc<LiveConnections> {
        let db = Db::connect("sqlite::memory:", 1).await.unwrap();
        live_on(&db)
    }

    fn live_on(db: &Db) -> Arc<LiveConnections> {
        let stores = Stores {
            db: db.clone(),
            sessions: Sessions::new(db, None, &Workers::new()),
        };
        Arc::new(LiveConnections::new(
            Arc::new(AuthCache::new(Duration::ZERO)),
            None,
            stores,
        ))
    }

    fn grant(credential: Credential) -> Grant {
        Grant {
            credential,
            epoch: 0,
            until: None,
        }
    }

    fn ended(lease: &Lease) -> bool {
        lease.is_stopped()
    }

    #[tokio::test]
    async fn a_revocation_ends_exactly_the_connections_it_names() {
        let live = live().await;
        let (alice, bob) = (Uuid::now_v7(), Uuid::now_v7());
        let family = Uuid::now_v7();
        let alice_cookie = live.lease(alice, grant(Credential::Session("s1".into())));
        let alice_other_cookie = live.lease(alice, grant(Credential::Session("s2".into())));
        let alice_token = live.lease(alice, grant(Credential::Family(family)));
        let bob_cookie = live.lease(bob, grant(Credential::Session("s1".into())));

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

    #[tokio::test]
    async fn a_connection_that_ended_leaves_the_index() {
        let live = live().await;
        let user = Uuid::now_v7();
        let lease = live.lease(user, grant(Credential::Session("s".into())));
        drop(lease);
        assert!(live.index().is_empty());
        assert_eq!(live.close(&Revocation::user(user)), 0);
    }

    /// A session stored until `until`, as the session layer stores a sign-in.
    async fn stored_session(live: &LiveConnections, until: DateTime<Utc>) -> String {
        let mut record = Record {
            id: Id::default(),
            data: Default::default(),
            expiry_date: time::OffsetDateTime::from_unix_timestamp(until.timestamp()).unwrap(),
        };
        live.stores.sessions.create(&mut record).await.unwrap();
        record.id.to_string()
    }

    async fn user(app: &TestApp, email: &str) -> crate::identity::users::User {
        app.create_user(email, "a-long-password", UserRole::Viewer)
            .await
    }

    #[tokio::test]
    async fn a_sweep_ends_lapsed_sign_ins_and_moves_renewed_sessions_on() {
        let app = TestApp::spawn(Role::Gateway, Backend::Sqlite).await;
        let live = live_on(&app.ctx.db);
        let alice = user(&app, "alice@example.com").await;
        let now = Utc::now();
        let hour = chrono::TimeDelta::hours(1);
        let at = |credential, until| Grant {
            credential,
            epoch: alice.session_epoch,
            until: Some(until),
        };
        // Lapsed when opened, but other requests kept the session alive since.
        let renewed_id = stored_session(&live, now + hour).await;
        let renewed = live.lease(
            alice.id,
            at(Credential::Session(renewed_id.clone()), now - hour),
        );
        // A second tab of that session, checked with the first: both renewed.
        let renewed_too = live.lease(alice.id, at(Credential::Session(renewed_id), now - hour));
        // Lapsed, and the store no longer has it (expired there and deleted).
        let gone = live.lease(alice.id, at(Credential::Session("gone".into()), now - hour));
        // The store no longer has it either, but it has not lapsed yet: not looked at.
        let not_due = live.lease(alice.id, at(Credential::Session("gone".into()), now + hour));
        // A token past its expiry; another one not yet.
        let expired = live.lease(alice.id, at(Credential::Family(Uuid::now_v7()), now));
        let fresh = live.lease(alice.id, at(Credential::Family(Uuid::now_v7()), now + hour));

        assert_eq!(live.sweep(now).await, 2);
        assert!(ended(&gone) && ended(&expired));
        assert!(!ended(&renewed) && !ended(&renewed_too) && !ended(&not_due) && !ended(&fresh));
        // Its lapse time is the session's: gone at the sweep after the session expired.
        assert_eq!(live.sweep(now + hour / 2).await, 0);
        assert_eq!(live.sweep(now + hour * 2).await, 4);
        assert!(ended(&renewed) && ended(&renewed_too) && ended(&not_due) && ended(&fresh));
    }

    #[tokio::test]
    async fn checking_every_connection_ends_those_whose_revocation_was_missed() {
        let app = TestApp::spawn(Role::Gateway, Backend::Sqlite).await;
        let live = live_on(&app.ctx.db);
        let (alice, bob) = (
            user(&app, "alice@example.com").await,
            user(&app, "bob@example.com").await,
        );
        let now = Utc::now();
        let later = now + chrono::TimeDelta::hours(1);
        let mut leases = Vec::new();
        for who in [&alice, &bob] {
            let id = stored_session(&live, later).await;
            let grant = Grant {
                credential: Credential::Session(id),
                epoch: who.session_epoch,
                until: Some(later),
            };
            leases.push(live.lease(who.id, grant));
        }
        // Signed out on another gateway while this one's subscription was down.
        let signed_out = stored_session(&live, later).await;
        let signed_out_grant = Grant {
            credential: Credential::Session(signed_out.clone()),
            epoch: bob.session_epoch,
            until: Some(later),
        };
        // Two connections of it (two tabs), checked as one sign-in: both end.
        let signed_out_lease = live.lease(bob.id, signed_out_grant.clone());
        let signed_out_too = live.lease(bob.id, signed_out_grant);
        live.stores
            .sessions
            .delete(&signed_out.parse().unwrap())
            .await
            .unwrap();
        // Deactivated meanwhile (which moves the session epoch on).
        let changes = users::UserChanges {
            is_active: Some(false),
            ..Default::default()
        };
        users::update(&app.ctx.db, alice.id, &changes)
            .await
            .unwrap();

        assert_eq!(live.sweep(now).await, 0, "nothing has lapsed");
        assert_eq!(live.revalidate(now).await, 3);
        assert!(ended(&leases[0]) && ended(&signed_out_lease) && ended(&signed_out_too));
        assert!(!ended(&leases[1]), "bob's other session still signs him in");
    }

    /// The whole path a missed revocation takes: this gateway's subscription drops with Redis, a
    /// session is signed out elsewhere meanwhile (its revocation published to nobody), and once
    /// Redis is back the listener subscribes again and checks every held connection, ending that
    /// session's. On a Redis server of the test's own, never the shared one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_missed_while_redis_was_down_ends_the_connection_once_it_is_back() {
        use crate::testing::{eventually, free_port, redis_server};
        let app = TestApp::spawn(Role::Gateway, Backend::Sqlite).await;
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = redis_server(port, dir.path()).await;
        let url = crate::config::SecretUrl::new(format!("redis://127.0.0.1:{port}"));
        let redis = RedisHandle::open(&url, "forma_live_restart:").unwrap();
        let workers = Workers::new();
        let stores = Stores {
            db: app.ctx.db.clone(),
            sessions: Sessions::new(&app.ctx.db, None, &workers),
        };
        let cache = Arc::new(AuthCache::new(Duration::ZERO));
        let live = LiveConnections::start(Some(redis), &workers, cache, stores);
        let within = Duration::from_secs(20);
        let listening = |want: bool| {
            let live = live.clone();
            move || {
                let live = live.clone();
                async move { (live.listening() == want).then_some(()) }
            }
        };
        eventually("the first subscription", within, listening(true)).await;

        let alice = user(&app, "alice@example.com").await;
        let later = Utc::now() + chrono::TimeDelta::hours(1);
        let mut leases = Vec::new();
        for _ in 0..2 {
            let id = stored_session(&live, later).await;
            let grant = Grant {
                credential: Credential::Session(id.clone()),
                epoch: alice.session_epoch,
                until: Some(later),
            };
            leases.push((id, live.lease(alice.id, grant)));
        }

        server.kill().await.unwrap();
        eventually("the subscription to drop", within, listening(false)).await;
        let (signed_out, _) = &leases[0];
        live.stores
            .sessions
            .delete(&signed_out.parse().unwrap())
            .await
            .unwrap();
        assert!(!ended(&leases[0].1), "nobody told this gateway yet");

        let _server = redis_server(port, dir.path()).await;
        eventually("the signed-out connection to end", within, || async {
            ended(&leases[0].1).then_some(())
        })
        .await;
        assert!(live.listening(), "subscribed again");
        assert!(
            !ended(&leases[1].1),
            "alice's other session still signs her in"
        );
        workers.shutdown(Duration::from_secs(5)).await;
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
