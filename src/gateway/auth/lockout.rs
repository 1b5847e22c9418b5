//! Brute-force lockout (SPEC §5.1): 5 failed sign-ins for one e-mail address from one client within
//! 15 minutes lock that pair out until the oldest of them ages out. A client is what the rate
//! limiter counts by ([`client_bucket`]): an IPv4 address or an IPv6 /64, since an IPv6 host picks
//! any address of its /64 at will. Counted in the database, so the lock holds across gateway
//! replicas, and the same for unknown addresses, so it reveals nothing.
//!
//! Invariant: of any number of concurrent attempts for one pair, at most [`MAX_FAILURES`] (minus
//! the failures already in the window) reach the password check. [`reserve`] records the attempt
//! and commits it *before* counting, and the password is checked only after: the k-th attempt to
//! commit sees at least k rows, so the sixth of a burst is refused whatever the interleaving, on
//! either database, on any number of replicas. The row then is the attempt's fate: a failure
//! leaves it (it is the failure record), a success clears the pair, and an attempt refused as
//! locked out deletes its own row, so hammering a locked pair does not prolong the lock.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use crate::gateway::rate_limit::client_bucket;
use crate::infra::db::{Db, DbError};
use crate::on_pool;

pub const MAX_FAILURES: i64 = 5;
pub const WINDOW_MINUTES: i64 = 15;

/// The pair an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pair {
    email: String,
    client: String,
}

impl Pair {
    /// `email` must already be normalized.
    pub fn new(email: &str, ip: IpAddr) -> Self {
        Self {
            email: email.to_owned(),
            client: client_bucket(ip),
        }
    }
}

/// What [`reserve`] decided.
#[derive(Debug)]
pub enum Reservation {
    /// The attempt is counted; check the password, then [`succeeded`] or leave it as a failure.
    Granted,
    /// The pair is locked out for this long; nothing was counted.
    Locked(Duration),
}

/// Counts one attempt for `pair`, or refuses it when the pair is locked out.
pub async fn reserve(db: &Db, pair: &Pair) -> Result<Reservation, DbError> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query(
            "INSERT INTO login_attempts (id, email, client, attempted_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(id)
        .bind(&pair.email)
        .bind(&pair.client)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    let since = now - Duration::minutes(WINDOW_MINUTES);
    // Every attempt in the window but this one, newest first: the five that decide the lock.
    let others = on_pool!(db, pool => {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT attempted_at FROM login_attempts \
             WHERE email = $1 AND client = $2 AND attempted_at > $3 AND id <> $4 \
             ORDER BY attempted_at DESC LIMIT 5",
        )
        .bind(&pair.email)
        .bind(&pair.client)
        .bind(since)
        .bind(id)
        .fetch_all(pool)
        .await
    })?;
    if (others.len() as i64) < MAX_FAILURES {
        return Ok(Reservation::Granted);
    }
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM login_attempts WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    // Locked until the oldest of the last five leaves the window.
    let oldest = others.iter().min().copied().unwrap_or(now);
    let until = oldest + Duration::minutes(WINDOW_MINUTES);
    Ok(Reservation::Locked(
        (until - Utc::now()).max(Duration::seconds(1)),
    ))
}

/// A successful sign-in clears the pair's attempts, its own included.
pub async fn succeeded(db: &Db, pair: &Pair) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM login_attempts WHERE email = $1 AND client = $2")
            .bind(&pair.email)
            .bind(&pair.client)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Old rows are worthless; a failed attempt keeps the table small as it goes.
pub async fn forget_old(db: &Db) -> Result<(), DbError> {
    let horizon = Utc::now() - Duration::minutes(WINDOW_MINUTES * 4);
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM login_attempts WHERE attempted_at < $1")
            .bind(horizon)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}
