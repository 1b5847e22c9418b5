//! Creating the Shopify fulfillments of shipped orders: a background sender per process.
//!
//! Invariants:
//! - An order is due while it is SHIPPED and `fulfillment_after` is set (and past). The state
//!   lives in the order's row, so a restart, a crash or a Shopify outage loses nothing.
//! - A failed call is tried again after 1 s, 2 s, 4 s … (jittered, at most 10 minutes), for ever,
//!   each failure logged (`fulfillment.failed`) with Shopify's answer, the last one on the row.
//!   A call Shopify refused (or one that cannot be made: no connected shop, no readable token)
//!   would fail the same way again: it waits [`REFUSED_WAIT`] in the retry queue, for an operator
//!   to make it now once the cause is mended.
//! - The Admin API call is idempotent on Shopify's side ([`ShopifyAdmin::create_fulfillment`]
//!   finds a fulfillment already made with the tracking), so an attempt whose answer was lost, or
//!   whose process was killed before the commit, never fulfills twice.
//! - Replicas share the work by lease (`fulfillment_lease_until`), as the print and parcel
//!   senders do; an attempt counts from its claim.
//!
//! [`ShopifyAdmin::create_fulfillment`]: crate::order::shopify::admin::ShopifyAdmin::create_fulfillment

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;
use uuid::Uuid;

use super::Fulfiller;
use crate::events::bus::HandlerError;
use crate::events::internal::{self as internal_events, InternalEvent};
use crate::infra::db::{Conn, Db, DbError, Tx};
use crate::infra::workers::{Wakeup, Workers, backoff, each_claimed};
use crate::order::OrderCore;
use crate::order::event_log::{self, Entry, Severity, types};
use crate::order::orchestration::order_moved;
use crate::order::orders::OrderStatus;
use crate::order::orders::repository;
use crate::order::shopify::admin;
use crate::order::shopify::tokens::TokenError;
use crate::{on_pool, on_tx};

const WORKER: &str = "shopify-fulfillments";
/// Orders claimed per pass.
const BATCH: i64 = 10;
/// How long a claim holds: longer than one Admin API exchange can take.
const LEASE: TimeDelta = TimeDelta::seconds(90);
/// Without a wake-up, the sender still looks this often (for orders whose backoff ran out).
const IDLE: Duration = Duration::from_secs(2);
/// How long a fulfillment Shopify refused waits before it is tried again by itself: the same call
/// would be refused again (the order deleted or fulfilled by hand in Shopify, the token without
/// the scope). Retried every ten minutes, it wrote an error to the order's log each time.
const REFUSED_WAIT: TimeDelta = TimeDelta::days(1);

/// Makes a just-shipped order due for its fulfillment now, in the transaction that ships it.
pub async fn schedule(tx: &mut Tx, order_id: Uuid) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE orders SET fulfillment_after = $2, fulfillment_error = NULL WHERE id = $1",
        )
        .bind(order_id)
        .bind(Utc::now())
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Runs the sender until shutdown.
pub fn spawn(workers: &Workers, core: OrderCore, fulfiller: Arc<Fulfiller>, wakeup: Wakeup) {
    workers.sender(WORKER, wakeup, IDLE, BATCH as usize, move || {
        let (core, fulfiller) = (core.clone(), fulfiller.clone());
        async move { pass(&core, &fulfiller).await }
    });
}

#[derive(Debug, sqlx::FromRow)]
struct Claimed {
    id: Uuid,
    tenant_id: Uuid,
    fulfillment_attempts: i64,
}

/// One pass: claims the orders that are due and fulfills them. Returns how many it handled.
pub async fn pass(core: &OrderCore, fulfiller: &Fulfiller) -> Result<usize, HandlerError> {
    let claimed = claim(&core.db, Utc::now()).await?;
    Ok(each_claimed(WORKER, &claimed, |order| attempt(core, fulfiller, order)).await)
}

