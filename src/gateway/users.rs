//! User and role management (SPEC §5.1): permission `users.manage`, within the caller's tenant
//! (super admins in every tenant). Every change is audited.

use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use uuid::Uuid;

use super::GatewayState;
use super::auth::{Authenticated, CurrentUser, RequestMeta, UserView};
use super::proxy::live::Revocation;
use crate::http::extract::{Json, Path, Query};
use crate::http::pagination::{Page, PageQuery};
use crate::http::{ApiError, ErrorBody};
use crate::identity::roles::{self, Permission, UserRole};
use crate::identity::users::{self, NewUser, User, UserChanges};
use crate::identity::{email, password};
use crate::order::audit::actions;

pub fn routes() -> OpenApiRouter<GatewayState> {
    OpenApiRouter::new()
        .routes(routes!(list_users, create_user))
        .routes(routes!(get_user, update_user, delete_user))
        .routes(routes!(list_roles))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub struct TenantQuery {
    /// Another tenant (super admins only).
    pub tenant_id: Option<Uuid>,
}

fn manager(auth: &Authenticated) -> Result<(), ApiError> {
    auth.context.require(Permission::UsersManage)
}

/// The user `id` as the caller may see it: another tenant's user is a 404, never a 403.
async fn visible_user(
    state: &GatewayState,
    auth: &Authenticated,
    id: Uuid,
) -> Result<User, ApiError> {
    users::find_by_id(&state.db, id)
        .await?
        .filter(|u| u.tenant_id == auth.context.tenant_id || auth.context.is_super_admin)
        .ok_or_else(|| ApiError::not_found("User not found"))
}

/// The user `id`, if the caller may also change it: 403 when it holds a permission or flag the
/// caller lacks (SPEC §5.1), so a tenant admin cannot take over a super admin.
async fn manageable_user(
    state: &GatewayState,
    auth: &Authenticated,
    id: Uuid,
) -> Result<(User, Vec<UserRole>), ApiError> {
    let user = visible_user(state, auth, id).await?;
    let roles = users::roles_of(&state.db, user.id).await?;
    if auth.context.may_manage(&roles, user.is_super_admin) {
        Ok((user, roles))
    } else if user.is_super_admin {
        Err(ApiError::forbidden(
            "Only a super admin can manage a super admin",
        ))
    } else {
        Err(ApiError::forbidden(
            "You cannot manage a user who holds permissions you do not",
        ))
    }
}

fn cannot_grant() -> ApiError {
    ApiError::forbidden("You cannot grant permissions you do not hold")
}

async fn view(state: &GatewayState, user: &User) -> Result<UserView, ApiError> {
    let roles = users::roles_of(&state.db, user.id).await?;
    Ok(UserView::new(user, &roles))
}

/// The users of the caller's tenant.
#[utoipa::path(get, path = "/api/v1/users", tag = "users", params(PageQuery, TenantQuery),
    responses(
        (status = 200, description = "One page of users", body = Page<UserView>),
        (status = 400, description = "Bad paging", body = ErrorBody),
        (status = 403, description = "Missing users.manage", body = ErrorBody),
        (status = 404, description = "Another tenant, asked for by someone who is not a super admin", body = ErrorBody)))]
