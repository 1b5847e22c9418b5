//! The gateway's security events (SPEC §5.1): written to the audit log through the order client,
//! in-process in `all`, over the internal API when split. A failed write is logged and never fails
//! the request that caused it.

use serde_json::json;

use super::GatewayState;
use super::auth::{Authenticated, RequestMeta};
use crate::identity::tenants;
use crate::identity::users::User;
use crate::order::audit::{AuditEntry, actions};

async fn record(state: &GatewayState, entry: AuditEntry) {
    let action = entry.action.clone();
    if let Err(e) = state.order.record_audit(entry).await {
        tracing::error!(error = %e, action, "could not write an audit log entry");
    }
}

fn entry(meta: &RequestMeta, actor: &Authenticated, action: &str) -> AuditEntry {
    AuditEntry {
        tenant_id: actor.context.tenant_id,
        actor_id: Some(actor.context.user_id),
        actor_email: Some(actor.context.email.clone()),
        action: action.to_owned(),
        target_type: Some("user".to_owned()),
        target_id: Some(actor.context.user_id.to_string()),
        ip: Some(meta.ip.to_string()),
        user_agent: meta.user_agent.clone(),
        details: json!({}),
    }
}

pub async fn login_succeeded(state: &GatewayState, meta: &RequestMeta, actor: &Authenticated) {
    record(state, entry(meta, actor, actions::LOGIN_SUCCEEDED)).await;
}

pub async fn token_issued(state: &GatewayState, meta: &RequestMeta, actor: &Authenticated) {
    record(state, entry(meta, actor, actions::TOKEN_ISSUED)).await;
}

/// A refresh token was presented twice: it leaked or was replayed; its family is revoked.
pub async fn refresh_reused(state: &GatewayState, meta: &RequestMeta, actor: &Authenticated) {
    record(state, entry(meta, actor, actions::REFRESH_TOKEN_REUSED)).await;
}

pub async fn logout(state: &GatewayState, meta: &RequestMeta, actor: &Authenticated) {
    record(state, entry(meta, actor, actions::LOGOUT)).await;
}

pub async fn password_changed(state: &GatewayState, meta: &RequestMeta, actor: &Authenticated) {
    record(state, entry(meta, actor, actions::PASSWORD_CHANGED)).await;
}

/// A failed sign-in is logged in the tenant of the account it aimed at, or in the default tenant
/// when the address is unknown (recorded as typed, so probing for accounts shows up).
pub async fn login_failed(
    state: &GatewayState,
    meta: &RequestMeta,
    email: &str,
    user: Option<&User>,
) {
    let tenant_id = match user {
        Some(user) => user.tenant_id,
        None => match tenants::find_by_slug(&state.db, tenants::DEFAULT_SLUG).await {
            Ok(Some(tenant)) => tenant.id,
            _ => return,
        },
    };
    let entry = AuditEntry {
        tenant_id,
        actor_id: user.map(|u| u.id),
        actor_email: Some(email.to_owned()),
        action: actions::LOGIN_FAILED.to_owned(),
        target_type: Some("user".to_owned()),
        target_id: user.map(|u| u.id.to_string()),
        ip: Some(meta.ip.to_string()),
        user_agent: meta.user_agent.clone(),
        details: json!({}),
    };
    record(state, entry).await;
}

/// A change made by an administrator to another user (creation, roles, deactivation, deletion).
pub async fn user_changed(
    state: &GatewayState,
    meta: &RequestMeta,
    actor: &Authenticated,
    action: &str,
    target: &User,
    details: serde_json::Value,
) {
    let mut entry = entry(meta, actor, action);
    entry.tenant_id = target.tenant_id;
    entry.target_id = Some(target.id.to_string());
    entry.details = details;
    record(state, entry).await;
}
