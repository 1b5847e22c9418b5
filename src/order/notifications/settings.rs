//! A tenant's e-mail notification settings (SPEC §6.5): which of the four kinds are mailed, and to
//! whom. Read by the routes and by whoever records an e-mail; a tenant that never saved them has
//! every kind on and no recipients, so nothing is mailed until someone names a recipient.

use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::Kind;
use crate::infra::db::{Conn, Db, DbError};
use crate::{on_conn, on_pool};

/// More recipients than this is a mailing list, which belongs in the mail system, not here.
pub const MAX_RECIPIENTS: usize = 20;
/// The longest address SMTP carries (RFC 5321 §4.5.3.1.3: a path of 256 octets with its brackets).
const MAX_ADDRESS_LEN: usize = 254;

/// The settings as the API shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationSettings {
    /// Who receives the e-mails, e.g. `["ops@shop.example"]`.
    pub recipients: Vec<String>,
    /// A print job failed.
    pub print_job_failed: bool,
    /// An order failed (every line failed).
    pub order_failed: bool,
    /// Creating an order's Shopify fulfillment failed (mailed once per order; the retries follow
    /// in the retry queue).
    pub fulfillment_failed: bool,
    /// A new order has a line whose SKU has no active product mapping.
    pub unmapped_sku: bool,
    /// Whether forma has an SMTP server (`smtp.url`); without one, e-mails are only logged.
    /// Read-only: ignored in a PUT.
    #[serde(default)]
    pub email_configured: bool,
    /// When the settings were last saved; null while they are the defaults.
    pub updated_at: Option<DateTime<Utc>>,
}

impl NotificationSettings {
    /// The settings of a tenant that never saved any.
    pub fn defaults() -> Self {
        Self {
            recipients: Vec::new(),
            print_job_failed: true,
            order_failed: true,
            fulfillment_failed: true,
            unmapped_sku: true,
            email_configured: false,
            updated_at: None,
        }
    }

    /// Whether an e-mail of `kind` goes to anyone.
    pub fn wants(&self, kind: Kind) -> bool {
        let on = match kind {
            Kind::PrintJobFailed => self.print_job_failed,
            Kind::OrderFailed => self.order_failed,
            Kind::FulfillmentFailed => self.fulfillment_failed,
            Kind::UnmappedSku => self.unmapped_sku,
        };
        on && !self.recipients.is_empty()
    }
}

/// The body of a PUT: the whole settings, every field required.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SettingsInput {
    pub recipients: Option<Vec<String>>,
    pub print_job_failed: Option<bool>,
    pub order_failed: Option<bool>,
    pub fulfillment_failed: Option<bool>,
    pub unmapped_sku: Option<bool>,
}

impl SettingsInput {
    /// The settings to store, or every problem (for one 400 listing them). Addresses are trimmed
    /// and kept once each (compared without regard to case).
    pub fn validate(&self) -> Result<NotificationSettings, Vec<String>> {
        let mut problems = Vec::new();
        let mut flag = |name: &str, value: Option<bool>| {
            value.unwrap_or_else(|| {
                problems.push(format!("{name} must be a boolean value"));
                false
            })
        };
        let print_job_failed = flag("printJobFailed", self.print_job_failed);
        let order_failed = flag("orderFailed", self.order_failed);
        let fulfillment_failed = flag("fulfillmentFailed", self.fulfillment_failed);
        let unmapped_sku = flag("unmappedSku", self.unmapped_sku);
        let mut recipients: Vec<String> = Vec::new();
        match &self.recipients {
            None => problems.push("recipients must be an array".to_owned()),
            Some(given) => {
                for (i, address) in given.iter().enumerate() {
                    let address = address.trim();
                    if let Err(problem) = check_address(address) {
                        problems.push(format!("recipients.{i} {problem}"));
                    } else if !recipients.iter().any(|r| r.eq_ignore_ascii_case(address)) {
                        recipients.push(address.to_owned());
                    }
                }
                if recipients.len() > MAX_RECIPIENTS {
                    problems.push(format!(
                        "recipients must contain no more than {MAX_RECIPIENTS} elements"
                    ));
                }
            }
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(NotificationSettings {
            recipients,
            print_job_failed,
            order_failed,
            fulfillment_failed,
            unmapped_sku,
            email_configured: false,
            updated_at: None,
        })
    }
}

/// Whether `address` is one SMTP can deliver to: a plain `local@domain` as lettre reads an
/// address, which the sender's message builder also reads as a mailbox (it is stricter: no
/// `[domain literal]`), so what is accepted here can be sent.
fn check_address(address: &str) -> Result<(), String> {
    if address.is_empty() {
        return Err("should not be empty".to_owned());
    }
    if address.len() > MAX_ADDRESS_LEN {
        return Err(format!("must be at most {MAX_ADDRESS_LEN} characters"));
    }
    let plain = lettre::Address::from_str(address).is_ok();
    if !plain || lettre::message::Mailbox::from_str(address).is_err() {
        return Err(format!("must be an email address (got {address:?})"));
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    recipients: String,
    print_job_failed: bool,
    order_failed: bool,
    fulfillment_failed: bool,
    unmapped_sku: bool,
    updated_at: DateTime<Utc>,
}

impl Row {
    fn into_settings(self) -> NotificationSettings {
        NotificationSettings {
            // Written by `save` only, from a Vec<String>: unreadable means a hand edit, and then
            // no recipients is the safe reading.
            recipients: serde_json::from_str(&self.recipients).unwrap_or_default(),
            print_job_failed: self.print_job_failed,
            order_failed: self.order_failed,
            fulfillment_failed: self.fulfillment_failed,
            unmapped_sku: self.unmapped_sku,
            email_configured: false,
            updated_at: Some(self.updated_at),
        }
    }
}

/// The tenant's settings, or the defaults.
pub async fn load(conn: &mut Conn<'_>, tenant_id: Uuid) -> Result<NotificationSettings, DbError> {
    let row = on_conn!(conn, c => {
        sqlx::query_as::<_, Row>(
            "SELECT recipients, print_job_failed, order_failed, fulfillment_failed, unmapped_sku, \
             updated_at FROM notification_settings WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(c)
        .await
    })?;
    Ok(row.map_or_else(NotificationSettings::defaults, Row::into_settings))
}

/// Replaces the tenant's settings; returns them as stored.
pub async fn save(
    db: &Db,
    tenant_id: Uuid,
    settings: &NotificationSettings,
) -> Result<NotificationSettings, DbError> {
    let recipients = serde_json::Value::from(settings.recipients.clone()).to_string();
    let row = on_pool!(db, pool => {
        sqlx::query_as::<_, Row>(
            "INSERT INTO notification_settings (tenant_id, recipients, print_job_failed, \
             order_failed, fulfillment_failed, unmapped_sku, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (tenant_id) DO UPDATE SET recipients = excluded.recipients, \
             print_job_failed = excluded.print_job_failed, order_failed = excluded.order_failed, \
             fulfillment_failed = excluded.fulfillment_failed, \
             unmapped_sku = excluded.unmapped_sku, updated_at = excluded.updated_at \
             RETURNING recipients, print_job_failed, order_failed, fulfillment_failed, \
             unmapped_sku, updated_at",
        )
        .bind(tenant_id)
        .bind(&recipients)
        .bind(settings.print_job_failed)
        .bind(settings.order_failed)
        .bind(settings.fulfillment_failed)
        .bind(settings.unmapped_sku)
        .bind(Utc::now())
        .fetch_one(pool)
        .await
    })?;
    Ok(row.into_settings())
}
