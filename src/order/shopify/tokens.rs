//! Installed shops (SPEC §6.3): the connection an OAuth install makes, its Admin API access token
//! encrypted at rest, and its end (disconnected by a user, or the app uninstalled in Shopify).
//!
//! - A token is sealed with XChaCha20-Poly1305 under `shopify.token_key` (32 bytes). Every
//!   encryption draws a fresh random 24-byte nonce, stored in front of the ciphertext and its tag;
//!   the shop's domain is the associated data, so a ciphertext moved onto another shop's row does
//!   not open. The token itself is never written anywhere.
//! - Without the key no token is stored or read: installs are refused (503 naming the setting),
//!   and the shop of `shopify.shop_domain` / `shopify.access_token` keeps working as before.
//! - A disconnected shop keeps its row (its late webhooks still find their tenant), never its
//!   token.

use chacha20poly1305::aead::{Aead, Generate, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{Delivery, normalize_domain};
use crate::config::{Secret, ShopifyConfig};
use crate::http::pagination::PageRequest;
use crate::infra::db::{Db, DbError};
use crate::order::orders::ingest::Outcome;
use crate::{on_pool, on_tx};

/// The nonce of XChaCha20-Poly1305: long enough that random nonces never repeat under one key.
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "the access token of {0} does not decrypt with shopify.token_key (was the key changed?)"
    )]
    Undecryptable(String),
    #[error("sealing an access token failed: {0}")]
    Seal(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Seals and opens shops' access tokens with `shopify.token_key`.
pub struct TokenCipher(XChaCha20Poly1305);

impl TokenCipher {
    pub fn new(key: &[u8; crate::config::SHOPIFY_TOKEN_KEY_LEN]) -> Self {
        Self(XChaCha20Poly1305::new(&(*key).into()))
    }

    /// The cipher of `shopify.token_key`; `None` when it is unset, an error naming the setting
    /// when it is not a key.
    pub fn from_config(shopify: &ShopifyConfig) -> Result<Option<Self>, String> {
        Ok(shopify.token_key_bytes()?.map(|key| Self::new(&key)))
    }

    /// `token` of shop `domain`, sealed: the nonce, then the ciphertext and its tag.
    pub fn seal(&self, domain: &str, token: &Secret) -> Result<Vec<u8>, TokenError> {
        let nonce = XNonce::try_generate().map_err(|e| TokenError::Seal(e.to_string()))?;
        let payload = Payload {
            msg: token.expose().as_bytes(),
            aad: domain.as_bytes(),
        };
        let sealed = self
            .0
            .encrypt(&nonce, payload)
            .map_err(|_| TokenError::Seal("the cipher refused the token".to_owned()))?;
        let mut stored = Vec::with_capacity(NONCE_LEN + sealed.len());
        stored.extend_from_slice(nonce.as_slice());
        stored.extend_from_slice(&sealed);
        Ok(stored)
    }

    /// The token of shop `domain` that [`TokenCipher::seal`] stored.
    pub fn open(&self, domain: &str, stored: &[u8]) -> Result<Secret, TokenError> {
        let undecryptable = || TokenError::Undecryptable(domain.to_owned());
        if stored.len() <= NONCE_LEN {
            return Err(undecryptable());
        }
        let (nonce, sealed) = stored.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| undecryptable())?;
        let payload = Payload {
            msg: sealed,
            aad: domain.as_bytes(),
        };
        let token = self
            .0
            .decrypt(&nonce, payload)
            .map_err(|_| undecryptable())?;
        String::from_utf8(token)
            .map(Secret::new)
            .map_err(|_| undecryptable())
    }
}

/// A shop forma can call, and the token it calls with.
#[derive(Debug, Clone)]
pub struct ShopCredentials {
    pub domain: String,
    pub token: Secret,
}

/// The shop of `shopify.shop_domain` with `shopify.access_token`, when both are set.
pub fn configured(shopify: &ShopifyConfig) -> Option<ShopCredentials> {
    let domain = shopify.shop_domain.as_deref().map(normalize_domain)?;
    let token = shopify.access_token.clone()?;
    (!domain.is_empty() && !token.expose().is_empty()).then_some(ShopCredentials { domain, token })
}

