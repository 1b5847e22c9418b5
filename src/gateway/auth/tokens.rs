//! Bearer tokens for non-browser clients (SPEC §5.1): a JWT access token (HS256, 15 minutes) and
//! an opaque refresh token, rotated on every use. Presenting an already used refresh token means
//! it was stolen or replayed: the whole family is revoked.
//!
//! Invariants:
//! - A refresh token is redeemed at most once, and a revoked family never issues again. Every
//!   redemption and every revocation first writes the family's row (`refresh_token_families`) in
//!   its transaction, so they serialise on it: PostgreSQL holds the row lock until commit, SQLite
//!   has one writer at a time. A redemption that wins the race commits its successor token before
//!   a concurrent replay gets the row, and that replay then revokes the successor too.
//! - An access token names its family (`fam`); signing out with it revokes the family, and a
//!   revoked family's access tokens stop working at once (within `session.cache_ms` elsewhere).

use chrono::{DateTime, Duration, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::config::Config;
use crate::identity::users::User;
use crate::infra::db::{Db, DbError, Tx};
use crate::{on_pool, on_tx};

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
    /// The refresh token family this access token was issued with (absent in tokens issued
    /// before families were tracked; those simply expire).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    fam: Option<Uuid>,
}

/// Who an access token speaks for, after its signature and expiry were checked.
#[derive(Debug, Clone, Copy)]
pub struct AccessClaims {
    pub user_id: Uuid,
    pub epoch: i64,
    pub family: Option<Uuid>,
    /// When the token stops being accepted.
    pub expires_at: DateTime<Utc>,
}

