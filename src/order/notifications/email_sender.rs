//! Sending the recorded e-mails: a background sender per order-role process.
//!
//! Invariants:
//! - An e-mail is due while it is PENDING and `next_attempt_at` has come. The state lives in its
//!   row, so a restart, a crash or an SMTP outage loses nothing.
//! - A send that fails for a reason that may pass (the server is down, slow, or answers 4xx) is
//!   tried again after 1 s, 2 s, 4 s … (jittered, at most 10 minutes), the last error on the row;
//!   after [`GIVE_UP_AFTER`] it is given up (FAILED). A permanent refusal (5xx) is given up at once.
//! - Replicas share the work by lease (`lease_until`), as the fulfillment sender does, so each
//!   e-mail is sent by one of them. An e-mail whose send succeeded but whose process died before
//!   it was marked is sent again after its lease: at least once, never lost.
//! - After the first send that fails because the server takes no e-mail now, the rest of the pass
//!   waits too: with the server down, one timeout per pass is spent, not one per e-mail. A
//!   passing refusal of one e-mail (a full mailbox, greylisting) holds back no other.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::email::{Delivery, Mailer, SendError};
use crate::infra::db::{Db, DbError};
use crate::infra::workers::{Wakeup, Workers, backoff, claim_lease, each_claimed};
use crate::on_pool;

const WORKER: &str = "notification-emails";
/// E-mails claimed per pass.
const BATCH: i64 = 10;
/// Without a wake-up, the sender still looks this often (for e-mails whose backoff ran out).
const IDLE: Duration = Duration::from_secs(2);
/// An e-mail that could not be sent for this long is given up: news of a failure that old is
/// better read in the event log.
pub const GIVE_UP_AFTER: TimeDelta = TimeDelta::days(3);
/// Sent, logged and given-up e-mails are kept this long (to look into what was mailed), no longer.
const KEEP: TimeDelta = TimeDelta::days(30);
/// The longest claim, whatever the timeout.
const MAX_LEASE: TimeDelta = TimeDelta::days(7);
/// How often the old ones are deleted.
const CLEANUP_EVERY: Duration = Duration::from_secs(60 * 60);

/// Runs the sender and its retention until shutdown.
pub fn spawn(workers: &Workers, db: Db, mailer: Arc<Mailer>, wakeup: Wakeup) {
    let lease = lease_for(&mailer);
    let (pass_db, pass_mailer) = (db.clone(), mailer);
    workers.sender(WORKER, wakeup, IDLE, BATCH as usize, move || {
        let (db, mailer) = (pass_db.clone(), pass_mailer.clone());
        async move { pass(&db, &mailer, lease).await }
    });
    workers.every("notification-email-retention", CLEANUP_EVERY, move || {
        let db = db.clone();
        async move {
            forget_old(&db, Utc::now() - KEEP)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        }
    });
}

/// How long a claim holds: longer than a whole batch of sends can take, so no other replica
/// takes an e-mail this one is still sending.
pub fn lease_for(mailer: &Mailer) -> TimeDelta {
    let per_send = match mailer {
        Mailer::Smtp { timeout, .. } => *timeout,
        Mailer::LogOnly => Duration::ZERO,
    };
    let batch = u32::try_from(BATCH).unwrap_or(u32::MAX);
    claim_lease(per_send, batch).min(MAX_LEASE)
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    recipient: String,
    subject: String,
    body: String,
    attempts: i64,
    created_at: DateTime<Utc>,
}