async fn list_users(
    State(state): State<GatewayState>,
    CurrentUser(auth): CurrentUser,
    Query(page): Query<PageQuery>,
    Query(tenant): Query<TenantQuery>,
) -> Result<Json<Page<UserView>>, ApiError> {
    manager(&auth)?;
    let page = page.validate().map_err(ApiError::validation)?;
    let tenant_id = match tenant.tenant_id {
        Some(other) if other != auth.context.tenant_id && !auth.context.is_super_admin => {
            return Err(ApiError::not_found("Tenant not found"));
        }
        Some(other) => other,
        None => auth.context.tenant_id,
    };
    let (limit, offset) = page.limit_offset();
    let db = &state.db;
    let (list, total) = users::list(db, tenant_id, limit, offset).await?;
    let mut roles = users::roles_in_tenant(db, tenant_id).await?;
    let items = list
        .iter()
        .map(|u| UserView::new(u, &roles.remove(&u.id).unwrap_or_default()))
        .collect();
    Ok(Json(Page::new(items, total, page)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUser {
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub password: String,
    #[serde(default)]
    pub roles: Vec<UserRole>,
    #[serde(default)]
    pub is_super_admin: bool,
}

/// Create a user in the caller's tenant.
#[utoipa::path(post, path = "/api/v1/users", tag = "users", request_body = CreateUser,
    responses(
        (status = 201, description = "Created", body = UserView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Missing users.manage, or the user holds (or would be granted) a permission or flag the caller lacks", body = ErrorBody),
        (status = 409, description = "The e-mail address is taken", body = ErrorBody)))]
async fn create_user(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    CurrentUser(auth): CurrentUser,
    Json(body): Json<CreateUser>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    manager(&auth)?;
    let mut problems = Vec::new();
    let address = email::normalize(&body.email)
        .map_err(|m| problems.push(m))
        .ok();
    if let Err(e) = password::check_policy(&body.password) {
        problems.push(e.to_string());
    }
    if body.roles.is_empty() {
        problems.push("roles must contain at least 1 element".to_owned());
    }
    let Some(address) = address.filter(|_| problems.is_empty()) else {
        return Err(ApiError::validation(problems));
    };
    if body.is_super_admin && !auth.context.is_super_admin {
        return Err(ApiError::forbidden(
            "Only a super admin can create a super admin",
        ));
    }
    let roles = roles::distinct(&body.roles);
    if !auth.context.may_manage(&roles, body.is_super_admin) {
        return Err(cannot_grant());
    }
    let password_hash = password::hash(&body.password)
        .await
        .map_err(ApiError::internal)?;
    let new = NewUser {
        tenant_id: auth.context.tenant_id,
        email: address.clone(),
        name: body.name.trim().to_owned(),
        password_hash,
        roles,
        is_super_admin: body.is_super_admin,
    };
    // The same answer whichever tenant holds the address: nothing of another tenant is named.
    let Some(user) = users::create(&state.db, &new).await? else {
        return Err(ApiError::conflict(
            "A user with this e-mail address already exists",
        ));
    };
    let details =
        json!({"email": user.email, "roles": new.roles, "isSuperAdmin": user.is_super_admin});
    super::audit::user_changed(&state, &meta, &auth, actions::USER_CREATED, &user, details).await;
    Ok((StatusCode::CREATED, Json(UserView::new(&user, &new.roles))))
}

/// One user.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses(
        (status = 200, description = "The user", body = UserView),
        (status = 403, description = "Missing users.manage", body = ErrorBody),
        (status = 404, description = "No such user in this tenant", body = ErrorBody)))]
async fn get_user(
    State(state): State<GatewayState>,
    CurrentUser(auth): CurrentUser,
    Path(id): Path<Uuid>,
) -> Result<Json<UserView>, ApiError> {
    manager(&auth)?;
    let user = visible_user(&state, &auth, id).await?;
    Ok(Json(view(&state, &user).await?))
}

#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpdateUser {
    pub name: Option<String>,
    pub roles: Option<Vec<UserRole>>,
    pub is_active: Option<bool>,
    pub is_super_admin: Option<bool>,
    /// A new password; the user's sessions end.
    pub password: Option<String>,
}

/// Change a user's name, roles, activation or password. Deactivating or resetting the password
/// ends the user's sessions.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    request_body = UpdateUser,
    responses(
        (status = 200, description = "The updated user", body = UserView),
        (status = 400, description = "Invalid input", body = ErrorBody),
        (status = 403, description = "Missing users.manage, or the user holds (or would be granted) a permission or flag the caller lacks", body = ErrorBody),
        (status = 404, description = "No such user in this tenant", body = ErrorBody)))]
