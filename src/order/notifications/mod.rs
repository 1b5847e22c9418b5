//! Notifications (SPEC §6.5): e-mail on print-job failure, order failure, fulfillment failure and
//! unmapped SKU, to the recipients each tenant sets at `/api/v1/notifications/settings`; web push
//! lives in [`push`].
//!
//! How an e-mail travels, and why:
//! - An order's failure and an unmapped SKU are *recorded* (a row of `notification_emails`) in the
//!   transaction of the change they tell of, next to its event-log entry: the e-mail exists
//!   exactly when the change does, whenever the process stops. The print-job and fulfillment
//!   failures, which the order role learns of from the print side and from Shopify, arrive as
//!   internal events (§8.2), and their handler here records the e-mail. Either way the sender is
//!   woken, and nothing on an order's way ever waits for an SMTP server.
//! - The sender ([`email_sender`]) sends the rows in the background, with a timeout, and tries a
//!   failed one again with backoff, so an SMTP outage delays e-mails and loses none.
//! - Split deployments mail each occurrence once. An internal event is emitted only in the process
//!   that made the change (or that consumed the bus event reporting it, once per event for the
//!   whole order service), never on every replica, so one replica records the e-mail. A print-job
//!   failure is reported twice, though (by the print side, and again by the order side when the
//!   bus brings `print-job.failed`, possibly on another replica); the fulfillment failure once per
//!   failed attempt. Those e-mails carry a dedupe key, and a unique index keeps one row per key and
//!   recipient across all replicas. The rows are then sent by whichever replica claims them.

pub mod email;
pub mod email_sender;
pub mod push;
pub mod settings;
pub mod settings_routes;

use std::sync::Arc;

use uuid::Uuid;

use self::email::{Mailer, Notice};
use crate::config::SmtpConfig;
use crate::events::internal::{InternalEvent, PrintJobFailed, names};
use crate::infra::db::{Conn, DbError, Tx};
use crate::infra::workers::Workers;
use crate::order::OrderCore;
use crate::order::orders::{Order, repository};
use crate::print::jobs::{PrintJob, PrintJobStatus};

/// The four kinds of e-mail notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    PrintJobFailed,
    OrderFailed,
    FulfillmentFailed,
    UnmappedSku,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::PrintJobFailed => "print_job_failed",
            Kind::OrderFailed => "order_failed",
            Kind::FulfillmentFailed => "fulfillment_failed",
            Kind::UnmappedSku => "unmapped_sku",
        }
    }

    /// The kind of notice an internal event calls for, if any (e-mailed, and sent live).
    pub fn of(event: &InternalEvent) -> Option<Self> {
        match event {
            InternalEvent::PrintJobFailed(_) => Some(Kind::PrintJobFailed),
            InternalEvent::OrderFailed(_) => Some(Kind::OrderFailed),
            InternalEvent::FulfillmentFailed(_) => Some(Kind::FulfillmentFailed),
            InternalEvent::OrderLinesUnmapped(_) => Some(Kind::UnmappedSku),
            _ => None,
        }
    }
}

/// The public API (under `/api/v1`).
pub fn routes() -> utoipa_axum::router::OpenApiRouter<crate::order::OrderState> {
    settings_routes::routes()
}

/// Starts e-mail notifications in an order-role process: the failures' handler on its dispatcher
/// and the sender, through `smtp.url` or into the log.
pub fn start(workers: &Workers, smtp: &SmtpConfig, core: &OrderCore) -> anyhow::Result<()> {
    let mailer = Mailer::from_config(smtp).map_err(anyhow::Error::msg)?;
    if mailer.is_log_only() {
        tracing::info!(
            "No SMTP server (smtp.url): notification e-mails are written to the log instead"
        );
    }
    subscribe(core);
    email_sender::spawn(
        workers,
        core.db.clone(),
        Arc::new(mailer),
        core.emails.clone(),
    );
    Ok(())
}

