//! Sending the recorded push messages: a background sender per order replica.
//!
//! Invariants:
//! - A message is sent from its row, outside any transaction and outside whatever emitted the
//!   event; a push service that is slow or down delays pushes and nothing else.
//! - Replicas share the rows by lease (`lease_until`), as the fulfillment sender does; an attempt
//!   counts from its claim.
//! - A 404 or 410 means the browser's subscription is gone (RFC 8030 §7.3, §8.3): it is removed with
//!   its messages. A 429, a 5xx, a timeout or a connection failure is tried again after 1 s, 2 s,
//!   4 s … at most [`MAX_ATTEMPTS`] times in all: a notification days late is noise. Any other
//!   answer is final (the request itself is wrong) and logged.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use futures::StreamExt;
use uuid::Uuid;

use super::Push;
use super::subscriptions::{self, Target};
use crate::infra::db::{Db, DbError};
use crate::infra::public_net;
use crate::infra::workers::{Workers, backoff, claim_lease};
use crate::on_pool;

/// Messages claimed per pass.
const BATCH: i64 = 20;
/// Requests in flight at once per replica.
const CONCURRENCY: usize = 8;
/// Without a wake-up, the sender still looks this often (for messages whose backoff ran out).
const IDLE: Duration = Duration::from_secs(2);
/// Attempts of one message, the first included.
pub const MAX_ATTEMPTS: i64 = 5;
/// How long the push service keeps a message for a browser that is offline (RFC 8030 §5.2).
const TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How long a claim holds: a whole claim's requests, [`CONCURRENCY`] at a time, each at most
/// `timeout` (`push.timeout_ms`), so no other replica sends a message this one is still sending.
pub(super) fn lease_for(timeout: Duration) -> TimeDelta {
    let waves = BATCH.unsigned_abs().div_ceil(CONCURRENCY as u64);
    claim_lease(timeout, u32::try_from(waves).unwrap_or(u32::MAX))
}

/// Runs the sender until shutdown.
pub fn spawn(workers: &Workers, push: Arc<Push>) {
    let wakeup = push.wakeup.clone();
    workers.sender("push-sender", wakeup, IDLE, BATCH as usize, move || {
        let push = push.clone();
        async move { pass(&push).await }
    });
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    subscription_id: Uuid,
    payload: String,
    attempts: i64,
}

/// What the push service made of one request.
#[derive(Debug)]
pub(super) enum Outcome {
    Delivered,
    /// 404 / 410: the subscription expired or was withdrawn.
    Gone(u16),
    /// Worth another try later.
    Retry(String),
    /// Final: the request was refused for what it is.
    Refused(String),
}

/// One pass: claims the messages that are due and sends them. Returns how many it handled.
pub async fn pass(push: &Push) -> Result<usize, DbError> {
    let claimed = claim(&push.db, Utc::now(), push.lease).await?;
    let count = claimed.len();
    let sends = futures::stream::iter(claimed)
        .map(|message| async move {
            let result = attempt(push, &message).await;
            if let Err(error) = result {
                tracing::warn!(message = %message.id, %error, "a push message's outcome could not be recorded");
            }
        })
        .buffer_unordered(CONCURRENCY);
    sends.collect::<Vec<()>>().await;
    Ok(count)
}