async fn update_user(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    CurrentUser(auth): CurrentUser,
    Path(id): Path<Uuid>,
    Json(body): Json<UpdateUser>,
) -> Result<Json<UserView>, ApiError> {
    manager(&auth)?;
    let (user, _) = manageable_user(&state, &auth, id).await?;
    let mut problems = Vec::new();
    if let Some(Err(e)) = body.password.as_deref().map(password::check_policy) {
        problems.push(e.to_string());
    }
    if body.roles.as_ref().is_some_and(|r| r.is_empty()) {
        problems.push("roles must contain at least 1 element".to_owned());
    }
    let is_self = user.id == auth.user.id;
    if is_self && body.password.is_some() {
        // Here no current password is asked: a session someone else got hold of could take the
        // account for good.
        problems.push(
            "Change your own password at /api/v1/auth/change-password, with the current one"
                .to_owned(),
        );
    }
    if is_self && body.is_active == Some(false) {
        problems.push("You cannot deactivate your own account".to_owned());
    }
    if is_self
        && body
            .roles
            .as_ref()
            .is_some_and(|r| !r.contains(&UserRole::Admin))
    {
        problems.push("You cannot remove your own admin role".to_owned());
    }
    if !problems.is_empty() {
        return Err(ApiError::validation(problems));
    }
    if body.is_super_admin.is_some() && !auth.context.is_super_admin {
        return Err(ApiError::forbidden(
            "Only a super admin can grant or revoke super admin",
        ));
    }
    let roles = body.roles.as_deref().map(roles::distinct);
    let super_admin_after = body.is_super_admin.unwrap_or(user.is_super_admin);
    if let Some(granted) = &roles {
        if !auth.context.may_manage(granted, super_admin_after) {
            return Err(cannot_grant());
        }
    }
    let password_hash = match body.password.as_deref() {
        Some(p) => Some(password::hash(p).await.map_err(ApiError::internal)?),
        None => None,
    };
    let changes = UserChanges {
        name: body.name.as_ref().map(|n| n.trim().to_owned()),
        is_active: body.is_active,
        is_super_admin: body.is_super_admin,
        password_hash,
        roles: roles.clone(),
    };
    let updated = users::update(&state.db, id, &changes).await;
    state.auth_cache.clear();
    let updated = updated?.ok_or_else(|| ApiError::not_found("User not found"))?;
    // A change that ended the user's sessions (a new epoch: a new password, or deactivated)
    // ends what was opened under them too.
    if updated.session_epoch != user.session_epoch {
        sessions_ended(&state, &updated).await;
    }
    let action = if roles.is_some() {
        actions::USER_ROLES_CHANGED
    } else {
        actions::USER_UPDATED
    };
    let details = json!({
        "name": body.name, "roles": roles, "isActive": body.is_active,
        "isSuperAdmin": body.is_super_admin, "passwordReset": body.password.is_some(),
    });
    super::audit::user_changed(&state, &meta, &auth, action, &updated, details).await;
    Ok(Json(view(&state, &updated).await?))
}

/// Delete a user.
#[utoipa::path(delete, path = "/api/v1/users/{id}", tag = "users", params(("id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Deleting yourself", body = ErrorBody),
        (status = 403, description = "Missing users.manage, or the user holds (or would be granted) a permission or flag the caller lacks", body = ErrorBody),
        (status = 404, description = "No such user in this tenant", body = ErrorBody)))]
async fn delete_user(
    State(state): State<GatewayState>,
    meta: RequestMeta,
    CurrentUser(auth): CurrentUser,
    Path(id): Path<Uuid>,
) -> Result<StatusCode, ApiError> {
    manager(&auth)?;
    let (user, _) = manageable_user(&state, &auth, id).await?;
    if user.id == auth.user.id {
        return Err(ApiError::validation(vec![
            "You cannot delete your own account".to_owned(),
        ]));
    }
    users::delete(&state.db, id).await?;
    state.auth_cache.clear();
    sessions_ended(&state, &user).await;
    let details = json!({"email": user.email});
    super::audit::user_changed(&state, &meta, &auth, actions::USER_DELETED, &user, details).await;
    Ok(StatusCode::NO_CONTENT)
}

/// The user's sessions ended (a new password, deactivated, deleted): so do their open connections
/// and their browsers' push subscriptions.
pub(crate) async fn sessions_ended(state: &GatewayState, user: &User) {
    state.live.revoke(Revocation::user(user.id)).await;
    state.push_revocations.sessions_ended(user.id).await;
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RoleView {
    pub name: UserRole,
    pub description: String,
    pub permissions: Vec<String>,
}

/// The roles and what each grants.
#[utoipa::path(get, path = "/api/v1/roles", tag = "users", responses(
    (status = 200, description = "Every role", body = Vec<RoleView>),
    (status = 403, description = "Missing users.manage", body = ErrorBody)))]
async fn list_roles(CurrentUser(auth): CurrentUser) -> Result<Json<Vec<RoleView>>, ApiError> {
    manager(&auth)?;
    Ok(Json(
        UserRole::ALL
            .into_iter()
            .map(|role| RoleView {
                name: role,
                description: role.description().to_owned(),
                permissions: role
                    .permissions()
                    .iter()
                    .map(|p| p.as_str().to_owned())
                    .collect(),
            })
            .collect(),
    ))
}

#[cfg(test)]
#[path = "users_tests.rs"]
mod tests;
