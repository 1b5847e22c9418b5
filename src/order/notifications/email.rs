//! E-mail notifications: the e-mails waiting to be sent (`notification_emails`), and the mailer
//! that sends one through the configured SMTP server, or logs it when there is none.
//!
//! Recording an e-mail is a row and nothing else: whoever records it (an internal event's handler,
//! an order's transaction) never waits for an SMTP server. The sender ([`super::email_sender`])
//! takes the rows from there.

use std::str::FromStr;
use std::time::Duration;

use chrono::Utc;
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use uuid::Uuid;

use super::Kind;
use super::settings::NotificationSettings;
use crate::config::SmtpConfig;
use crate::infra::db::{Conn, DbError};
use crate::on_conn;

/// How long sending one e-mail may take by default (`smtp.timeout_ms`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest subject line kept: a header, not a body.
const MAX_SUBJECT: usize = 200;

/// What one notification says, before it has recipients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub tenant_id: Uuid,
    pub kind: Kind,
    /// Names the occurrence, when the same one can be reported twice (see the migration).
    pub dedupe_key: Option<String>,
    pub subject: String,
    pub body: String,
}

/// Records `notice` as one e-mail per recipient of `settings` when they want its kind; an
/// occurrence recorded before is not recorded again. Returns how many e-mails were recorded.
pub async fn record(
    conn: &mut Conn<'_>,
    settings: &NotificationSettings,
    notice: &Notice,
) -> Result<usize, DbError> {
    if !settings.wants(notice.kind) {
        return Ok(0);
    }
    // A SKU or a farm's message can carry line breaks: a header has none.
    let subject: String = notice
        .subject
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_SUBJECT)
        .collect();
    let now = Utc::now();
    let mut recorded = 0;
    for recipient in &settings.recipients {
        let inserted = on_conn!(conn, c => {
            sqlx::query(
                "INSERT INTO notification_emails (id, tenant_id, kind, dedupe_key, recipient, \
                 subject, body, next_attempt_at, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT DO NOTHING",
            )
            .bind(Uuid::now_v7())
            .bind(notice.tenant_id)
            .bind(notice.kind.as_str())
            .bind(notice.dedupe_key.as_deref())
            .bind(recipient)
            .bind(&subject)
            .bind(&notice.body)
            .bind(now)
            .execute(c)
            .await
            .map(|done| done.rows_affected())
        })?;
        recorded += usize::try_from(inserted).unwrap_or(0);
    }
    Ok(recorded)
}

/// How an e-mail left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// The SMTP server took it.
    Sent,
    /// No SMTP server is configured: it was written to the log instead.
    Logged,
}

/// Why an e-mail did not leave.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The server refused it for good (5xx), or it cannot be built: trying again cannot help.
    #[error("{0}")]
    Permanent(String),
    /// The server is down, slow, or takes no e-mail now (421, 451, 454): try again, and the
    /// other e-mails wait too.
    #[error("{0}")]
    Transient(String),
    /// The server asked to try this e-mail again later for a reason of its own (a full mailbox,
    /// greylisting): try it again; the others are sent meanwhile.
    #[error("{0}")]
    Later(String),
}

/// Sends e-mails through `smtp.url`, or only logs them when it is unset (SPEC §6.5).
#[derive(Clone)]
pub enum Mailer {
    Smtp {
        transport: Box<AsyncSmtpTransport<Tokio1Executor>>,
        from: Mailbox,
        timeout: Duration,
    },
    LogOnly,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The transport holds the URL's credentials: never printed.
        match self {
            Mailer::Smtp { from, timeout, .. } => f
                .debug_struct("Mailer::Smtp")
                .field("from", &from.to_string())
                .field("timeout", timeout)
                .finish(),
            Mailer::LogOnly => f.write_str("Mailer::LogOnly"),
        }
    }
}

impl Mailer {
    /// The mailer of the `[smtp]` settings (checked at start-up, so an error here names one).
    pub fn from_config(smtp: &SmtpConfig) -> Result<Self, String> {
        let Some(url) = &smtp.url else {
            return Ok(Mailer::LogOnly);
        };
        crate::infra::tls::install_crypto_provider();
        let timeout = smtp
            .timeout_ms
            .map_or(DEFAULT_TIMEOUT, Duration::from_millis);
        let from = smtp.from_mailbox()?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url.expose())
            .map_err(|e| format!("smtp.url {}: {e}", url.masked()))?
            .timeout(Some(timeout))
            .build();
        let transport = Box::new(transport);
        Ok(Mailer::Smtp {
            transport,
            from,
            timeout,
        })
    }

    pub fn is_log_only(&self) -> bool {
        matches!(self, Mailer::LogOnly)
    }

    /// Sends one plain-text e-mail; an SMTP server that does not finish within the timeout is
    /// given up on (a transient failure) so the sender moves on.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<Delivery, SendError> {
        let (transport, from, timeout) = match self {
            Mailer::LogOnly => {
                tracing::info!(
                    to,
                    subject,
                    body,
                    "e-mail notification not sent: no SMTP server is configured (smtp.url); logged instead"
                );
                return Ok(Delivery::Logged);
            }
            Mailer::Smtp {
                transport,
                from,
                timeout,
            } => (transport, from, *timeout),
        };
        let to = Mailbox::from_str(to)
            .map_err(|e| SendError::Permanent(format!("recipient {to:?}: {e}")))?;
        let message = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(subject)
            .header(ContentType::TEXT_PLAIN)
            .body(body.to_owned())
            .map_err(|e| SendError::Permanent(format!("the e-mail cannot be built: {e}")))?;
        // lettre's timeout bounds each read and write; this bounds the whole exchange, so a
        // server that answers just often enough cannot hold the sender either.
        match tokio::time::timeout(timeout, transport.send(message)).await {
            Ok(Ok(_)) => Ok(Delivery::Sent),
            Ok(Err(e)) if e.is_permanent() => Err(SendError::Permanent(describe(&e))),
            Ok(Err(e)) if is_about_this_email(&e) => Err(SendError::Later(describe(&e))),
            Ok(Err(e)) => Err(SendError::Transient(describe(&e))),
            Err(_) => Err(SendError::Transient(format!(
                "the SMTP server did not finish within {} ms (timed out)",
                timeout.as_millis()
            ))),
        }
    }
}

/// Whether a passing refusal is about this e-mail or its recipient, not the server (RFC 5321
/// §4.2.3, RFC 3463): 450 (the mailbox busy or unavailable; greylisting), 452 with 4.2.2 (the
/// mailbox full) or 4.5.3 (too many recipients), 451 with 4.7.1 (greylisting). Any other 4xx
/// (421 closing, 451 a local error, 452 the server's own storage full, 454 TLS or
/// authentication), or no reply at all, says the server takes no e-mail now.
fn is_about_this_email(error: &lettre::transport::smtp::Error) -> bool {
    if !error.is_transient() {
        return false;
    }
    let says = |code: &str| error.to_string().contains(code);
    match error.status().map(u16::from) {
        Some(450) => true,
        Some(452) => says("4.2.2") || says("4.5.3"),
        Some(451) => says("4.7.1"),
        _ => false,
    }
}

/// The error with its causes: lettre's top-level message alone often says only "network error".
fn describe(error: &lettre::transport::smtp::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    if error.is_timeout() && !text.contains("timed out") {
        text.push_str(" (timed out)");
    }
    text
}