async fn claim(db: &Db, now: DateTime<Utc>) -> Result<Vec<Claimed>, DbError> {
    // The whole condition is repeated outside the subquery: PostgreSQL re-checks
    // it on a row another replica changed meanwhile, so two replicas never both take one row,
    // and none takes one another replica finished since its subquery read it.
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, Claimed>(
            "UPDATE orders SET fulfillment_lease_until = $1, \
             fulfillment_attempts = fulfillment_attempts + 1 WHERE id IN ( \
               SELECT id FROM orders WHERE status = 'SHIPPED' \
               AND fulfillment_after IS NOT NULL AND fulfillment_after <= $2 \
               AND (fulfillment_lease_until IS NULL OR fulfillment_lease_until < $2) \
               ORDER BY fulfillment_after, id LIMIT $3) \
             AND status = 'SHIPPED' AND fulfillment_after IS NOT NULL AND fulfillment_after <= $2 \
             AND (fulfillment_lease_until IS NULL OR fulfillment_lease_until < $2) \
             RETURNING id, tenant_id, fulfillment_attempts",
        )
        .bind(now + LEASE)
        .bind(now)
        .bind(BATCH)
        .fetch_all(pool)
        .await
    })?;
    Ok(rows)
}

/// Why an attempt did not fulfill.
enum Failure {
    /// Nothing to call with: the order's shop (or, for an order without one, every shop of the
    /// tenant) is not connected.
    NoShop(Option<String>),
    Shopify(admin::ShopifyError),
    Token(String),
    /// The shop's token could not be read: the database failed for a moment.
    Db(String),
}

impl Failure {
    /// Whether trying again later would fail the same way: it takes an operator.
    fn needs_an_operator(&self) -> bool {
        !matches!(
            self,
            Self::Shopify(admin::ShopifyError::Unavailable(_)) | Self::Db(_)
        )
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoShop(None) => f.write_str("the tenant has no connected Shopify shop"),
            Self::NoShop(Some(shop)) => {
                write!(f, "the order's Shopify shop {shop} is not connected")
            }
            Self::Shopify(e) => write!(f, "{e}"),
            Self::Token(e) => write!(f, "the shop's token cannot be opened: {e}"),
            Self::Db(e) => write!(f, "the shop's token could not be read: {e}"),
        }
    }
}

