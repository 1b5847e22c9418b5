//! Shopify (SPEC §6.3): the webhooks that bring orders in ([`webhook`]), the order documents they
//! carry ([`payload`]), which shop belongs to which tenant, and the deliveries already seen; the
//! app's install ([`oauth`]) with the shops' tokens sealed at rest ([`tokens`]), and the import of
//! past orders ([`backfill`]).

pub mod admin;
pub mod backfill;
pub mod oauth;
pub mod payload;
pub mod tokens;
pub mod webhook;

use base64::Engine;
use chrono::Utc;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::config::ShopifyConfig;
use crate::identity::tenants;
use crate::infra::db::{Db, DbError, Tx};
use crate::{on_pool, on_tx};

/// The topics forma acts on.
pub mod topics {
    pub const ORDERS_CREATE: &str = "orders/create";
    pub const ORDERS_UPDATED: &str = "orders/updated";
    pub const ORDERS_CANCELLED: &str = "orders/cancelled";
    pub const APP_UNINSTALLED: &str = "app/uninstalled";
}

/// Whether `signature` (the `X-Shopify-Hmac-Sha256` header: base64 of the HMAC-SHA256 of the raw
/// body with the app's secret) is right for `body`. Compared in constant time by the MAC itself.
pub fn signature_is_valid(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Ok(presented) = base64::engine::general_purpose::STANDARD.decode(signature.trim()) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&presented).is_ok()
}

/// The base64 HMAC-SHA256 Shopify would send for `body`: for simulators and tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    match <Hmac<Sha256> as KeyInit>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// The secrets a webhook of `shop` may be signed with: the app's `api_secret` (Shopify signs the
/// webhooks of an app installed through OAuth with its client secret), and `shopify.webhook_secret`
/// only for the shop it belongs to, `shop_domain` (a shop's own webhooks, set up by hand). That
/// key is shown to the shop's staff: taken for any shop, it would let them write orders,
/// cancellations and uninstalls into every other tenant, as the shop is named by an unsigned
/// header. Both may be set at once: a deployment moving its shop to the app still serves webhooks
/// of both kinds.
pub fn webhook_secrets<'a>(shopify: &'a ShopifyConfig, shop: &str) -> Vec<&'a [u8]> {
    let own_shop = shopify
        .shop_domain
        .as_deref()
        .map(normalize_domain)
        .is_some_and(|configured| !configured.is_empty() && configured == normalize_domain(shop));
    let webhook_secret = shopify.webhook_secret.as_ref().filter(|_| own_shop);
    let mut secrets: Vec<&[u8]> = [webhook_secret, shopify.api_secret.as_ref()]
        .into_iter()
        .flatten()
        .map(|s| s.expose().as_bytes())
        .filter(|s| !s.is_empty())
        .collect();
    secrets.dedup();
    secrets
}

/// `example.myshopify.com` as Shopify writes it: lower case, no scheme, no slash.
pub fn normalize_domain(domain: &str) -> String {
    domain
        .trim()
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_ascii_lowercase()
}

/// The tenant of shop `domain`: a connected shop's, or tenant `default` for the one shop
/// `shopify.shop_domain` names (recorded as connected on first use). `None` for any other shop.
pub async fn tenant_of_shop(
    db: &Db,
    shopify: &ShopifyConfig,
    domain: &str,
) -> Result<Option<Uuid>, DbError> {
    let domain = normalize_domain(domain);
    let known = on_pool!(db, pool => {
        sqlx::query_as::<_, (Uuid, Option<chrono::DateTime<Utc>>)>(
            "SELECT tenant_id, uninstalled_at FROM shops WHERE domain = $1",
        )
        .bind(&domain)
        .fetch_optional(pool)
        .await
    })?;
    if let Some((tenant_id, _)) = known {
        return Ok(Some(tenant_id));
    }
    let configured = shopify.shop_domain.as_deref().map(normalize_domain);
    if configured.as_deref() != Some(domain.as_str()) || domain.is_empty() {
        return Ok(None);
    }
    let Some(tenant) = tenants::find_by_slug(db, tenants::DEFAULT_SLUG).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    on_pool!(db, pool => {
        sqlx::query(
            "INSERT INTO shops (id, tenant_id, domain, created_at, updated_at) VALUES ($1, $2, $3, $4, $4) \
             ON CONFLICT (domain) DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(tenant.id)
        .bind(&domain)
        .bind(now)
        .execute(pool)
        .await
        .map(|_| ())
    })?;
    Ok(Some(tenant.id))
}

/// How long a shop's tenant is remembered: a shop moves between tenants only through an operator,
/// and every webhook would otherwise read it again.
const SHOP_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// [`tenant_of_shop`], remembered for a minute. Cheap to clone; clones share what they remember.
#[derive(Clone, Default)]
pub struct Shops(
    std::sync::Arc<
        std::sync::RwLock<std::collections::HashMap<String, (std::time::Instant, Uuid)>>,
    >,
);

impl Shops {
    pub async fn tenant_of(
        &self,
        db: &Db,
        shopify: &ShopifyConfig,
        domain: &str,
    ) -> Result<Option<Uuid>, DbError> {
        let domain = normalize_domain(domain);
        let remembered = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&domain)
            .filter(|(at, _)| at.elapsed() < SHOP_CACHE_TTL)
            .map(|(_, tenant)| *tenant);
        if remembered.is_some() {
            return Ok(remembered);
        }
        let tenant = tenant_of_shop(db, shopify, &domain).await?;
        if let Some(tenant) = tenant {
            let mut shops = self
                .0
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Unknown shops are not remembered, so the map grows with real shops only.
            if shops.len() > 10_000 {
                shops.clear();
            }
            shops.insert(domain, (std::time::Instant::now(), tenant));
        }
        Ok(tenant)
    }
}

