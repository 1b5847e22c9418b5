//! A user's push subscriptions end with their sessions (SPEC §6.5). Whoever held one of the
//! user's sessions, or their password, could subscribe a browser of their own; the tenant's news
//! (customers, totals, tracking numbers) would reach it for as long as the subscription lasts,
//! after the password was changed or reset and after the user was deactivated or deleted. So
//! whenever the gateway ends a user's sessions, the order service forgets the user's browsers.
//!
//! Invariants:
//! - The revocation is a row (`push_revocations`) before it is a call: an order service that
//!   cannot be reached (split) delays it and loses nothing. Every gateway replica calls again,
//!   with backoff, until the order service has answered; forgetting is idempotent there, so two
//!   replicas calling for one row do no harm.
//! - A subscription made under the ended sessions can still land after the first call: a request
//!   that passed authentication just before, carrying a user context signed then. Such a context
//!   is refused once it is older than `proxy.user_context_max_age_secs` (plus the clocks' allowed
//!   skew), so the row is removed only by a call made after that age has passed since the
//!   sessions ended, and that call forgets whatever landed late.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::clients::order::OrderClient;
use crate::config::Config;
use crate::identity::context::FUTURE_SKEW;
use crate::infra::db::{Db, DbError};
use crate::infra::workers::{Workers, backoff};
use crate::on_pool;

/// How often a gateway looks for revocations that are due.
const EVERY: Duration = Duration::from_secs(5);
/// Revocations handled per pass at most.
const BATCH: i64 = 100;
/// Beyond the user context's maximum age: a request's last hop after it was signed.
const MARGIN: TimeDelta = TimeDelta::seconds(5);

/// The revocations this gateway records and carries out. Cheap to clone.
#[derive(Clone)]
pub struct PushRevocations {
    db: Db,
    order: Arc<dyn OrderClient>,
    /// How long after the sessions ended a subscription made under them can still land.
    settle: TimeDelta,
}

#[derive(Debug, sqlx::FromRow)]
struct Due {
    user_id: Uuid,
    tenant_id: Uuid,
    settle_at: DateTime<Utc>,
    attempts: i64,
}

impl PushRevocations {
    pub fn new(db: Db, order: Arc<dyn OrderClient>, config: &Config) -> Self {
        let max_age = Duration::from_secs(config.proxy.user_context_max_age_secs) + FUTURE_SKEW;
        let settle = TimeDelta::from_std(max_age).unwrap_or(TimeDelta::MAX) + MARGIN;
        Self { db, order, settle }
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

    /// User `user_id` of `tenant_id` has no session any more (a new password, deactivated,
    /// deleted): their browsers are forgotten now, and once more when nothing made under those
    /// sessions can land. A failure is logged and retried; the change to the user stands.
    pub async fn sessions_ended(&self, tenant_id: Uuid, user_id: Uuid) {
        let now = Utc::now();
        let recorded = on_pool!(&self.db, pool => {
            sqlx::query(
                "INSERT INTO push_revocations \
                 (user_id, tenant_id, settle_at, next_attempt_at, attempts, last_error) \
                 VALUES ($1, $2, $3, $4, 0, NULL) \
                 ON CONFLICT (user_id) DO UPDATE SET tenant_id = excluded.tenant_id, \
                 settle_at = excluded.settle_at, next_attempt_at = excluded.next_attempt_at, \
                 attempts = 0, last_error = NULL",
            )
            .bind(user_id)
            .bind(tenant_id)
            .bind(now + self.settle)
            .bind(now)
            .execute(pool)
            .await
            .map(drop)
        });
        if let Err(error) = recorded {
            tracing::error!(%error, %user_id, "the revocation of a user's push subscriptions could not be recorded; it is made once, now");
            if let Err(error) = self.order.forget_user(tenant_id, user_id).await {
                tracing::error!(%error, %user_id, "the push subscriptions of a user whose sessions ended could not be removed");
            }
            return;
        }
        let due = Due {
            user_id,
            tenant_id,
            settle_at: now + self.settle,
            attempts: 0,
        };
        if let Err(error) = self.attempt(&due, now).await {
            tracing::warn!(%error, %user_id, "the outcome of a push revocation could not be recorded; it is made again");
        }
    }

    /// One pass at `now`: every revocation that is due is attempted. Returns how many.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<usize, DbError> {
        let due = on_pool!(&self.db, pool => {
            sqlx::query_as::<_, Due>(
                "SELECT user_id, tenant_id, settle_at, attempts FROM push_revocations \
                 WHERE next_attempt_at <= $1 ORDER BY next_attempt_at, user_id LIMIT $2",
            )
            .bind(now)
            .bind(BATCH)
            .fetch_all(pool)
            .await
        })?;
        for revocation in &due {
            self.attempt(revocation, now).await?;
        }
        Ok(due.len())
    }

