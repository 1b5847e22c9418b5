//! Web push (SPEC §6.5; RFC 8030, 8291, 8292): the web app subscribes a browser at
//! `/api/v1/push/subscriptions` with the server's VAPID public key, and every subscription of a
//! tenant is told of its new orders, order status changes, failed print jobs and shipments.
//!
//! How a push travels, and why:
//! - The internal events (§8.2) are queued to the [`recorder`], which *records* a message per
//!   subscription (a `push_messages` row) in the background and wakes the sender: nothing on an
//!   order's way waits for a push service, nor for the push's bookkeeping.
//! - The [`sender`] sends the rows in the background with a timeout, tries a failed one again with
//!   bounded backoff, and removes a subscription its push service says is gone (404/410).
//! - Each event is pushed once, whatever the number of order replicas: an internal event is
//!   emitted once, in the process that made the change (or that consumed the bus event reporting
//!   it, once for the whole order service), never on every replica, so one replica records the
//!   message and the replicas' senders share the rows by lease. The one occurrence reported twice,
//!   a print-job failure (by the print side, and again by the order side when the bus brings
//!   `print-job.failed`), is keyed by the job's attempt, and a unique index keeps one message per
//!   key and subscription.
//! - The VAPID key ([`keys`]) is `push.vapid_private_key`, or one generated once and kept in the
//!   database for every replica and restart.

pub mod keys;
pub mod messages;
pub mod recorder;
pub mod routes;
pub mod sender;
pub mod subscriptions;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::OnceCell;

use self::keys::{KeyError, VapidKeys};
use crate::app::AppContext;
use crate::config::Config;
use crate::events::internal::{InternalEvent, names};
use crate::infra::db::Db;
use crate::infra::public_net;
use crate::infra::workers::Wakeup;
use crate::order::OrderCore;

/// How long one request to a push service may take, unless `push.timeout_ms` says.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);
/// How often sent and given-up messages past [`messages::KEEP_DONE`] are deleted.
const RETENTION_EVERY: Duration = Duration::from_secs(60 * 60);
/// The internal events that are pushed.
const PUSHED: [&str; 5] = [
    names::ORDER_CREATED,
    names::ORDER_STATUS_CHANGED,
    names::PRINT_JOB_FAILED,
    names::SHIPMENT_CREATED,
    names::SHIPMENT_STATUS_CHANGED,
];

/// What the sender works with. Built once per order-role process.
pub struct Push {
    db: Db,
    config: Arc<Config>,
    /// Loaded on first use: the database may still be starting when the role starts.
    keys: OnceCell<VapidKeys>,
    /// `push.vapid_subject`, or its default: who the push service may contact (RFC 8292 §2.1).
    subject: String,
    http: reqwest::Client,
    /// In production: endpoints are called only on public addresses ([`public_net`]).
    public_only: bool,
    /// How long the sender's claim on a message holds.
    lease: chrono::TimeDelta,
    wakeup: Wakeup,
}

impl Push {
    /// The push side of `config`; an error names the setting to fix.
    pub fn from_config(config: Arc<Config>, db: Db) -> anyhow::Result<Self> {
        // Checked now so that a bad key stops the start, not the first push.
        let configured = keys::configured(&config.push)?;
        let subject = subject(&config)?;
        let timeout = config
            .push
            .timeout_ms
            .map_or(PUSH_TIMEOUT, Duration::from_millis);
        // An endpoint is an address a user gave: in production it is reached only on the public
        // internet. (Outside production the push-service stand-in of the tests is on loopback.)
        let public_only = config.is_production();
        let mut http = crate::infra::tls::http_client()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none());
        if public_only {
            http = http.dns_resolver(public_net::PublicResolver);
        }
        let http = http.build()?;
        let keys = OnceCell::new_with(configured);
        Ok(Self {
            db,
            config,
            keys,
            subject,
            http,
            public_only,
            lease: sender::lease_for(timeout),
            wakeup: Wakeup::default(),
        })
    }

    /// The VAPID keys, loaded (or generated) once.
    pub async fn keys(&self) -> Result<&VapidKeys, KeyError> {
        self.keys
            .get_or_try_init(|| keys::load(&self.config.push, &self.db))
            .await
    }
}

/// `push.vapid_subject` when set (it must be a `mailto:` or `https:` URI), else the public URL when
/// it is https, else the admin's address.
fn subject(config: &Config) -> anyhow::Result<String> {
    match config.push.vapid_subject.as_deref().map(str::trim) {
        Some(subject) if !subject.is_empty() => {
            if subject.starts_with("mailto:") || subject.starts_with("https:") {
                Ok(subject.to_owned())
            } else {
                anyhow::bail!(
                    "push.vapid_subject must be a mailto: or https: URI (RFC 8292), e.g. mailto:ops@example.com"
                )
            }
        }
        _ => Ok(match config.server.public_url.as_deref() {
            Some(url) if url.starts_with("https:") => url.trim_end_matches('/').to_owned(),
            _ => "mailto:admin@localhost".to_owned(),
        }),
    }
}

/// Starts web push in an order-role process: the events' handler on its dispatcher, the sender,
/// and the retention of sent messages.
pub fn start(ctx: &AppContext, core: &OrderCore) -> anyhow::Result<()> {
    let push = Arc::new(Push::from_config(ctx.config.clone(), core.db.clone())?);
    let recorder = recorder::Recorder::start(&ctx.workers, core.clone(), push.clone());
    for name in PUSHED {
        let recorder = recorder.clone();
        core.events.subscribe_with_redeliveries(name, move |event| {
            let (recorder, event) = (recorder.clone(), event.clone());
            Box::pin(async move { recorder.submit(event).await })
        });
    }
    sender::spawn(&ctx.workers, push);
    let db = core.db.clone();
    ctx.workers
        .every("push-message-retention", RETENTION_EVERY, move || {
            let db = db.clone();
            async move {
                let before = chrono::Utc::now() - messages::KEEP_DONE;
                messages::forget_done(&db, before)
                    .await
                    .map(drop)
                    .map_err(|e| e.to_string())
            }
        });
    Ok(())
}

/// Records the push of one event and wakes the sender. Errors are logged: the event is in the
/// event log either way, only its push is missing.
pub(crate) async fn record_now(core: &OrderCore, push: &Push, event: &InternalEvent) {
    match messages::record(core, event).await {
        Ok(0) => {}
        Ok(_) => push.wakeup.notify(),
        Err(e) => {
            tracing::warn!(event = event.name(), order = %event.order_id(), error = %e, "could not record a push notification")
        }
    }
}

#[cfg(test)]
mod flow_tests;
#[cfg(test)]
mod routes_tests;
#[cfg(test)]
mod sender_tests;