async fn attempt(
    core: &OrderCore,
    fulfiller: &Fulfiller,
    claimed: &Claimed,
) -> Result<(), HandlerError> {
    let (tenant_id, order_id) = (claimed.tenant_id, claimed.id);
    let Some(record) = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id).await?
    else {
        return Ok(());
    };
    let order = &record.order;
    let shop = order.shop_domain.as_deref();
    let outcome = match fulfiller.shop_of(&core.db, tenant_id, shop).await {
        Ok(Some(shop)) => {
            let tracking = admin::Tracking {
                number: order.tracking_number.clone().unwrap_or_default(),
                url: order.tracking_url.clone(),
                company: order.carrier.clone(),
            };
            fulfiller
                .admin
                .create_fulfillment(
                    &shop.domain,
                    &shop.token,
                    &order.shopify_order_id,
                    &tracking,
                )
                .await
                .map_err(Failure::Shopify)
        }
        Ok(None) => Err(Failure::NoShop(shop.map(str::to_owned))),
        Err(TokenError::Db(e)) => Err(Failure::Db(e.to_string())),
        Err(e) => Err(Failure::Token(e.to_string())),
    };

    let mut tx = core.db.begin().await?;
    let Some(record) = repository::lock(&mut tx, tenant_id, order_id).await? else {
        tx.rollback().await?;
        return Ok(());
    };
    let events = match outcome {
        Ok(fulfillment) => {
            finish(&mut tx, order_id).await?;
            let entry = Entry::order(
                tenant_id,
                order_id,
                types::FULFILLMENT_CREATED,
                Severity::Info,
                "Shopify fulfillment created",
            )
            .with_details(json!({"fulfillmentId": fulfillment.id}));
            event_log::append(&mut tx, &entry).await?;
            let mut events = vec![InternalEvent::FulfillmentCreated(
                internal_events::OrderRef {
                    tenant_id,
                    order_id,
                },
            )];
            if record.order.status == OrderStatus::Shipped {
                repository::set_status(&mut tx, order_id, OrderStatus::Fulfilled, None, None)
                    .await?;
                events.extend(order_moved(&mut tx, &record.order, OrderStatus::Fulfilled).await?);
            }
            events
        }
        Err(failure) => {
            let attempts = claimed.fulfillment_attempts;
            let message = failure.to_string();
            let wait = if failure.needs_an_operator() {
                tracing::error!(%order_id, attempts, error = message, "Shopify refused the fulfillment; it waits in the retry queue for an operator");
                REFUSED_WAIT
            } else {
                let wait = backoff(attempts);
                tracing::warn!(%order_id, attempts, retry_in_secs = wait.num_seconds(), error = message, "creating the Shopify fulfillment failed; it is tried again");
                wait
            };
            if !failed(&mut tx, order_id, Utc::now() + wait, &message).await? {
                // An operator gave it up while this attempt ran: it stays given up.
                tx.rollback().await?;
                tracing::info!(%order_id, error = message, "a fulfillment given up during its attempt failed");
                return Ok(());
            }
            let entry = Entry::order(
                tenant_id,
                order_id,
                types::FULFILLMENT_FAILED,
                Severity::Error,
                format!("Shopify fulfillment failed (attempt {attempts}): {message}"),
            )
            .with_details(json!({"attempt": attempts, "retryInSeconds": wait.num_seconds()}));
            event_log::append(&mut tx, &entry).await?;
            let mut events = vec![InternalEvent::FulfillmentFailed(
                internal_events::FulfillmentFailed {
                    tenant_id,
                    order_id,
                    error_message: message,
                },
            )];
            events.push(InternalEvent::FulfillmentRetrying(
                internal_events::FulfillmentRetrying {
                    tenant_id,
                    order_id,
                    attempt: u32::try_from(attempts + 1).unwrap_or(u32::MAX),
                },
            ));
            events
        }
    };
    tx.commit().await?;
    core.relay.notify();
    for event in events {
        core.events.emit(event).await;
    }
    Ok(())
}

/// The order needs no more attempts.
async fn finish(tx: &mut Tx, order_id: Uuid) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE orders SET fulfillment_after = NULL, fulfillment_lease_until = NULL, \
             fulfillment_error = NULL WHERE id = $1",
        )
        .bind(order_id)
        .execute(&mut *conn)
        .await
        .map(|_| ())
    })?;
    Ok(())
}

