//! A user's push subscriptions end with their sessions (SPEC §6.5). Whoever held one of the
//! user's sessions, or their password, could subscribe a browser of their own; the tenant's news
//! (customers, totals, tracking numbers) would reach it for as long as the subscription lasts,
//! after the password was changed or reset and after the user was deactivated or deleted. So
//! whenever a user's sessions end, the order service forgets every browser of the user (the one
//! of a session that goes on under the new password subscribes again).
//!
//! Invariants:
//! - The revocation is a row (`push_revocations`) before it is a call, written in the
//!   transaction that ends the sessions ([`crate::identity::users`]): the sessions' end and its
//!   record commit together. An order service that cannot be reached (split) delays the call and
//!   loses nothing: every gateway replica calls again, with backoff, until the order service has
//!   answered; forgetting is idempotent there, so two replicas calling for one row do no harm.
//! - A row is done when a call made after its sessions ended was answered. Sessions that end
//!   again meanwhile keep the row for another call.
//! - Not covered: a subscription request that was already authenticated under the ended
//!   sessions when the call was made, landing after it (a request in flight, or a gateway replica
//!   that has not yet heard of the revocation, for at most `session.cache_ms`).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::clients::order::OrderClient;
use crate::infra::db::{Db, DbError};
use crate::infra::workers::{Workers, backoff};
use crate::on_pool;

/// How often a gateway looks for revocations that are due.
const EVERY: Duration = Duration::from_secs(5);
/// Revocations handled per pass at most.
const BATCH: i64 = 100;

/// Carries out the revocations recorded when users' sessions ended. Cheap to clone.
#[derive(Clone)]
pub struct PushRevocations {
    db: Db,
    order: Arc<dyn OrderClient>,
}

#[derive(Debug, sqlx::FromRow)]
struct Due {
    user_id: Uuid,
    tenant_id: Uuid,
    ended_at: DateTime<Utc>,
    attempts: i64,
}

const COLUMNS: &str = "user_id, tenant_id, ended_at, attempts";

impl PushRevocations {
    pub fn new(db: Db, order: Arc<dyn OrderClient>) -> Self {
        Self { db, order }
    }

