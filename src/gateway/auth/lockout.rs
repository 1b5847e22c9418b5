//! Brute-force lockout (SPEC §5.1): 5 failed sign-ins for one e-mail address from one IP within
//! 15 minutes lock that pair out until the oldest of them ages out. Counted in the database, so the
//! lock holds across gateway replicas, and the same for unknown addresses, so it reveals nothing.

use chrono::{DateTime, Duration, Utc};

use crate::infra::db::{Db, DbError};
use crate::on_pool;

pub const MAX_FAILURES: i64 = 5;
pub const WINDOW_MINUTES: i64 = 15;

/// How long the pair is still locked out, if it is.
pub async fn locked_for(db: &Db, email: &str, ip: &str) -> Result<Option<Duration>, DbError> {
    let since = Utc::now() - Duration::minutes(WINDOW_MINUTES);
    let recent = on_pool!(db, pool => {
        sqlx::query_scalar::<_, DateTime<Utc>>(
            "SELECT failed_at FROM login_failures WHERE email = $1 AND ip = $2 AND failed_at > $3 \
             ORDER BY failed_at DESC LIMIT 5",
        )
        .bind(email)
        .bind(ip)
        .bind(since)
        .fetch_all(pool)
        .await
    })?;
    if (recent.len() as i64) < MAX_FAILURES {
        return Ok(None);
    }
    // Locked until the oldest of the last five leaves the window.
    let oldest = recent.iter().min().copied().unwrap_or_else(Utc::now);
    let until = oldest + Duration::minutes(WINDOW_MINUTES);
    Ok(Some((until - Utc::now()).max(Duration::seconds(1))))
}

pub async fn record_failure(db: &Db, email: &str, ip: &str) -> Result<(), DbError> {
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query("INSERT INTO login_failures (email, ip, failed_at) VALUES ($1, $2, $3)")
            .bind(email)
            .bind(ip)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    // Old rows are worthless; keep the table small as we go.
    let horizon = now - Duration::minutes(WINDOW_MINUTES * 4);
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM login_failures WHERE failed_at < $1")
            .bind(horizon)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// A successful sign-in clears the pair's failures.
pub async fn clear(db: &Db, email: &str, ip: &str) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM login_failures WHERE email = $1 AND ip = $2")
            .bind(email)
            .bind(ip)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}
