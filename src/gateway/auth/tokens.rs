//! Bearer tokens for non-browser clients (SPEC §5.1): a JWT access token (HS256, 15 minutes) and
//! an opaque refresh token, rotated on every use. Presenting an already used refresh token means
//! it was stolen or replayed: the whole family is revoked.

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Config;
use crate::identity::users::User;
use crate::infra::db::{Db, DbError};
use crate::on_pool;

pub const ACCESS_TTL_SECONDS: i64 = 15 * 60;
pub const REFRESH_TTL_DAYS: i64 = 30;

/// The signing key: derived from `session.secret` so every replica agrees; without one (a
/// development install), random per process.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
}

impl TokenKeys {
    pub fn from_config(config: &Config) -> Self {
        let secret: Vec<u8> = match &config.session.secret {
            // A separate key for tokens: a leak of one use does not forge the other.
            Some(secret) => {
                Sha256::digest(format!("forma access tokens\n{}", secret.expose())).to_vec()
            }
            None => {
                use rand::RngCore;
                let mut bytes = vec![0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                bytes
            }
        };
        Self {
            encoding: EncodingKey::from_secret(&secret),
            decoding: DecodingKey::from_secret(&secret),
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: Uuid,
    tid: Uuid,
    /// The user's session epoch: a password change or deactivation makes the token worthless.
    epoch: i64,
    iat: i64,
    exp: i64,
    jti: Uuid,
}

/// Who an access token speaks for, after its signature and expiry were checked.
#[derive(Debug, Clone, Copy)]
pub struct AccessClaims {
    pub user_id: Uuid,
    pub epoch: i64,
}

pub fn issue_access(keys: &TokenKeys, user: &User) -> Result<String, jsonwebtoken::errors::Error> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: user.id,
        tid: user.tenant_id,
        epoch: user.session_epoch,
        iat: now,
        exp: now + ACCESS_TTL_SECONDS,
        jti: Uuid::new_v4(),
    };
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding)
}

pub fn verify_access(keys: &TokenKeys, token: &str) -> Option<AccessClaims> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.leeway = 5;
    validation.set_required_spec_claims(&["exp", "sub"]);
    jsonwebtoken::decode::<Claims>(token, &keys.decoding, &validation)
        .ok()
        .map(|data| AccessClaims {
            user_id: data.claims.sub,
            epoch: data.claims.epoch,
        })
}

fn hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Stores a new refresh token in `family` (a new family at sign-in) and returns it.
pub async fn issue_refresh(db: &Db, user: &User, family: Option<Uuid>) -> Result<String, DbError> {
    let token = new_token();
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, session_epoch, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(family.unwrap_or_else(Uuid::now_v7))
        .bind(user.id)
        .bind(hash(&token))
        .bind(user.session_epoch)
        .bind(now)
        .bind(now + Duration::days(REFRESH_TTL_DAYS))
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    Ok(token)
}

#[derive(Debug, sqlx::FromRow)]
struct StoredRefresh {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    session_epoch: i64,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
    revoked_at: Option<DateTime<Utc>>,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Redeemed {
    /// Valid: it is now used; issue the next one in `family`.
    Fresh {
        user_id: Uuid,
        family: Uuid,
        epoch: i64,
    },
    /// Already used: the family is revoked now.
    Reused { user_id: Uuid },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Marks the token used, exactly once even under concurrent presentations.
pub async fn redeem(db: &Db, token: &str) -> Result<Redeemed, DbError> {
    let stored = on_pool!(db, pool => {
        sqlx::query_as::<_, StoredRefresh>(
            "SELECT id, family_id, user_id, session_epoch, expires_at, used_at, revoked_at \
             FROM refresh_tokens WHERE token_hash = $1",
        )
        .bind(hash(token))
        .fetch_optional(pool)
        .await
    })?;
    let Some(stored) = stored else {
        return Ok(Redeemed::Invalid);
    };
    let now = Utc::now();
    if stored.revoked_at.is_some() || stored.expires_at <= now {
        return Ok(Redeemed::Invalid);
    }
    let claimed = if stored.used_at.is_none() {
        on_pool!(db, pool => {
            sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1 AND used_at IS NULL")
                .bind(stored.id)
                .bind(now)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?
    } else {
        0
    };
    if claimed == 1 {
        return Ok(Redeemed::Fresh {
            user_id: stored.user_id,
            family: stored.family_id,
            epoch: stored.session_epoch,
        });
    }
    revoke_family(db, stored.family_id).await?;
    Ok(Redeemed::Reused {
        user_id: stored.user_id,
    })
}

async fn revoke_family(db: &Db, family: Uuid) -> Result<(), DbError> {
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
            .bind(family)
            .bind(now)
            .execute(pool)
            .await
            .map(|_| ())
    })?;
    Ok(())
}
