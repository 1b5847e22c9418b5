//! The security audit log (SPEC §6.5): logins, user and role changes, integration changes, with
//! actor, IP and user agent. Append-only: nothing in forma updates or deletes an entry, and the
//! database refuses to (see the migration).
//!
//! The order service owns the table. The gateway records its security events through
//! `OrderClient::record_audit`: in-process in role `all`, `POST /internal/audit-logs` when split.

mod repository;
pub mod routes;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

pub use repository::{list, record};

/// The names of the actions, decided here and nowhere else.
pub mod actions {
    pub const LOGIN_SUCCEEDED: &str = "auth.login.succeeded";
    pub const LOGIN_FAILED: &str = "auth.login.failed";
    pub const LOGOUT: &str = "auth.logout";
    pub const PASSWORD_CHANGED: &str = "auth.password.changed";
    pub const TOKEN_ISSUED: &str = "auth.token.issued";
    pub const REFRESH_TOKEN_REUSED: &str = "auth.refresh.reused";
    pub const USER_CREATED: &str = "user.created";
    pub const USER_UPDATED: &str = "user.updated";
    pub const USER_DELETED: &str = "user.deleted";
    pub const USER_ROLES_CHANGED: &str = "user.roles.changed";
    pub const MAPPING_CREATED: &str = "mapping.created";
    pub const MAPPING_UPDATED: &str = "mapping.updated";
    pub const MAPPING_DELETED: &str = "mapping.deleted";
    pub const SHOP_CONNECTED: &str = "shopify.shop.connected";
    pub const SHOP_DISCONNECTED: &str = "shopify.shop.disconnected";
    pub const BACKFILL_STARTED: &str = "shopify.backfill.started";
    pub const NOTIFICATION_SETTINGS_UPDATED: &str = "notifications.settings.updated";
    /// A product's stock settings or count changed (a manual correction says so in its details).
    pub const INVENTORY_UPDATED: &str = "inventory.updated";
}

/// Who made a request that reached a service, as the gateway established it: the client address it
/// resolved (`X-Real-IP`, which it always sets and never takes from an untrusted client) and the
/// user agent. The audit log's IP and user agent of changes made in a service.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<String>,
    pub user_agent: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Origin {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _: &S,
    ) -> Result<Self, Self::Rejection> {
        let header = |name: &str| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Origin {
            ip: header("x-real-ip"),
            user_agent: header("user-agent"),
        })
    }
}

impl AuditEntry {
    /// An entry of `action` by the signed-in user of `ctx` on `target_type` `target_id`.
    pub fn by(
        ctx: &crate::identity::context::UserContext,
        origin: &Origin,
        action: &str,
        target_type: &str,
        target_id: impl ToString,
        details: serde_json::Value,
    ) -> Self {
        Self {
            tenant_id: ctx.tenant_id,
            actor_id: Some(ctx.user_id),
            actor_email: Some(ctx.email.clone()),
            action: action.to_owned(),
            target_type: Some(target_type.to_owned()),
            target_id: Some(target_id.to_string()),
            ip: origin.ip.clone(),
            user_agent: origin.user_agent.clone(),
            details,
        }
    }
}

/// Actions are our own constants; anything longer is a bug, not an event.
const MAX_ACTION_LEN: usize = 100;
/// Caps for text a client controls (a user agent, a typed e-mail address). Such entries are
/// truncated rather than refused: an attacker must not be able to keep a failed login out of the
/// log by sending a huge header.
const MAX_TEXT_LEN: usize = 512;

/// One security event, as its producer describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub tenant_id: Uuid,
    /// The user who acted; absent for anonymous events such as a failed login for an unknown e-mail.
    #[serde(default)]
    pub actor_id: Option<Uuid>,
    #[serde(default)]
    pub actor_email: Option<String>,
    /// One of the names in `audit::actions`, e.g. `auth.login.failed`.
    #[schema(example = "auth.login.failed")]
    pub action: String,
    /// What was acted on, e.g. `user`.
    #[serde(default)]
    pub target_type: Option<String>,
    #[serde(default)]
    pub target_id: Option<String>,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Free-form context of the event (never secrets).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// An entry as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditRecord {
    pub id: Uuid,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub created_at: DateTime<Utc>,
}

fn empty_object() -> serde_json::Value {
    serde_json::Value::Object(serde_json::Map::new())
}

