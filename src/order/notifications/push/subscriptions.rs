//! Browsers' push subscriptions: the `PushSubscription` JSON checked, and the
//! `push_subscriptions` table. A subscription belongs to the user who made it, in their tenant.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use url::Url;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::infra::db::{Db, DbError};
use crate::infra::public_net;
use crate::{on_pool, on_tx};

/// Longest endpoint accepted: real ones are a few hundred characters.
const MAX_ENDPOINT_LEN: usize = 2048;
/// `keys.p256dh`: an uncompressed P-256 point (RFC 8291 §3.1).
const P256DH_LEN: usize = 65;
/// `keys.auth`: the 16-byte authentication secret (RFC 8291 §3.2).
const AUTH_LEN: usize = 16;

/// The browser's `PushSubscription.toJSON()`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionInput {
    /// The push service URL the browser was given.
    pub endpoint: Option<String>,
    /// Ignored: push services answer 404/410 once a subscription expired.
    #[allow(dead_code)]
    pub expiration_time: Option<serde_json::Value>,
    pub keys: Option<KeysInput>,
}

#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct KeysInput {
    /// The browser's P-256 public key, base64url.
    pub p256dh: Option<String>,
    /// The browser's authentication secret, base64url.
    pub auth: Option<String>,
}

/// A subscription, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSubscription {
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

impl SubscriptionInput {
    /// Checks every field and lists every problem. `http:` endpoints are accepted on loopback
    /// only, and only outside production (a local push-service stand-in); the rest must be
    /// `https:`, as every real push service is. In production an endpoint must also be on the
    /// public internet: not `localhost`, nor an inside address ([`public_net`]).
    pub fn validate(&self, production: bool) -> Result<NewSubscription, Vec<String>> {
        let mut problems = Vec::new();
        let endpoint = self.endpoint.as_deref().map(str::trim).unwrap_or_default();
        if let Err(problem) = check_endpoint(endpoint, production) {
            problems.push(problem);
        }
        let keys = self.keys.as_ref();
        let p256dh = keys.and_then(|k| k.p256dh.as_deref()).map(str::trim);
        let auth = keys.and_then(|k| k.auth.as_deref()).map(str::trim);
        let p256dh_ok = p256dh
            .and_then(decode)
            .is_some_and(|b| b.len() == P256DH_LEN && p256::PublicKey::from_sec1_bytes(&b).is_ok());
        if !p256dh_ok {
            problems.push(
                "keys.p256dh must be an uncompressed P-256 public key (65 bytes, base64url)".into(),
            );
        }
        let auth_ok = auth.and_then(decode).is_some_and(|b| b.len() == AUTH_LEN);
        if !auth_ok {
            problems.push("keys.auth must be 16 bytes in base64url".into());
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NewSubscription {
            endpoint: endpoint.to_owned(),
            p256dh: p256dh.unwrap_or_default().to_owned(),
            auth: auth.unwrap_or_default().to_owned(),
        })
    }
}

/// base64url, padded or not (browsers send it unpadded).
pub fn decode(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn check_endpoint(endpoint: &str, production: bool) -> Result<(), String> {
    if endpoint.is_empty() {
        return Err("endpoint must be the push service URL of the subscription".into());
    }
    if endpoint.len() > MAX_ENDPOINT_LEN {
        return Err(format!(
            "endpoint must be at most {MAX_ENDPOINT_LEN} characters"
        ));
    }
    let url = Url::parse(endpoint).map_err(|_| "endpoint must be a URL".to_owned())?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => return Err("endpoint must be a URL".into()),
    };
    match url.scheme() {
        "https" if production && !public_net::is_public_host(&url) => {
            Err("endpoint must be a push service on the public internet".into())
        }
        "https" => Ok(()),
        "http" if loopback && !production => Ok(()),
        _ => Err("endpoint must be an https URL".into()),
    }
}

/// A subscription as its owner sees it.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub id: Uuid,
    pub endpoint: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the sender needs to reach and encrypt for one subscription.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Target {
    pub id: Uuid,
    pub endpoint: String,
    pub p256dh: String,
    pub auth: String,
}

/// The browsers one user may have subscribed at once; a new one beyond replaces the one
/// subscribed (or renewed) longest ago. Each costs a stored message for every piece of the
/// tenant's news, so an unbounded number would let one user's account slow everyone's.
pub const MAX_PER_USER: i64 = 10;