async fn claim(db: &Db, now: DateTime<Utc>, lease: TimeDelta) -> Result<Vec<Claimed>, DbError> {
    // The whole condition is repeated outside the subquery: PostgreSQL re-checks
    // it on a row another replica changed meanwhile, so two replicas never both take one row,
    // and none takes one another replica finished since its subquery read it.
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(
            "UPDATE push_messages SET lease_until = $1, attempts = attempts + 1 WHERE id IN ( \
               SELECT id FROM push_messages WHERE status = 'PENDING' AND next_attempt_at <= $2 \
               AND (lease_until IS NULL OR lease_until < $2) \
               ORDER BY next_attempt_at, id LIMIT $3) \
             AND status = 'PENDING' AND next_attempt_at <= $2 \
             AND (lease_until IS NULL OR lease_until < $2) \
             RETURNING id, subscription_id, payload, attempts",
        )
        .bind(now + lease)
        .bind(now)
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

async fn attempt(push: &Push, message: &Claimed) -> Result<(), DbError> {
    let Some(target) = subscriptions::target(&push.db, message.subscription_id).await? else {
        return Ok(()); // Removed meanwhile, with its messages.
    };
    match send(push, &target, &message.payload).await {
        Outcome::Delivered => finish(&push.db, message.id, "SENT", None).await,
        Outcome::Gone(status) => {
            tracing::info!(subscription = %target.id, status, "the push service no longer knows a subscription; it is removed");
            subscriptions::forget(&push.db, target.id).await
        }
        Outcome::Retry(error) if message.attempts < MAX_ATTEMPTS => {
            let wait = backoff(message.attempts);
            tracing::warn!(message = %message.id, attempts = message.attempts, retry_in_secs = wait.num_seconds(), %error, "a push failed; it is tried again");
            retry(&push.db, message.id, Utc::now() + wait, &error).await
        }
        Outcome::Retry(error) | Outcome::Refused(error) => {
            tracing::warn!(message = %message.id, attempts = message.attempts, %error, "a push is given up");
            finish(&push.db, message.id, "FAILED", Some(&error)).await
        }
    }
}

/// One request to the push service (RFC 8030 §5): the payload encrypted for the subscription
/// (RFC 8291, aes128gcm), signed for the endpoint's origin (RFC 8292).
pub(super) async fn send(push: &Push, target: &Target, payload: &str) -> Outcome {
    let keys = match push.keys().await {
        Ok(keys) => keys,
        Err(e) => return Outcome::Retry(format!("the VAPID keys are unavailable: {e}")),
    };
    let audience = match url::Url::parse(&target.endpoint) {
        Ok(url) if push.public_only && !public_net::is_public_host(&url) => {
            return Outcome::Refused("the endpoint is not on the public internet".into());
        }
        Ok(url) => url.origin().ascii_serialization(),
        Err(_) => return Outcome::Refused("the endpoint is not a URL".into()),
    };
    let Some(request) = encrypted_request(target, payload) else {
        return Outcome::Refused("the subscription's keys are not usable".into());
    };
    let authorization = match keys.authorization(&audience, &push.subject, Utc::now()) {
        Ok(value) => value,
        Err(e) => return Outcome::Retry(e.to_string()),
    };
    let mut request = match reqwest::Request::try_from(request) {
        Ok(request) => request,
        Err(e) => return Outcome::Refused(format!("the request cannot be made: {e}")),
    };
    let Ok(value) = reqwest::header::HeaderValue::from_str(&authorization) else {
        return Outcome::Refused("the VAPID header is not a header value".into());
    };
    request
        .headers_mut()
        .insert(reqwest::header::AUTHORIZATION, value);
    request.headers_mut().insert(
        "Urgency",
        reqwest::header::HeaderValue::from_static("normal"),
    );
    match push.http.execute(request).await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered;
            }
            let body: String = response
                .text()
                .await
                .unwrap_or_default()
                .chars()
                .take(300)
                .collect();
            let error = format!("the push service answered {}: {body}", status.as_u16());
            match status.as_u16() {
                404 | 410 => Outcome::Gone(status.as_u16()),
                429 | 500..=599 => Outcome::Retry(error),
                _ => Outcome::Refused(error),
            }
        }
        Err(e) if e.is_timeout() => {
            Outcome::Retry("the push service did not answer in time".into())
        }
        Err(e) => Outcome::Retry(format!("the push service could not be reached: {e}")),
    }
}

/// The request as web-push-native builds it: body encrypted, `TTL`, `Content-Encoding`.
fn encrypted_request(target: &Target, payload: &str) -> Option<axum::http::Request<Vec<u8>>> {
    let endpoint = target.endpoint.parse::<axum::http::Uri>().ok()?;
    let p256dh = subscriptions::decode(&target.p256dh)?;
    let ua_public = web_push_native::p256::PublicKey::from_sec1_bytes(&p256dh).ok()?;
    let auth: [u8; 16] = subscriptions::decode(&target.auth)?.try_into().ok()?;
    web_push_native::WebPushBuilder::new(endpoint, ua_public, web_push_native::Auth::from(auth))
        .with_valid_duration(TTL)
        .build(payload.as_bytes().to_vec())
        .ok()
}

async fn finish(db: &Db, id: Uuid, status: &str, error: Option<&str>) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE push_messages SET status = $2, done_at = $3, lease_until = NULL, \
             last_error = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(Utc::now())
        .bind(error)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

async fn retry(db: &Db, id: Uuid, next: DateTime<Utc>, error: &str) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query(
            "UPDATE push_messages SET next_attempt_at = $2, last_error = $3, lease_until = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .bind(next)
        .bind(error)
        .execute(pool)
        .await
        .map(drop)
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A claim holds while all of its messages may still be in flight: a pass sends them
    /// [`CONCURRENCY`] at a time, each for up to the timeout.
    #[test]
    fn a_claim_outlasts_its_slowest_wave_of_requests() {
        let timeout = Duration::from_secs(100);
        let waves = BATCH.unsigned_abs().div_ceil(CONCURRENCY as u64);
        let slowest = TimeDelta::from_std(timeout * u32::try_from(waves).unwrap()).unwrap();
        assert!(lease_for(timeout) > slowest, "{}", lease_for(timeout));
        assert_eq!(lease_for(Duration::from_secs(u64::MAX)), TimeDelta::MAX);
    }
}