/// Records a failed attempt and when to try next; `false` when the order no longer waits for its
/// fulfillment (an operator gave it up from the retry queue while the attempt ran).
async fn failed(
    tx: &mut Tx,
    order_id: Uuid,
    next: DateTime<Utc>,
    error: &str,
) -> Result<bool, DbError> {
    let message: String = error.chars().take(500).collect();
    let updated = on_tx!(tx, conn => {
        sqlx::query(
            "UPDATE orders SET fulfillment_after = $2, fulfillment_error = $3, \
             fulfillment_lease_until = NULL WHERE id = $1 AND fulfillment_after IS NOT NULL",
        )
        .bind(order_id)
        .bind(next)
        .bind(&message)
        .execute(&mut *conn)
        .await
        .map(|done| done.rows_affected())
    })?;
    Ok(updated == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Role;
    use crate::infra::db::Backend;
    use crate::order::orders::NewOrder;
    use crate::testing::TestApp;

    /// What an operator must mend waits a day; what passes by itself keeps its backoff.
    #[test]
    fn only_a_refusal_waits_for_an_operator() {
        let waits = |failure: Failure| failure.needs_an_operator();
        assert!(waits(Failure::Shopify(admin::ShopifyError::Rejected(
            "gone".into()
        ))));
        assert!(waits(Failure::NoShop(None)));
        assert!(waits(Failure::Token("undecryptable".into())));
        assert!(!waits(Failure::Shopify(admin::ShopifyError::Unavailable(
            "503".into()
        ))));
        assert!(!waits(Failure::Db("pool timed out".into())));
    }

    /// Stores `new` SHIPPED and due for its fulfillment, in `tx`.
    async fn shipped_and_due(tx: &mut Tx, new: &NewOrder) -> crate::order::orders::Order {
        let order = repository::insert(tx, new, OrderStatus::Shipped, &[])
            .await
            .unwrap()
            .unwrap()
            .order;
        schedule(tx, order.id).await.unwrap();
        order
    }

    /// An attempt that fails after an operator gave the fulfillment up (from the retry queue,
    /// while the attempt waited on Shopify) leaves it given up: its failure schedules nothing.
    #[tokio::test]
    async fn a_failure_after_a_give_up_schedules_nothing() {
        let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
        let db = &app.ctx.db;
        let tenant = crate::identity::tenants::ensure(db, "acme", "Acme")
            .await
            .unwrap();
        let mut tx = db.begin().await.unwrap();
        let order = shipped_and_due(&mut tx, &NewOrder::bare(tenant.id)).await;
        let next = Utc::now() + TimeDelta::seconds(1);
        assert!(
            failed(&mut tx, order.id, next, "Shopify answered 500")
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();

        let given_up = crate::order::retry_queue::give_up_fulfillment(db, tenant.id, order.id);
        assert!(given_up.await.unwrap());
        let mut tx = db.begin().await.unwrap();
        assert!(
            !failed(&mut tx, order.id, next, "Shopify answered 500")
                .await
                .unwrap()
        );
        tx.commit().await.unwrap();
        let waiting = crate::order::retry_queue::failed_fulfillments(db, tenant.id);
        assert!(waiting.await.unwrap().is_empty(), "it came back");
    }

    crate::each_database! {
        /// A tenant with two shops: an order is fulfilled through the shop it came from, with that
        /// shop's token, not through the shop installed last.
        async fn an_order_is_fulfilled_through_its_own_shop(backend: Backend) {
            use crate::config::Secret;
            use crate::order::shopify::oauth::tests::{InstallSetup, SHOP, TOKEN, TOKEN_KEY};
            use crate::order::shopify::tokens::{self, Installation, TokenCipher};

            let setup = InstallSetup::start(backend).await;
            let db = &setup.app.ctx.db;
            let tenant = setup.default_tenant().await;
            // The order's shop, with the token the simulated Shopify takes, and another shop
            // installed after it.
            let cipher = TokenCipher::new(&TOKEN_KEY);
            for (domain, token) in [(SHOP, TOKEN), ("installed-later.myshopify.com", "shpat_other")] {
                let sealed = cipher.seal(domain, &Secret::new(token)).unwrap();
                let installation =
                    Installation { tenant_id: tenant, domain, sealed_token: &sealed, scopes: "write_fulfillments" };
                tokens::connect(db, &installation).await.unwrap().unwrap();
            }
            on_pool!(db, pool => {
                sqlx::query("UPDATE shops SET installed_at = $1 WHERE domain = $2")
                    .bind(Utc::now() - TimeDelta::hours(1))
                    .bind(SHOP)
                    .execute(pool)
                    .await
                    .map(drop)
            })
            .unwrap();

            setup.shopify.add_order(5_700_001, &[(1, 1)]);
            let mut new = NewOrder::bare(tenant);
            new.shopify_order_id = "5700001".into();
            new.shop_domain = Some(SHOP.into());
            let mut tx = db.begin().await.unwrap();
            let order = shipped_and_due(&mut tx, &new).await;
            tx.commit().await.unwrap();

            crate::testing::eventually("the order is fulfilled", Duration::from_secs(60), || async {
                let found = repository::find(&mut Conn::Pool(db), tenant, order.id).await.unwrap()?;
                (found.order.status == OrderStatus::Fulfilled).then_some(())
            })
            .await;
            assert_eq!(setup.shopify.fulfillments().len(), 1);
            let tokens: Vec<Option<String>> =
                setup.shopify.requests().into_iter().map(|r| r.access_token).collect();
            assert!(!tokens.is_empty() && tokens.iter().all(|t| t.as_deref() == Some(TOKEN)), "{tokens:?}");
        }
    }
}
