//! What is pushed for each internal event, and the `push_messages` rows that wait for the sender.
//!
//! A notification is small JSON the web app's service worker shows as it is:
//! `{type, title, body, orderId, url}`. It stays far below the 4096 bytes every push service must
//! accept (RFC 8030 §7.2) less the 103 bytes of aes128gcm overhead (RFC 8291 §4): each free text
//! is cut to a few hundred characters.

use chrono::{DateTime, TimeDelta, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::subscriptions;
use crate::events::internal::InternalEvent;
use crate::infra::db::{Conn, Db, DbError};
use crate::order::OrderCore;
use crate::order::notifications::failed_job;
use crate::order::orders::{Order, repository};
use crate::{on_pool, on_tx};

/// The largest plaintext a push service is sure to take: 4096 bytes of body (RFC 8030 §7.2) less
/// the aes128gcm header (86 bytes with a 65-byte key id), the padding delimiter and the tag.
pub const MAX_PAYLOAD: usize = 4096 - 86 - 1 - 16;
/// Longest title and body kept.
const MAX_TEXT: usize = 300;

/// One notification, as the service worker receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// The internal event's name (`order.created`, `printjob.failed`, …).
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub title: String,
    pub body: String,
    pub order_id: Uuid,
    /// Where a click leads, relative to the web app.
    pub url: String,
}

/// The notification for `event`, and the key naming the occurrence it tells of; `None` for an
/// event that is not pushed.
pub fn compose(
    event: &InternalEvent,
    order: Option<&Order>,
    print_attempt: Option<u32>,
) -> Option<(String, Notification)> {
    let order_id = event.order_id();
    let number = match order {
        Some(order) => order.order_number.clone(),
        None => order_id.to_string(),
    };
    // Occurrences reported once (see the module doc of `push`) get a key of their own.
    let once = || Uuid::now_v7().to_string();
    let (key, title, body) = match event {
        InternalEvent::OrderCreated(_) => {
            let body = match order {
                Some(o) if !o.customer_name.is_empty() => {
                    format!("{} · {} {}", o.customer_name, o.total_price, o.currency)
                }
                Some(o) => format!("{} {}", o.total_price, o.currency),
                None => "A new order arrived".to_owned(),
            };
            (
                format!("order-created:{order_id}"),
                format!("New order {number}"),
                body,
            )
        }
        InternalEvent::OrderStatusChanged(e) => (
            format!("order-status:{order_id}:{}", once()),
            format!("Order {number} is {}", humane(&e.new_status)),
            format!("{} → {}", humane(&e.previous_status), humane(&e.new_status)),
        ),
        InternalEvent::PrintJobFailed(e) => {
            let job = e.job.print_job_id;
            // The print side reports a failure, and the order side again when the bus brings it:
            // keyed by the job's attempt, the second report is the same message, while a retried
            // job that fails again is news again.
            let key = match print_attempt {
                Some(attempt) => format!("print-job-failed:{job}:attempt:{attempt}"),
                None => format!("print-job-failed:{job}"),
            };
            let reason = if e.error_message.trim().is_empty() {
                "No reason given".to_owned()
            } else {
                e.error_message.clone()
            };
            (key, format!("Print job failed for order {number}"), reason)
        }
        InternalEvent::ShipmentCreated(e) => {
            let body = match (&e.tracking_number, &e.carrier) {
                (Some(number), Some(carrier)) => format!("{carrier} tracking {number}"),
                (Some(number), None) => format!("Tracking {number}"),
                _ => "The parcel is created; tracking follows".to_owned(),
            };
            (
                format!("shipment-created:{}", e.shipment_id),
                format!("Order {number} has a parcel"),
                body,
            )
        }
        InternalEvent::ShipmentStatusChanged(e) => (
            format!("shipment-status:{}:{}", e.shipment_id, once()),
            format!("Shipment of order {number}: {}", humane(&e.new_status)),
            format!("{} → {}", humane(&e.previous_status), humane(&e.new_status)),
        ),
        _ => return None,
    };
    Some((
        key,
        Notification {
            kind: event.name(),
            title: cut(&title),
            body: cut(&body),
            order_id,
            url: format!("/orders/{order_id}"),
        },
    ))
}

/// `READY_FOR_FULFILLMENT` → `ready for fulfillment`.
fn humane(status: &str) -> String {
    status.to_lowercase().replace('_', " ")
}