pub fn issue_access(
    keys: &TokenKeys,
    user: &User,
    family: Uuid,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        sub: user.id,
        tid: user.tenant_id,
        epoch: user.session_epoch,
        iat: now,
        exp: now + ACCESS_TTL_SECONDS,
        jti: Uuid::new_v4(),
        fam: Some(family),
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
            family: data.claims.fam,
            expires_at: DateTime::from_timestamp(data.claims.exp, 0)
                .unwrap_or(DateTime::UNIX_EPOCH),
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

/// Inserts a refresh token of `family` for `user_id` at `epoch` and returns it.
async fn insert_token(
    tx: &mut Tx,
    family: Uuid,
    user_id: Uuid,
    epoch: i64,
) -> Result<String, DbError> {
    let token = new_token();
    let now = Utc::now();
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, session_epoch, created_at, \
             expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(Uuid::now_v7())
        .bind(family)
        .bind(user_id)
        .bind(hash(&token))
        .bind(epoch)
        .bind(now)
        .bind(now + Duration::days(REFRESH_TTL_DAYS))
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(token)
}

/// A sign-in: a new family and its first refresh token.
pub async fn start_family(db: &Db, user: &User) -> Result<(Uuid, String), DbError> {
    let family = Uuid::now_v7();
    let now = Utc::now();
    let mut tx = db.begin().await?;
    on_tx!(&mut tx, conn => {
        sqlx::query(
            "INSERT INTO refresh_token_families (id, user_id, created_at, touched_at) \
             VALUES ($1, $2, $3, $3)",
        )
        .bind(family)
        .bind(user.id)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    let token = insert_token(&mut tx, family, user.id, user.session_epoch).await?;
    tx.commit().await?;
    Ok((family, token))
}

#[derive(Debug, sqlx::FromRow)]
struct StoredRefresh {
    id: Uuid,
    user_id: Uuid,
    session_epoch: i64,
    expires_at: DateTime<Utc>,
    used_at: Option<DateTime<Utc>>,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum Redeemed {
    /// Valid: it is now used, and `next` is its successor in `family`, issued at `epoch` (the
    /// caller still checks that the user is active and that `epoch` is the user's current one).
    Fresh {
        user_id: Uuid,
        family: Uuid,
        epoch: i64,
        next: String,
    },
    /// Already used: the family is revoked now.
    Reused { user_id: Uuid, family: Uuid },
    /// Unknown, expired or revoked.
    Invalid,
}

/// Takes the family's row for the rest of `tx` (see the module's invariants); `None` when the
/// family does not exist, `Some(revoked)` otherwise.
async fn lock_family(tx: &mut Tx, family: Uuid) -> Result<Option<bool>, DbError> {
    let revoked_at = on_tx!(tx, conn => {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "UPDATE refresh_token_families SET touched_at = $2 WHERE id = $1 RETURNING revoked_at",
        )
        .bind(family)
        .bind(Utc::now())
        .fetch_optional(&mut *conn)
        .await
    })?;
    Ok(revoked_at.map(|at| at.is_some()))
}

/// Redeems `token` exactly once, even when it is presented many times at once.
pub async fn redeem(db: &Db, token: &str) -> Result<Redeemed, DbError> {
    let token_hash = hash(token);
    // Read outside the transaction: the transaction's first statement must be the family write,
    // or SQLite could not upgrade a read snapshot to a write after another writer committed.
    let family = on_pool!(db, pool => {
        sqlx::query_scalar::<_, Uuid>("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
            .bind(&token_hash)
            .fetch_optional(pool)
            .await
    })?;
    let Some(family) = family else {
        return Ok(Redeemed::Invalid);
    };
    let mut tx = db.begin().await?;
    if lock_family(&mut tx, family).await? != Some(false) {
        tx.rollback().await?;
        return Ok(Redeemed::Invalid);
    }
    // Read again under the family's lock: a concurrent redemption has committed by now.
    let stored = on_tx!(&mut tx, conn => {
        sqlx::query_as::<_, StoredRefresh>(
            "SELECT id, user_id, session_epoch, expires_at, used_at FROM refresh_tokens \
             WHERE token_hash = $1",
        )
        .bind(&token_hash)
        .fetch_optional(&mut *conn)
        .await
    })?;
    let Some(stored) = stored.filter(|s| s.expires_at > Utc::now()) else {
        tx.rollback().await?;
        return Ok(Redeemed::Invalid);
    };
    if stored.used_at.is_some() {
        revoke_family_in(&mut tx, family).await?;
        tx.commit().await?;
        return Ok(Redeemed::Reused {
            user_id: stored.user_id,
            family,
        });
    }
    on_tx!(&mut tx, conn => {
        sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1")
            .bind(stored.id)
            .bind(Utc::now())
            .execute(&mut *conn)
            .await
            .map(|_| ())
    })?;
    let next = insert_token(&mut tx, family, stored.user_id, stored.session_epoch).await?;
    tx.commit().await?;
    Ok(Redeemed::Fresh {
        user_id: stored.user_id,
        family,
        epoch: stored.session_epoch,
        next,
    })
}

/// Revokes the family and every token in it, in `tx`, after taking the family's row.
async fn revoke_family_in(tx: &mut Tx, family: Uuid) -> Result<(), DbError> {
    let now = Utc::now();
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE refresh_token_families SET revoked_at = COALESCE(revoked_at, $2), touched_at = $2 \
             WHERE id = $1",
        )
        .bind(family)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    on_tx!(tx, conn => {
        sqlx::query("UPDATE refresh_tokens SET revoked_at = $2 WHERE family_id = $1 AND revoked_at IS NULL")
            .bind(family)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|_| ())
    })?;
    Ok(())
}

/// Signing out with a token: its family issues nothing more and its access tokens stop working.
pub async fn revoke_family(db: &Db, family: Uuid) -> Result<(), DbError> {
    let mut tx = db.begin().await?;
    revoke_family_in(&mut tx, family).await?;
    tx.commit().await
}

/// Whether access tokens of `family` still count (it exists and is not revoked).
pub async fn family_is_active(db: &Db, family: Uuid) -> Result<bool, DbError> {
    let revoked = on_pool!(db, pool => {
        sqlx::query_scalar::<_, Option<DateTime<Utc>>>(
            "SELECT revoked_at FROM refresh_token_families WHERE id = $1",
        )
        .bind(family)
        .fetch_optional(pool)
        .await
    })?;
    Ok(matches!(revoked, Some(None)))
}