/// The shop and token that act for `tenant_id` (import its orders, fulfill them): its shop
/// installed through OAuth (`shop` when given, else the one installed last), else the configured
/// shop (`shopify.shop_domain`, `shopify.access_token`) when that shop is the tenant's own. Another
/// tenant's configured shop is never used: its token would act on a stranger's store. `None` when
/// the tenant has no shop.
pub async fn credentials_of(
    db: &Db,
    shopify: &ShopifyConfig,
    cipher: Option<&TokenCipher>,
    tenant_id: Uuid,
    shop: Option<&str>,
) -> Result<Option<ShopCredentials>, TokenError> {
    if let Some(cipher) = cipher
        && let Some(installed) = installed(db, cipher, tenant_id, shop).await?
    {
        return Ok(Some(installed));
    }
    let Some(configured) = configured(shopify) else {
        return Ok(None);
    };
    if shop.is_some_and(|s| normalize_domain(s) != configured.domain) {
        return Ok(None);
    }
    let owner = super::tenant_of_shop(db, shopify, &configured.domain).await?;
    Ok((owner == Some(tenant_id)).then_some(configured))
}

/// The tenant's shop installed through OAuth and still connected: `shop` when given, else the one
/// installed last. `None` when it has none.
pub async fn installed(
    db: &Db,
    cipher: &TokenCipher,
    tenant_id: Uuid,
    shop: Option<&str>,
) -> Result<Option<ShopCredentials>, TokenError> {
    let shop = shop.map(normalize_domain);
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, (String, Vec<u8>)>(
            "SELECT domain, access_token_ciphertext FROM shops \
             WHERE tenant_id = $1 AND access_token_ciphertext IS NOT NULL \
               AND uninstalled_at IS NULL AND ($2 IS NULL OR domain = $2) \
             ORDER BY installed_at DESC LIMIT 1",
        )
        .bind(tenant_id)
        .bind(shop.as_deref())
        .fetch_optional(pool)
        .await
    })
    .map_err(DbError::from)?;
    let Some((domain, sealed)) = row else {
        return Ok(None);
    };
    let token = cipher.open(&domain, &sealed)?;
    Ok(Some(ShopCredentials { domain, token }))
}

/// What an install stores.
pub struct Installation<'a> {
    pub tenant_id: Uuid,
    pub domain: &'a str,
    /// The token, sealed by [`TokenCipher::seal`] for `domain`.
    pub sealed_token: &'a [u8],
    pub scopes: &'a str,
}

/// Connects the shop to the tenant with its sealed token: a new shop, the tenant's own shop again
/// (a reinstall), or a shop another tenant disconnected. `None`, and nothing changed, when the
/// shop is connected to another tenant.
pub async fn connect(db: &Db, installation: &Installation<'_>) -> Result<Option<Uuid>, DbError> {
    let now = Utc::now();
    let id = on_pool!(db, pool => {
        sqlx::query_scalar::<_, Uuid>(
            "INSERT INTO shops (id, tenant_id, domain, access_token_ciphertext, scopes, installed_at, \
                                uninstalled_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, NULL, $6, $6) \
             ON CONFLICT (domain) DO UPDATE SET \
                 tenant_id = excluded.tenant_id, \
                 access_token_ciphertext = excluded.access_token_ciphertext, \
                 scopes = excluded.scopes, installed_at = excluded.installed_at, \
                 uninstalled_at = NULL, updated_at = excluded.updated_at \
             WHERE shops.tenant_id = excluded.tenant_id OR shops.uninstalled_at IS NOT NULL \
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(installation.tenant_id)
        .bind(normalize_domain(installation.domain))
        .bind(installation.sealed_token)
        .bind(installation.scopes)
        .bind(now)
        .fetch_optional(pool)
        .await
    })?;
    Ok(id)
}

/// A shop of the tenant, as the API shows it (never its token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Shop {
    pub id: Uuid,
    #[schema(example = "example.myshopify.com")]
    pub domain: String,
    /// When the app was last installed through OAuth; absent for the shop of `shopify.shop_domain`
    /// until it is.
    pub installed_at: Option<DateTime<Utc>>,
    pub uninstalled_at: Option<DateTime<Utc>>,
    /// The access scopes Shopify granted at the install.
    pub scopes: Vec<String>,
    /// Whether forma holds an access token of the shop (installed and not disconnected since).
    pub connected: bool,
}

type ShopRow = (
    Uuid,
    String,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
    Option<String>,
    bool,
);

fn shop_of(row: ShopRow) -> Shop {
    let (id, domain, installed_at, uninstalled_at, scopes, connected) = row;
    let scopes = scopes
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    Shop {
        id,
        domain,
        installed_at,
        uninstalled_at,
        scopes,
        connected,
    }
}