fn cut(text: &str) -> String {
    if text.chars().count() <= MAX_TEXT {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(MAX_TEXT - 1).collect();
    cut.push('…');
    cut
}

/// Records the notification of `event` for every subscription of its tenant. Returns how many
/// messages were recorded (0 when the tenant has no subscription, or when the occurrence was
/// recorded before).
pub async fn record(core: &OrderCore, event: &InternalEvent) -> Result<usize, DbError> {
    let tenant_id = event.tenant_id();
    let targets = subscriptions::of_tenant(&core.db, tenant_id).await?;
    if targets.is_empty() {
        return Ok(0);
    }
    let order = repository::find(&mut Conn::Pool(&core.db), tenant_id, event.order_id()).await?;
    let print_attempt = match event {
        InternalEvent::PrintJobFailed(failed) => match failed_job(core, failed, "push").await {
            Some(job) => job.map(|j| j.attempts),
            None => return Ok(0),
        },
        _ => None,
    };
    let Some((key, notification)) = compose(event, order.as_ref().map(|r| &r.order), print_attempt)
    else {
        return Ok(0);
    };
    let payload = serde_json::to_string(&notification).unwrap_or_default();
    debug_assert!(payload.len() <= MAX_PAYLOAD, "a push payload is too large");
    enqueue(&core.db, &targets, &key, &payload).await
}

/// Records `payload` for each of `targets` (subscription ids), once per `key` and subscription.
/// Returns how many messages are new.
pub async fn enqueue(
    db: &Db,
    targets: &[Uuid],
    key: &str,
    payload: &str,
) -> Result<usize, DbError> {
    let now = Utc::now();
    let mut recorded = 0;
    let mut tx = db.begin().await?;
    for subscription_id in targets {
        let inserted = on_tx!(&mut tx, conn => {
            sqlx::query(
                "INSERT INTO push_messages (id, subscription_id, tenant_id, event_key, payload, \
                 status, attempts, next_attempt_at, created_at) \
                 SELECT $1, id, tenant_id, $3, $4, 'PENDING', 0, $5, $5 \
                 FROM push_subscriptions WHERE id = $2 \
                 ON CONFLICT (subscription_id, event_key) DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(subscription_id)
            .bind(key)
            .bind(payload)
            .bind(now)
            .execute(&mut *conn)
            .await
            .map(|r| r.rows_affected())
        })?;
        recorded += usize::try_from(inserted).unwrap_or(0);
    }
    tx.commit().await?;
    Ok(recorded)
}

/// Deletes the messages sent or given up before `before` (their keys guarded against a second
/// report of the same occurrence until then).
pub async fn forget_done(db: &Db, before: DateTime<Utc>) -> Result<u64, DbError> {
    let deleted = on_pool!(db, pool => {
        sqlx::query("DELETE FROM push_messages WHERE status <> 'PENDING' AND done_at < $1")
            .bind(before)
            .execute(pool)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(deleted)
}

/// How long a sent message is kept: longer than the second report of a print-job failure takes
/// to come over the bus, even after a short outage.
pub const KEEP_DONE: TimeDelta = TimeDelta::hours(6);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::internal::{PrintJobFailed, PrintJobRef, StatusChanged};

    fn job_failed(message: &str) -> InternalEvent {
        InternalEvent::PrintJobFailed(PrintJobFailed {
            job: PrintJobRef {
                tenant_id: Uuid::now_v7(),
                print_job_id: Uuid::now_v7(),
                order_id: Uuid::now_v7(),
                line_item_id: Uuid::now_v7(),
            },
            error_message: message.to_owned(),
        })
    }

    #[test]
    fn a_huge_error_message_still_fits_one_push() {
        let (_, notification) = compose(&job_failed(&"é".repeat(100_000)), None, Some(1)).unwrap();
        let payload = serde_json::to_string(&notification).unwrap();
        assert!(payload.len() <= MAX_PAYLOAD, "{} bytes", payload.len());
        assert_eq!(notification.kind, "printjob.failed");
        assert_eq!(
            notification.url,
            format!("/orders/{}", notification.order_id)
        );
    }

    #[test]
    fn the_same_failed_attempt_has_one_key_and_a_later_attempt_another() {
        let event = job_failed("nozzle clogged");
        let first = compose(&event, None, Some(1)).unwrap().0;
        assert_eq!(first, compose(&event, None, Some(1)).unwrap().0);
        assert_ne!(first, compose(&event, None, Some(2)).unwrap().0);
    }

    #[test]
    fn a_status_change_reads_as_words() {
        let event = InternalEvent::OrderStatusChanged(StatusChanged {
            tenant_id: Uuid::now_v7(),
            order_id: Uuid::now_v7(),
            previous_status: "PROCESSING".into(),
            new_status: "READY_FOR_FULFILLMENT".into(),
        });
        let (_, n) = compose(&event, None, None).unwrap();
        assert!(n.title.ends_with("is ready for fulfillment"), "{}", n.title);
        assert_eq!(n.body, "processing → ready for fulfillment");
    }
}