/// Records an e-mail for each failure the order role's dispatcher reports (see the module doc
/// for why this runs in every order replica and still mails each failure once).
pub fn subscribe(core: &OrderCore) {
    // Recorded with the failure itself ([`order_failed`]): its event only hurries the sender.
    let wakeup = core.emails.clone();
    core.events.subscribe(names::ORDER_FAILED, move |_| {
        wakeup.notify();
        Box::pin(async {})
    });
    for name in [names::PRINT_JOB_FAILED, names::FULFILLMENT_FAILED] {
        let handler_core = core.clone();
        core.events.subscribe_with_redeliveries(name, move |event| {
            let (core, event) = (handler_core.clone(), event.clone());
            Box::pin(async move { on_failure(&core, &event).await })
        });
    }
}

async fn on_failure(core: &OrderCore, event: &InternalEvent) {
    let Some(kind) = Kind::of(event) else {
        return;
    };
    let recorded = async {
        let settings = settings::load(&mut Conn::Pool(&core.db), event.tenant_id()).await?;
        if !settings.wants(kind) {
            return Ok(0);
        }
        match compose(core, kind, event).await? {
            Some(notice) => email::record(&mut Conn::Pool(&core.db), &settings, &notice).await,
            None => Ok(0),
        }
    }
    .await;
    match recorded {
        Ok(0) => {}
        Ok(_) => core.emails.notify(),
        // The event is in the event log either way; only its e-mail is missing.
        Err(e) => {
            tracing::warn!(event = event.name(), order = %event.order_id(), error = %e, "could not record a notification e-mail")
        }
    }
}

/// The job a print-job failure tells of, as the print service has it now: its file, and which
/// attempt failed (a retried job that fails again is news again; the same failure reported twice
/// is not). `Some(None)` when it cannot be read (the notice goes without it). `None` when the job
/// was retried since (the report came late, the bus being behind): no news any more, and keyed by
/// the retry's attempt it would silence the retry's own failure. For the e-mail and the push.
pub(crate) async fn failed_job(
    core: &OrderCore,
    failed: &PrintJobFailed,
    told_by: &str,
) -> Option<Option<PrintJob>> {
    let job_id = failed.job.print_job_id;
    match core.print.print_job(failed.job.tenant_id, job_id).await {
        Ok(Some(job)) if job.status != PrintJobStatus::Failed => None,
        Ok(job) => Some(job),
        Err(e) => {
            tracing::warn!(job = %job_id, error = %e, told_by, "the failed print job could not be read for its notice");
            Some(None)
        }
    }
}

/// What the e-mail about `event` says; `None` for an event that calls for none.
async fn compose(
    core: &OrderCore,
    kind: Kind,
    event: &InternalEvent,
) -> Result<Option<Notice>, DbError> {
    let (tenant_id, order_id) = (event.tenant_id(), event.order_id());
    let order = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id).await?;
    let order = order.as_ref().map(|record| &record.order);
    let named = order_name(order, order_id);
    let (dedupe_key, subject, detail) = match event {
        InternalEvent::PrintJobFailed(failed) => {
            let job_id = failed.job.print_job_id;
            let Some(job) = failed_job(core, failed, "e-mail").await else {
                return Ok(None);
            };
            let attempt = job.as_ref().map_or(0, |j| j.attempts);
            let file = job
                .as_ref()
                .map_or("(unknown file)", |j| j.file_name.as_str());
            (
                Some(format!("print-job:{job_id}:attempt:{attempt}")),
                format!("Print job failed: {file} ({named})"),
                format!(
                    "The print job {job_id} ({file}) of {named} failed.\n\
                     SimplyPrint said: {}\n\n\
                     Retry or cancel it under print jobs.",
                    or_nothing(&failed.error_message)
                ),
            )
        }
        InternalEvent::FulfillmentFailed(failed) => (
            // Shopify is tried again until it takes the fulfillment, each failure reported: the
            // first one is mailed, the rest are in the retry queue.
            Some(format!("fulfillment:{order_id}")),
            format!("Shopify fulfillment failed: {named}"),
            format!(
                "Creating the Shopify fulfillment of {named} failed.\n\
                 Shopify said: {}\n\n\
                 forma keeps trying; the retry queue shows each attempt.",
                or_nothing(&failed.error_message)
            ),
        ),
        _ => return Ok(None),
    };
    Ok(Some(Notice {
        tenant_id,
        kind,
        dedupe_key,
        subject,
        body: with_footer(detail, order_id),
    }))
}