/// Stores `new` for the user: `true` when it is new. Idempotent per endpoint: the same endpoint
/// again updates its keys. An endpoint that another user (or tenant) had registered becomes this
/// user's: the browser is now theirs, and the messages waiting for the former owner are dropped
/// with the former row, so none of another tenant's news reaches it.
pub async fn upsert(
    db: &Db,
    tenant_id: Uuid,
    user_id: Uuid,
    new: &NewSubscription,
) -> Result<(Subscription, bool), DbError> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let created = on_tx!(&mut tx, conn => {
        sqlx::query(
            "DELETE FROM push_subscriptions WHERE endpoint = $1 \
             AND NOT (tenant_id = $2 AND user_id = $3)",
        )
        .bind(&new.endpoint)
        .bind(tenant_id)
        .bind(user_id)
        .execute(&mut *conn)
        .await?;
        let inserted = sqlx::query(
            "INSERT INTO push_subscriptions \
             (id, tenant_id, user_id, endpoint, p256dh, auth, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (endpoint) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(user_id)
        .bind(&new.endpoint)
        .bind(&new.p256dh)
        .bind(&new.auth)
        .bind(now)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if inserted == 0 {
            sqlx::query(
                "UPDATE push_subscriptions SET p256dh = $2, auth = $3, updated_at = $4 \
                 WHERE endpoint = $1",
            )
            .bind(&new.endpoint)
            .bind(&new.p256dh)
            .bind(&new.auth)
            .bind(now)
            .execute(&mut *conn)
            .await?;
        }
        // The user's oldest browsers beyond the bound go: every one of them costs a message
        // per piece of news.
        sqlx::query(
            "DELETE FROM push_subscriptions WHERE tenant_id = $1 AND user_id = $2 AND id NOT IN ( \
               SELECT id FROM push_subscriptions WHERE tenant_id = $1 AND user_id = $2 \
               ORDER BY updated_at DESC, id DESC LIMIT $3)",
        )
        .bind(tenant_id)
        .bind(user_id)
        .bind(MAX_PER_USER)
        .execute(&mut *conn)
        .await?;
        Ok::<_, sqlx::Error>(inserted > 0)
    })?;
    let subscription = on_tx!(&mut tx, conn => {
        sqlx::query_as::<_, Subscription>(
            "SELECT id, endpoint, created_at, updated_at FROM push_subscriptions WHERE endpoint = $1",
        )
        .bind(&new.endpoint)
        .fetch_one(&mut *conn)
        .await
    })?;
    tx.commit().await?;
    Ok((subscription, created))
}

/// Removes every subscription of the user (whose sessions ended: their browsers must hear no
/// more of the tenant's news), with the messages waiting for them; how many there were.
pub async fn remove_all_of(db: &Db, tenant_id: Uuid, user_id: Uuid) -> Result<u64, DbError> {
    Ok(on_pool!(db, pool => {
        sqlx::query("DELETE FROM push_subscriptions WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant_id)
            .bind(user_id)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?)
}

/// Removes the user's subscription of `endpoint`: `false` when the user has none there.
pub async fn remove(
    db: &Db,
    tenant_id: Uuid,
    user_id: Uuid,
    endpoint: &str,
) -> Result<bool, DbError> {
    let removed = on_pool!(db, pool => {
        sqlx::query(
            "DELETE FROM push_subscriptions WHERE endpoint = $1 AND tenant_id = $2 AND user_id = $3",
        )
        .bind(endpoint)
        .bind(tenant_id)
        .bind(user_id)
        .execute(pool)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(removed > 0)
}

/// The push service says the subscription is gone (404/410): it is removed with its messages.
pub async fn forget(db: &Db, id: Uuid) -> Result<(), DbError> {
    on_pool!(db, pool => {
        sqlx::query("DELETE FROM push_subscriptions WHERE id = $1")
            .bind(id)
            .execute(pool)
            .await
            .map(drop)
    })?;
    Ok(())
}

/// The ids of the tenant's subscriptions: who a tenant's news goes to.
pub async fn of_tenant(db: &Db, tenant_id: Uuid) -> Result<Vec<Uuid>, DbError> {
    let ids = on_pool!(db, pool => {
        sqlx::query_scalar::<_, Uuid>(
            "SELECT id FROM push_subscriptions WHERE tenant_id = $1 ORDER BY id",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })?;
    Ok(ids)
}

/// One subscription, for sending; `None` once it was removed.
pub async fn target(db: &Db, id: Uuid) -> Result<Option<Target>, DbError> {
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Target>(
            "SELECT id, endpoint, p256dh, auth FROM push_subscriptions WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await
    })?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::check_endpoint;

    #[test]
    fn in_production_an_endpoint_is_a_push_service_on_the_public_internet() {
        let public = "https://fcm.googleapis.com/fcm/send/abc";
        assert_eq!(check_endpoint(public, true), Ok(()));
        for inside in [
            "https://localhost:8443/push",
            "https://127.0.0.1/push",
            "https://10.1.2.3/push",
            "https://169.254.169.254/latest/meta-data",
            "https://[fd00::1]/push",
        ] {
            assert_eq!(
                check_endpoint(inside, true),
                Err("endpoint must be a push service on the public internet".to_owned()),
                "{inside}"
            );
            // Outside production a local push service (the tests' own) is taken.
            assert_eq!(check_endpoint(inside, false), Ok(()), "{inside}");
        }
        assert!(check_endpoint("http://127.0.0.1:9000/push", false).is_ok());
        assert!(check_endpoint("http://127.0.0.1:9000/push", true).is_err());
    }
}