impl AuditEntry {
    /// An entry of `action` in `tenant_id` with nothing else filled in.
    pub fn new(tenant_id: Uuid, action: &str) -> Self {
        Self {
            tenant_id,
            actor_id: None,
            actor_email: None,
            action: action.to_owned(),
            target_type: None,
            target_id: None,
            ip: None,
            user_agent: None,
            details: empty_object(),
        }
    }

    /// The problems that make the entry unrecordable, in the §4 validation list form.
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.action.trim().is_empty() {
            problems.push("action must not be empty".to_owned());
        }
        if self.action.chars().count() > MAX_ACTION_LEN {
            problems.push(format!(
                "action must be at most {MAX_ACTION_LEN} characters"
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The entry with every client-controlled text cut to a storable length.
    fn truncated(&self) -> Self {
        let cut = |text: &Option<String>| {
            text.as_ref()
                .map(|t| t.chars().take(MAX_TEXT_LEN).collect::<String>())
        };
        Self {
            actor_email: cut(&self.actor_email),
            target_type: cut(&self.target_type),
            target_id: cut(&self.target_id),
            ip: cut(&self.ip),
            user_agent: cut(&self.user_agent),
            ..self.clone()
        }
    }
}

/// The query of `GET /api/v1/audit-logs`, as sent (pagination comes separately).
#[derive(Debug, Clone, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct AuditQuery {
    /// Super admins only: read this tenant's log instead of their own.
    pub tenant_id: Option<Uuid>,
    /// Only this action, e.g. `auth.login.failed`.
    pub action: Option<String>,
    pub actor_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Entries at or after this instant: ISO 8601 date-time (UTC when no offset is given) or date.
    pub from: Option<String>,
    /// Entries at or before this instant: ISO 8601 date-time, or a date meaning the whole day.
    pub to: Option<String>,
}

/// Which entries of a tenant to list; every field narrows the result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub action: Option<String>,
    pub actor_id: Option<Uuid>,
    pub target_type: Option<String>,
    pub target_id: Option<String>,
    /// Inclusive.
    pub from: Option<DateTime<Utc>>,
    /// Inclusive.
    pub to: Option<DateTime<Utc>>,
}

impl AuditQuery {
    /// The filter, or every unreadable bound listed (for a 400). Empty parameters (`?action=`)
    /// filter nothing, as a form with a blank field means.
    pub fn filter(&self) -> Result<AuditFilter, Vec<String>> {
        let text = |value: &Option<String>| value.clone().filter(|v| !v.is_empty());
        let mut problems = Vec::new();
        let mut bound = |name: &str, value: &Option<String>, end: Bound| match text(value) {
            None => None,
            Some(value) => {
                let parsed = parse_instant(&value, end);
                if parsed.is_none() {
                    problems.push(format!("{name} must be an ISO 8601 date or date-time"));
                }
                parsed
            }
        };
        let from = bound("from", &self.from, Bound::Start);
        let to = bound("to", &self.to, Bound::End);
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(AuditFilter {
            action: text(&self.action),
            actor_id: self.actor_id,
            target_type: text(&self.target_type),
            target_id: text(&self.target_id),
            from,
            to,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Start,
    End,
}

/// [`parse_instant`] for other lists' `from` (`end` false) and `to` (`end` true) parameters.
pub fn parse_instant_bound(text: &str, end: bool) -> Option<DateTime<Utc>> {
    parse_instant(text, if end { Bound::End } else { Bound::Start })
}

/// Reads an RFC 3339 date-time, a date-time without offset (UTC), or a date: the start of that
/// day for `from`, its last microsecond for `to`. Bounds are rounded inward to whole microseconds,
/// the precision entries are stored with, so both databases compare alike. Only years 1 to 9999
/// are read: both databases hold and order those alike (PostgreSQL refuses years before 4713 BC,
/// SQLite's text of a year past 9999 sorts before every other).
fn parse_instant(text: &str, bound: Bound) -> Option<DateTime<Utc>> {
    use chrono::Datelike;
    parse_any_instant(text, bound).filter(|t| (1..=9999).contains(&t.year()))
}

fn parse_any_instant(text: &str, bound: Bound) -> Option<DateTime<Utc>> {
    let instant = if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        t.with_timezone(&Utc)
    } else if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f") {
        t.and_utc()
    } else {
        let day = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
        return match bound {
            Bound::Start => Some(day.and_hms_opt(0, 0, 0)?.and_utc()),
            Bound::End => {
                let next = day.succ_opt()?.and_hms_opt(0, 0, 0)?.and_utc();
                next.checked_sub_signed(chrono::TimeDelta::microseconds(1))
            }
        };
    };
    let truncated = truncate_to_micros(instant);
    match bound {
        Bound::Start if truncated < instant => {
            truncated.checked_add_signed(chrono::TimeDelta::microseconds(1))
        }
        _ => Some(truncated),
    }
}

/// PostgreSQL keeps microseconds; SQLite would keep whatever it is given. Storing microseconds
/// on both makes a stored entry read back identical everywhere.
pub(crate) fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    let extra = t.timestamp_subsec_nanos() % 1_000;
    t - chrono::TimeDelta::nanoseconds(i64::from(extra))
}

#[cfg(test)]
mod repository_tests;
#[cfg(test)]
mod routes_tests;
#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn bounds_read_dates_and_date_times_with_or_without_offset() {
        let read = |text: &str, bound| parse_instant(text, bound);
        assert_eq!(
            read("2026-03-01T10:00:00Z", Bound::Start),
            Some(at("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            read("2026-03-01T12:00:00+02:00", Bound::Start),
            Some(at("2026-03-01T10:00:00Z"))
        );
        assert_eq!(
            read("2026-03-01T10:00:00.5", Bound::End),
            Some(at("2026-03-01T10:00:00.5Z"))
        );
        assert_eq!(
            read("2026-03-01", Bound::Start),
            Some(at("2026-03-01T00:00:00Z"))
        );
        assert_eq!(
            read("2026-03-01", Bound::End),
            Some(at("2026-03-01T23:59:59.999999Z"))
        );
        assert_eq!(read("yesterday", Bound::Start), None);
        assert_eq!(read("2026-02-30", Bound::End), None);
        assert_eq!(
            read("0001-01-01", Bound::Start),
            Some(at("0001-01-01T00:00:00Z"))
        );
        assert_eq!(
            read("9999-12-31", Bound::End),
            Some(at("9999-12-31T23:59:59.999999Z"))
        );
        for out_of_range in [
            "-262143-01-01",
            "0000-12-31",
            "+10000-01-01",
            "+10000-01-01T00:00:00Z",
        ] {
            assert_eq!(read(out_of_range, Bound::Start), None, "{out_of_range}");
        }
    }

    #[test]
    fn sub_microsecond_bounds_round_inward() {
        let t = "2026-03-01T10:00:00.0000005Z";
        assert_eq!(
            parse_instant(t, Bound::Start),
            Some(at("2026-03-01T10:00:00.000001Z"))
        );
        assert_eq!(
            parse_instant(t, Bound::End),
            Some(at("2026-03-01T10:00:00Z"))
        );
    }

    #[test]
    fn unreadable_bounds_are_all_listed_together() {
        let query = AuditQuery {
            from: Some("soon".into()),
            to: Some("later".into()),
            ..AuditQuery::default()
        };
        assert_eq!(
            query.filter(),
            Err(vec![
                "from must be an ISO 8601 date or date-time".to_owned(),
                "to must be an ISO 8601 date or date-time".to_owned(),
            ])
        );
    }

    #[test]
    fn blank_parameters_filter_nothing() {
        let query = AuditQuery {
            action: Some(String::new()),
            from: Some(String::new()),
            ..AuditQuery::default()
        };
        assert_eq!(query.filter().unwrap(), AuditFilter::default());
    }

    #[test]
    fn an_entry_needs_a_short_non_empty_action() {
        let tenant = Uuid::new_v4();
        assert!(
            AuditEntry::new(tenant, actions::LOGIN_FAILED)
                .validate()
                .is_ok()
        );
        assert_eq!(
            AuditEntry::new(tenant, " ").validate(),
            Err(vec!["action must not be empty".to_owned()])
        );
        assert!(
            AuditEntry::new(tenant, &"x".repeat(101))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn client_controlled_text_is_truncated_not_refused() {
        let mut entry = AuditEntry::new(Uuid::new_v4(), actions::LOGIN_FAILED);
        entry.user_agent = Some("é".repeat(10_000));
        let stored = entry.truncated();
        assert_eq!(
            stored.user_agent.map(|ua| ua.chars().count()),
            Some(MAX_TEXT_LEN)
        );
    }

    #[test]
    fn an_entry_reads_from_camel_case_json_with_defaults() {
        let tenant = Uuid::new_v4();
        let entry: AuditEntry = serde_json::from_value(serde_json::json!({
            "tenantId": tenant, "action": "auth.logout", "userAgent": "curl/8"
        }))
        .unwrap();
        assert_eq!(entry.user_agent.as_deref(), Some("curl/8"));
        assert_eq!(entry.details, serde_json::json!({}));
        assert_eq!(entry.actor_id, None);
    }
}