/// Records the e-mail about `order`'s failure in the transaction `tx` that marks it FAILED, so it
/// exists exactly when the failure does: once per failure (a retried order that fails again is
/// news again), whichever replica made it and whenever the process stops. Returns how many
/// e-mails were recorded.
pub async fn order_failed(tx: &mut Tx, order: &Order, reason: &str) -> Result<usize, DbError> {
    let settings = settings::load(&mut Conn::Tx(tx), order.tenant_id).await?;
    if !settings.wants(Kind::OrderFailed) {
        return Ok(0);
    }
    let named = order_name(Some(order), order.id);
    let notice = Notice {
        tenant_id: order.tenant_id,
        kind: Kind::OrderFailed,
        dedupe_key: None,
        subject: format!("Order failed: {named}"),
        body: with_footer(
            format!(
                "{named} failed: {}\n\nRetry it once the cause is fixed.",
                or_nothing(reason)
            ),
            order.id,
        ),
    };
    email::record(&mut Conn::Tx(tx), &settings, &notice).await
}

/// Records the e-mail about a new order's lines without an active mapping, in the transaction
/// that stores the order (beside their event-log entries): it exists exactly when the order does.
/// The sender finds it on its next look. Returns how many e-mails were recorded.
pub async fn unmapped_skus(tx: &mut Tx, order: &Order, skus: &[&str]) -> Result<usize, DbError> {
    if skus.is_empty() {
        return Ok(0);
    }
    let settings = settings::load(&mut Conn::Tx(tx), order.tenant_id).await?;
    if !settings.wants(Kind::UnmappedSku) {
        return Ok(0);
    }
    let named = order_name(Some(order), order.id);
    let list: Vec<String> = skus.iter().map(|sku| format!("- {sku}")).collect();
    let notice = Notice {
        tenant_id: order.tenant_id,
        kind: Kind::UnmappedSku,
        // Once per order and set of SKUs: an update that leaves another SKU unmapped is news.
        dedupe_key: Some(unmapped_key(order.id, skus)),
        subject: format!("Unmapped SKU: {} ({named})", skus.join(", ")),
        body: with_footer(
            format!(
                "{named} has lines whose SKU has no active product mapping:\n{}\n\n\
                 They wait as UNMAPPED: add a mapping, then retry the order.",
                list.join("\n")
            ),
            order.id,
        ),
    };
    email::record(&mut Conn::Tx(tx), &settings, &notice).await
}

/// The dedupe key of the e-mail about `order_id`'s unmapped `skus`: short whatever the SKUs (an
/// order may have a thousand lines, and PostgreSQL refuses an index entry past about 2.7 KB, which
/// would refuse the order with it), the same for the same set in any order.
fn unmapped_key(order_id: Uuid, skus: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut set: Vec<&str> = skus.to_vec();
    set.sort_unstable();
    set.dedup();
    let mut digest = Sha256::new();
    for sku in set {
        digest.update(sku.as_bytes());
        digest.update([0]);
    }
    format!("unmapped:{order_id}:{}", hex::encode(digest.finalize()))
}

fn order_name(order: Option<&Order>, order_id: Uuid) -> String {
    match order {
        Some(order) if !order.customer_name.is_empty() => {
            format!("order {} of {}", order.order_number, order.customer_name)
        }
        Some(order) => format!("order {}", order.order_number),
        None => format!("order {order_id}"),
    }
}

fn or_nothing(text: &str) -> &str {
    if text.trim().is_empty() {
        "(no reason given)"
    } else {
        text
    }
}

fn with_footer(detail: String, order_id: Uuid) -> String {
    format!(
        "{detail}\n\nOrder id: {order_id}\n\n-- \nforma: you receive this because your address is \
         in the notification settings."
    )
}

#[cfg(test)]
mod email_flow_tests;
#[cfg(test)]
mod email_tests;
#[cfg(test)]
mod settings_routes_tests;