/// One pass: claims the e-mails that are due and sends them. Returns how many it claimed.
pub async fn pass(db: &Db, mailer: &Mailer, lease: TimeDelta) -> Result<usize, DbError> {
    let claimed = claim(db, Utc::now(), lease).await?;
    // Once the server failed us, the others wait as long, without an attempt counted.
    let deferred_until = OnceLock::new();
    let handled = each_claimed(WORKER, &claimed, |email| {
        let deferred_until = &deferred_until;
        async move {
            if let Some(next) = deferred_until.get() {
                return defer(db, email.id, *next).await;
            }
            match mailer
                .send(&email.recipient, &email.subject, &email.body)
                .await
            {
                Ok(delivery) => sent(db, email.id, delivery).await,
                Err(SendError::Permanent(error)) => {
                    tracing::error!(email = %email.id, attempts = email.attempts, %error, "the SMTP server refused a notification e-mail; it is given up");
                    give_up(db, email.id, &error).await
                }
                Err(SendError::Transient(error) | SendError::Later(error))
                    if Utc::now() - email.created_at > GIVE_UP_AFTER =>
                {
                    tracing::error!(email = %email.id, attempts = email.attempts, %error, "a notification e-mail could not be sent for days; it is given up");
                    give_up(db, email.id, &error).await
                }
                Err(failure @ (SendError::Transient(_) | SendError::Later(_))) => {
                    let next = Utc::now() + backoff(email.attempts);
                    let error = failure.to_string();
                    tracing::warn!(email = %email.id, attempts = email.attempts, retry_at = %next, %error, "sending a notification e-mail failed; it is tried again");
                    // A reply about this e-mail alone (a full mailbox) holds back no other.
                    if matches!(failure, SendError::Transient(_)) {
                        deferred_until.get_or_init(|| next);
                    }
                    retry_later(db, email.id, next, &error).await
                }
            }
        }
    })
    .await;
    Ok(handled)
}

async fn claim(db: &Db, now: DateTime<Utc>, lease: TimeDelta) -> Result<Vec<Claimed>, DbError> {
    // The whole condition is repeated outside the subquery: PostgreSQL re-checks
    // it on a row another replica changed meanwhile, so two replicas never both take one row,
    // and none takes one another replica finished since its subquery read it.
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(
            "UPDATE notification_emails SET lease_until = $1, attempts = attempts + 1 \
             WHERE id IN ( \
               SELECT id FROM notification_emails WHERE status = 'PENDING' \
               AND next_attempt_at <= $2 AND (lease_until IS NULL OR lease_until < $2) \
               ORDER BY next_attempt_at, id LIMIT $3) \
             AND status = 'PENDING' AND next_attempt_at <= $2 \
             AND (lease_until IS NULL OR lease_until < $2) \
             RETURNING id, recipient, subject, body, attempts, created_at",
        )
        .bind(now + lease)
        .bind(now)
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

async fn sent(db: &Db, id: Uuid, delivery: Delivery) -> Result<(), DbError> {
    let status = match delivery {
        Delivery::Sent => "SENT",
        Delivery::Logged => "LOGGED",
    };
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE notification_emails SET status = $2, sent_at = $3, lease_until = NULL, \
             last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(Utc::now())
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

async fn give_up(db: &Db, id: Uuid, error: &str) -> Result<(), DbError> {
    let error: String = error.chars().take(500).collect();
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE notification_emails SET status = 'FAILED', lease_until = NULL, last_error = $2 \
             WHERE id = $1",
        )
        .bind(id)
        .bind(&error)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

async fn retry_later(db: &Db, id: Uuid, next: DateTime<Utc>, error: &str) -> Result<(), DbError> {
    let error: String = error.chars().take(500).collect();
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE notification_emails SET next_attempt_at = $2, lease_until = NULL, \
             last_error = $3 WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .bind(&error)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Puts a claimed e-mail back, untried: its claim did not become an attempt.
async fn defer(db: &Db, id: Uuid, next: DateTime<Utc>) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE notification_emails SET next_attempt_at = $2, lease_until = NULL, \
             attempts = attempts - 1 WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// Deletes the e-mails done with (sent, logged, given up) before `before`; returns how many.
pub async fn forget_old(db: &Db, before: DateTime<Utc>) -> Result<u64, DbError> {
    let deleted = on_pool!(db, pool => {
        sqlx::query(
            "DELETE FROM notification_emails WHERE status <> 'PENDING' AND created_at < $1",
        )
        .bind(before)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(deleted)
}