    /// Carries out the revocations that are due, every [`EVERY`], until shutdown.
    pub fn spawn(&self, workers: &Workers) {
        let revocations = self.clone();
        workers.every("push-revocations", EVERY, move || {
            let revocations = revocations.clone();
            async move {
                revocations
                    .pass(Utc::now())
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        });
    }

    /// The sessions of user `user_id` just ended, and their revocation was recorded: it is
    /// carried out now. A failure is logged and retried; the change to the user stands.
    pub async fn sessions_ended(&self, user_id: Uuid) {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM push_revocations WHERE user_id = $1"
        ));
        let due = on_pool!(&self.db, pool => {
            sqlx::query_as::<_, Due>(sql).bind(user_id).fetch_optional(pool).await
        });
        let outcome = match due {
            Ok(Some(due)) => self.attempt(&due, Utc::now()).await,
            Ok(None) => Ok(()), // Carried out meanwhile by a pass.
            Err(e) => Err(e.into()),
        };
        if let Err(error) = outcome {
            tracing::warn!(%error, %user_id, "a push revocation could not be carried out now; it is made again");
        }
    }

    /// One pass at `now`: every revocation that is due is attempted. Returns how many.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<usize, DbError> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM push_revocations WHERE next_attempt_at <= $1 \
             ORDER BY next_attempt_at, user_id LIMIT $2"
        ));
        let due = on_pool!(&self.db, pool => {
            sqlx::query_as::<_, Due>(sql).bind(now).bind(BATCH).fetch_all(pool).await
        })?;
        for revocation in &due {
            self.attempt(revocation, now).await?;
        }
        Ok(due.len())
    }

    /// Asks the order service to forget the user's browsers, and records the outcome: done once
    /// it answered, else due again after a backoff. Both records are conditional on `ended_at`:
    /// sessions that ended again meanwhile keep their row.
    async fn attempt(&self, due: &Due, now: DateTime<Utc>) -> Result<(), DbError> {
        let user_id = due.user_id;
        let answered = self.order.forget_user(due.tenant_id, user_id).await;
        on_pool!(&self.db, pool => {
            match &answered {
                Ok(removed) => {
                    tracing::debug!(%user_id, removed, "push subscriptions of a user whose sessions ended removed");
                    sqlx::query("DELETE FROM push_revocations WHERE user_id = $1 AND ended_at = $2")
                        .bind(user_id)
                        .bind(due.ended_at)
                        .execute(pool)
                        .await
                        .map(drop)
                }
                Err(error) => {
                    let attempts = due.attempts + 1;
                    let wait = backoff(attempts);
                    tracing::warn!(%error, %user_id, attempts, retry_in_secs = wait.num_seconds(), "the push subscriptions of a user whose sessions ended could not be removed yet");
                    sqlx::query(
                        "UPDATE push_revocations SET next_attempt_at = $3, \
                         attempts = attempts + 1, last_error = $4 \
                         WHERE user_id = $1 AND ended_at = $2",
                    )
                    .bind(user_id)
                    .bind(due.ended_at)
                    .bind(now + wait)
                    .bind(error.to_string())
                    .execute(pool)
                    .await
                    .map(drop)
                }
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;

    use super::*;
    use crate::clients::order::{HttpOrderClient, InProcessOrderClient};
    use crate::config::Role;
    use crate::identity::roles::UserRole;
    use crate::identity::users::{self, UserChanges};
    use crate::order::notifications::push::subscriptions::{self, NewSubscription};
    use crate::testing::{TestApp, free_port};

    async fn subscriptions_of(app: &TestApp, user_id: Uuid) -> i64 {
        on_pool!(&app.ctx.db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM push_subscriptions WHERE user_id = $1")
                .bind(user_id)
                .fetch_one(pool)
                .await
        })
        .unwrap()
    }

    async fn revocations(app: &TestApp) -> Vec<(Uuid, i64, Option<String>)> {
        on_pool!(&app.ctx.db, pool => {
            sqlx::query_as::<_, (Uuid, i64, Option<String>)>(
                "SELECT user_id, attempts, last_error FROM push_revocations ORDER BY user_id",
            )
            .fetch_all(pool)
            .await
        })
        .unwrap()
    }

    async fn subscribe(app: &TestApp, tenant_id: Uuid, user_id: Uuid, browser: &str) {
        let new = NewSubscription {
            endpoint: format!("https://push.example/{browser}"),
            p256dh: "p256dh".into(),
            auth: "auth".into(),
        };
        subscriptions::upsert(&app.ctx.db, tenant_id, user_id, &new)
            .await
            .unwrap();
    }

    crate::each_database! {
        /// The order service cannot be reached when a user's sessions end: the revocation waits,
        /// with the reason, and is made once it can be. Sessions that end again during a call
        /// keep the row for another.
        async fn a_revocation_waits_for_the_order_service(backend: Backend) {
            // The order role runs no gateway, so no revocation worker of its own races the
            // test's calls.
            let app = TestApp::spawn(Role::Order, backend).await;
            let db = &app.ctx.db;
            let user = app.create_user("ada@example.com", "a-long-password-1", UserRole::Operator).await;
            let other = app.create_user("bob@example.com", "a-long-password-1", UserRole::Operator).await;
            subscribe(&app, user.tenant_id, user.id, "a").await;
            subscribe(&app, other.tenant_id, other.id, "b").await;
            users::change_password(db, user.id, "a new hash").await.unwrap();

            // Nothing listens where the order service should be.
            let nowhere = vec![format!("http://127.0.0.1:{}", free_port())];
            let config = &app.ctx.config;
            let unreachable: Arc<dyn OrderClient> = Arc::new(HttpOrderClient::new(nowhere, config).unwrap());
            PushRevocations::new(db.clone(), unreachable).sessions_ended(user.id).await;
            let waiting = revocations(&app).await;
            assert_eq!(waiting.len(), 1, "{waiting:?}");
            assert_eq!((waiting[0].0, waiting[0].1), (user.id, 1));
            assert!(waiting[0].2.is_some(), "the reason is kept");
            assert_eq!(subscriptions_of(&app, user.id).await, 1);

            // The order service answers again (here in-process): the browser is forgotten.
            let reachable: Arc<dyn OrderClient> = Arc::new(InProcessOrderClient::of(&app.ctx));
            let gateway = PushRevocations::new(db.clone(), reachable);
            assert_eq!(gateway.pass(Utc::now() + TimeDelta::hours(1)).await.unwrap(), 1);
            assert_eq!(subscriptions_of(&app, user.id).await, 0);
            assert!(revocations(&app).await.is_empty());
            assert_eq!(subscriptions_of(&app, other.id).await, 1, "another user's browser stays");

            // The sessions end again while a call for the first end is under way.
            users::change_password(db, user.id, "a newer hash").await.unwrap();
            let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM push_revocations"));
            let first = on_pool!(db, pool => { sqlx::query_as::<_, Due>(sql).fetch_one(pool).await }).unwrap();
            let update = UserChanges { is_active: Some(false), ..UserChanges::default() };
            users::update(db, user.id, &update).await.unwrap().unwrap();
            gateway.attempt(&first, Utc::now()).await.unwrap();
            assert_eq!(revocations(&app).await.len(), 1, "the newer end waits for its own call");
            assert_eq!(gateway.pass(Utc::now()).await.unwrap(), 1);
            assert!(revocations(&app).await.is_empty());
        }
    }
}