/// One webhook delivery, as its headers identify it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub tenant_id: Uuid,
    pub topic: String,
    /// `X-Shopify-Webhook-Id`: the same for every retry of one delivery.
    pub webhook_id: Option<String>,
    /// `X-Shopify-Event-Id`: the same for every delivery of one event to one topic.
    pub event_id: Option<String>,
}

/// Records the delivery in `tx`; `false` if it (or its event, for its topic) was seen before. The
/// record commits with what the delivery did, so a delivery either happened once or not at all.
pub async fn first_delivery(tx: &mut Tx, delivery: &Delivery) -> Result<bool, DbError> {
    let Some(webhook_id) = delivery
        .webhook_id
        .as_deref()
        .or(delivery.event_id.as_deref())
    else {
        return Ok(true);
    };
    let inserted = on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO shopify_webhooks (id, tenant_id, webhook_id, topic, event_id, received_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
        )
        .bind(Uuid::now_v7())
        .bind(delivery.tenant_id)
        .bind(webhook_id)
        .bind(&delivery.topic)
        .bind(delivery.event_id.as_deref())
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(inserted == 1)
}

/// How long a delivery's record is kept: Shopify retries a delivery for 48 hours.
pub const DELIVERY_RETENTION: chrono::TimeDelta = chrono::TimeDelta::days(7);

/// Deletes the records of deliveries past [`DELIVERY_RETENTION`]; returns how many.
pub async fn forget_old_deliveries(db: &Db) -> Result<u64, DbError> {
    let cutoff = Utc::now() - DELIVERY_RETENTION;
    let deleted = on_pool!(db, pool => {
        sqlx::query("DELETE FROM shopify_webhooks WHERE received_at < $1")
            .bind(cutoff)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_its_own_body_and_secret() {
        let body = br#"{"id": 820982911946154508}"#;
        let signature = sign(b"hush", body);
        assert!(signature_is_valid(b"hush", body, &signature));
        assert!(!signature_is_valid(b"other", body, &signature));
        assert!(!signature_is_valid(b"hush", b"{}", &signature));
        assert!(!signature_is_valid(b"hush", body, "not base64 !"));
        assert!(!signature_is_valid(b"hush", body, ""));
    }

    crate::each_database! {
        async fn delivery_records_are_kept_a_week(backend: Backend) {
            let app = crate::testing::TestApp::spawn(crate::config::Role::Order, backend).await;
            let db = &app.ctx.db;
            let tenant = Uuid::new_v4();
            for (id, age_days) in [("old", 8), ("recent", 6)] {
                on_pool!(db, pool => {
                    sqlx::query("INSERT INTO shopify_webhooks (id, tenant_id, webhook_id, topic, received_at) VALUES ($1, $2, $3, 'orders/create', $4)")
                        .bind(Uuid::new_v4())
                        .bind(tenant)
                        .bind(id)
                        .bind(Utc::now() - chrono::TimeDelta::days(age_days))
                        .execute(pool)
                        .await
                        .map(drop)
                })
                .unwrap();
            }
            assert_eq!(forget_old_deliveries(db).await.unwrap(), 1);
            let left = on_pool!(db, pool => {
                sqlx::query_scalar::<_, String>("SELECT webhook_id FROM shopify_webhooks").fetch_all(pool).await
            })
            .unwrap();
            assert_eq!(left, ["recent"]);
        }
    }

    #[test]
    fn shop_domains_compare_as_shopify_writes_them() {
        assert_eq!(
            normalize_domain(" https://Example.MyShopify.com/ "),
            "example.myshopify.com"
        );
    }
}