/// One page of the tenant's shops, by domain, and how many it has.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    page: PageRequest,
) -> Result<(Vec<Shop>, i64), DbError> {
    let (limit, offset) = page.limit_offset();
    // One snapshot, so the page and the count agree while shops are installed.
    let mut tx = db.snapshot().await?;
    let rows = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, ShopRow>(
            "SELECT id, domain, installed_at, uninstalled_at, scopes, \
                    (access_token_ciphertext IS NOT NULL) AS connected \
             FROM shops WHERE tenant_id = $1 ORDER BY domain LIMIT $2 OFFSET $3",
        )
        .bind(tenant_id)
        .bind(limit)
        .bind(offset)
        .fetch_all(&mut *c)
        .await
    })?;
    let total = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM shops WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((rows.into_iter().map(shop_of).collect(), total))
}

/// Disconnects the tenant's shop `id`: its token deleted, `uninstalled_at` set (kept when it was
/// set before). The shop's domain, or `None` when the tenant has no such shop.
pub async fn disconnect(db: &Db, tenant_id: Uuid, id: Uuid) -> Result<Option<String>, DbError> {
    let domain = on_pool!(db, pool => {
        sqlx::query_scalar::<_, String>(
            "UPDATE shops SET access_token_ciphertext = NULL, \
                 uninstalled_at = COALESCE(uninstalled_at, $3), updated_at = $3 \
             WHERE id = $1 AND tenant_id = $2 RETURNING domain",
        )
        .bind(id)
        .bind(tenant_id)
        .bind(Utc::now())
        .fetch_optional(pool)
        .await
    })?;
    Ok(domain)
}

/// `app/uninstalled`: Shopify revoked the token already; forma forgets it and marks the shop.
/// Once per delivery, and only for an uninstall that happened (`triggered_at`, else now) after
/// the shop's latest install: a late or repeated delivery leaves a reinstalled shop connected.
pub async fn uninstalled(
    db: &Db,
    delivery: &Delivery,
    domain: &str,
    triggered_at: Option<DateTime<Utc>>,
) -> Result<Outcome, DbError> {
    let mut tx = db.begin().await?;
    if !super::first_delivery(&mut tx, delivery).await? {
        tx.rollback().await?;
        return Ok(Outcome::Duplicate);
    }
    let now = Utc::now();
    let forgotten = on_tx!(&mut tx, conn => {
        sqlx::query(
            "UPDATE shops SET access_token_ciphertext = NULL, uninstalled_at = $2, updated_at = $2 \
             WHERE domain = $1 AND (installed_at IS NULL OR installed_at <= $3)",
        )
        .bind(normalize_domain(domain))
        .bind(now)
        .bind(triggered_at.unwrap_or(now))
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    tx.commit().await?;
    if forgotten == 0 {
        tracing::info!(
            shop = domain,
            "app/uninstalled from before the shop's latest install: ignored"
        );
        return Ok(Outcome::Unchanged);
    }
    tracing::warn!(shop = domain, "the Shopify app was uninstalled");
    Ok(Outcome::Updated)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const SHOP: &str = "example.myshopify.com";

    #[test]
    fn a_sealed_token_opens_with_its_key_and_shop_only() {
        let cipher = TokenCipher::new(&KEY);
        let token = Secret::new("shpat_0123456789");
        let sealed = cipher.seal(SHOP, &token).unwrap();
        assert!(
            !sealed
                .windows(token.expose().len())
                .any(|w| w == token.expose().as_bytes()),
            "the token shows through"
        );
        assert_eq!(cipher.open(SHOP, &sealed).unwrap(), token);
        assert!(cipher.open("other.myshopify.com", &sealed).is_err());
        assert!(TokenCipher::new(&[8; 32]).open(SHOP, &sealed).is_err());
        let mut tampered = sealed.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(cipher.open(SHOP, &tampered).is_err());
        assert!(cipher.open(SHOP, &sealed[..NONCE_LEN]).is_err());
        assert!(cipher.open(SHOP, b"").is_err());
    }

    #[test]
    fn every_sealing_draws_a_new_nonce() {
        let cipher = TokenCipher::new(&KEY);
        let token = Secret::new("shpat_same");
        let first = cipher.seal(SHOP, &token).unwrap();
        let second = cipher.seal(SHOP, &token).unwrap();
        assert_ne!(first[..NONCE_LEN], second[..NONCE_LEN]);
        assert_ne!(first, second);
    }
}
