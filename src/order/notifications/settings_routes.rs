//! `GET/PUT /api/v1/notifications/settings` (SPEC §6.5): notifications.manage for both, since the
//! recipients are where failure reports about the tenant's orders go. Every change is audited.

use axum::extract::State;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::settings::{self, NotificationSettings, SettingsInput};
use crate::http::extract::Json;
use crate::http::{ApiError, ErrorBody};
use crate::identity::context::UserContext;
use crate::identity::roles::Permission;
use crate::infra::db::Conn;
use crate::order::OrderState;
use crate::order::audit::{self, AuditEntry, Origin, actions};

pub fn routes() -> OpenApiRouter<OrderState> {
    OpenApiRouter::new().routes(routes!(get_settings, put_settings))
}

/// With the one fact the tenant cannot set: whether e-mails leave forma at all.
fn shown(state: &OrderState, mut settings: NotificationSettings) -> NotificationSettings {
    settings.email_configured = state.smtp.url.is_some();
    settings
}

/// The tenant's e-mail notification settings (the defaults until saved).
#[utoipa::path(get, path = "/api/v1/notifications/settings", tag = "notifications",
    responses(
        (status = 200, description = "The settings", body = NotificationSettings),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing notifications.manage", body = ErrorBody)))]
async fn get_settings(
    State(state): State<OrderState>,
    ctx: UserContext,
) -> Result<Json<NotificationSettings>, ApiError> {
    ctx.require(Permission::NotificationsManage)?;
    let settings = settings::load(&mut Conn::Pool(&state.core.db), ctx.tenant_id).await?;
    Ok(Json(shown(&state, settings)))
}

/// Replace the settings: which kinds are e-mailed (print job failed, order failed, fulfillment
/// failed, unmapped SKU) and to which addresses. Every field is required.
#[utoipa::path(put, path = "/api/v1/notifications/settings", tag = "notifications",
    request_body = SettingsInput,
    responses(
        (status = 200, description = "The settings as saved", body = NotificationSettings),
        (status = 400, description = "Invalid input, every problem listed", body = ErrorBody),
        (status = 401, description = "No verified user context", body = ErrorBody),
        (status = 403, description = "Missing notifications.manage", body = ErrorBody)))]
async fn put_settings(
    State(state): State<OrderState>,
    ctx: UserContext,
    origin: Origin,
    body: Result<Json<SettingsInput>, ApiError>,
) -> Result<Json<NotificationSettings>, ApiError> {
    ctx.require(Permission::NotificationsManage)?;
    let Json(body) = body?;
    let wanted = body.validate().map_err(ApiError::validation)?;
    let db = &state.core.db;
    let before = settings::load(&mut Conn::Pool(db), ctx.tenant_id).await?;
    let saved = settings::save(db, ctx.tenant_id, &wanted).await?;
    let describe = |s: &NotificationSettings| {
        json!({"recipients": s.recipients, "printJobFailed": s.print_job_failed,
            "orderFailed": s.order_failed, "fulfillmentFailed": s.fulfillment_failed,
            "unmappedSku": s.unmapped_sku})
    };
    let entry = AuditEntry::by(
        &ctx,
        &origin,
        actions::NOTIFICATION_SETTINGS_UPDATED,
        "notification-settings",
        ctx.tenant_id,
        json!({"before": describe(&before), "after": describe(&saved)}),
    );
    if let Err(e) = audit::record(db, &entry).await {
        tracing::error!(error = %e, action = entry.action, "could not write an audit log entry");
    }
    Ok(Json(shown(&state, saved)))
}