    /// Asks the order service to forget the user's browsers, and records the outcome: done for
    /// good once the call was made after the row settled, else due again at the settling time
    /// (answered) or after a backoff (not answered).
    async fn attempt(&self, due: &Due, now: DateTime<Utc>) -> Result<(), DbError> {
        let user_id = due.user_id;
        let answered = self.order.forget_user(due.tenant_id, user_id).await;
        let outcome = match answered {
            Ok(removed) => {
                tracing::debug!(%user_id, removed, "push subscriptions of a user whose sessions ended removed");
                if now >= due.settle_at {
                    Outcome::Done
                } else {
                    Outcome::Again(due.settle_at, None)
                }
            }
            Err(error) => {
                let attempts = due.attempts + 1;
                let wait = backoff(attempts);
                tracing::warn!(%error, %user_id, attempts, retry_in_secs = wait.num_seconds(), "the push subscriptions of a user whose sessions ended could not be removed yet");
                Outcome::Again(now + wait, Some(error.to_string()))
            }
        };
        // Conditional on `settle_at`: sessions that ended again meanwhile keep their own row.
        on_pool!(&self.db, pool => {
            match &outcome {
                Outcome::Done => sqlx::query(
                    "DELETE FROM push_revocations WHERE user_id = $1 AND settle_at = $2",
                )
                .bind(user_id)
                .bind(due.settle_at)
                .execute(pool)
                .await
                .map(drop),
                Outcome::Again(next, error) => sqlx::query(
                    "UPDATE push_revocations SET next_attempt_at = $3, \
                     attempts = attempts + $4, last_error = $5 \
                     WHERE user_id = $1 AND settle_at = $2",
                )
                .bind(user_id)
                .bind(due.settle_at)
                .bind(next)
                .bind(i64::from(error.is_some()))
                .bind(error.as_deref())
                .execute(pool)
                .await
                .map(drop),
            }
        })?;
        Ok(())
    }
}

enum Outcome {
    Done,
    /// Due again then, with the call's error when it was not answered.
    Again(DateTime<Utc>, Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::order::{HttpOrderClient, InProcessOrderClient};
    use crate::config::Role;
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
        /// with the reason, and is made once it can be. A subscription that lands after the first
        /// call, under a context signed before, is forgotten by the call after the settling time.
        async fn a_revocation_waits_for_the_order_service_and_catches_what_lands_late(backend: Backend) {
            let app = TestApp::spawn(Role::All, backend).await;
            let tenant = crate::identity::tenants::ensure(&app.ctx.db, "acme", "Acme").await.unwrap();
            let (user, other) = (Uuid::now_v7(), Uuid::now_v7());
            subscribe(&app, tenant.id, user, "a").await;
            subscribe(&app, tenant.id, other, "b").await;
            let config = &app.ctx.config;

            // Nothing listens where the order service should be.
            let nowhere = vec![format!("http://127.0.0.1:{}", free_port())];
            let unreachable: Arc<dyn OrderClient> = Arc::new(HttpOrderClient::new(nowhere, config).unwrap());
            let split = PushRevocations::new(app.ctx.db.clone(), unreachable, config);
            split.sessions_ended(tenant.id, user).await;
            let waiting = revocations(&app).await;
            assert_eq!(waiting.len(), 1, "{waiting:?}");
            assert_eq!((waiting[0].0, waiting[0].1), (user, 1));
            assert!(waiting[0].2.is_some(), "the reason is kept");
            assert_eq!(subscriptions_of(&app, user).await, 1);

            // The order service answers again (here in-process); the browser is forgotten, and
            // the row waits for the settling time.
            let reachable: Arc<dyn OrderClient> = Arc::new(InProcessOrderClient::of(&app.ctx));
            let gateway = PushRevocations::new(app.ctx.db.clone(), reachable, config);
            let later = Utc::now() + TimeDelta::hours(1);
            assert_eq!(gateway.pass(later).await.unwrap(), 1);
            assert_eq!(subscriptions_of(&app, user).await, 0);
            assert!(revocations(&app).await.is_empty(), "done after the settling time");

            // A revocation answered before it settled stays until a call after it.
            gateway.sessions_ended(tenant.id, user).await;
            assert_eq!(revocations(&app).await.len(), 1, "answered, not settled");
            subscribe(&app, tenant.id, user, "late").await;
            assert_eq!(gateway.pass(Utc::now()).await.unwrap(), 0, "not due before it settles");
            assert_eq!(gateway.pass(Utc::now() + gateway.settle).await.unwrap(), 1);
            assert_eq!(subscriptions_of(&app, user).await, 0, "what landed late is forgotten");
            assert!(revocations(&app).await.is_empty());
            assert_eq!(subscriptions_of(&app, other).await, 1, "another user's browser stays");
        }
    }
}
