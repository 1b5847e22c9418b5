//! Authentication at the gateway (SPEC §5.1): sign-in with a session cookie, the current user,
//! password changes, and the middleware that turns a session into a verified user for everything
//! behind the gateway.

pub mod bypass;
pub mod cache;
pub mod lockout;
mod meta;
mod middleware;
pub mod origin;
pub mod public;
mod routes;
pub mod session;
pub mod tokens;

pub use meta::RequestMeta;
pub use middleware::authenticate;
pub(crate) use middleware::serve_authenticated;
use middleware::unauthorized;
pub use routes::{ChangePasswordRequest, LoginRequest, RefreshRequest, TokenResponse, routes};

use std::sync::{Arc, OnceLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::http::ApiError;
use crate::identity::context::{ContextSigner, PreparedContext, UserContext};
use crate::identity::roles::{UserRole, permissions_of};
use crate::identity::users::User;

/// A signed-in user, established by [`authenticate`] for the rest of the request. Cloned out of
/// the identity cache on every request, so what it holds is shared, not copied.
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub user: Arc<User>,
    pub context: Arc<UserContext>,
    /// Signed in with a bearer token of this refresh token family (`None`: a session cookie).
    pub token_family: Option<Uuid>,
    /// When the bearer token it was signed in with expires (`None`: a session cookie).
    pub token_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    /// The context made ready for the gateway's signer on first use, then shared by every request
    /// served from the same identity-cache entry.
    prepared: Arc<OnceLock<PreparedContext>>,
}

impl Authenticated {
    pub fn new(user: User, roles: Vec<UserRole>) -> Self {
        let context = UserContext {
            user_id: user.id,
            tenant_id: user.tenant_id,
            email: user.email.clone(),
            permissions: permissions_of(&roles),
            roles,
            is_super_admin: user.is_super_admin,
        };
        Self {
            user: Arc::new(user),
            context: Arc::new(context),
            token_family: None,
            token_expires_at: None,
            prepared: Arc::default(),
        }
    }

    /// The user context ready to be signed by `signer`, the gateway's one signer.
    pub fn prepared(&self, signer: &ContextSigner) -> &PreparedContext {
        self.prepared.get_or_init(|| signer.prepare(&self.context))
    }

    pub fn view(&self) -> UserView {
        UserView::new(&self.user, &self.context.roles)
    }
}

/// `user` in responses (SPEC §5.1).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: Uuid,
    pub email: String,
    pub name: String,
    pub tenant_id: Uuid,
    pub roles: Vec<UserRole>,
    pub permissions: Vec<String>,
    pub is_super_admin: bool,
}

impl UserView {
    pub fn new(user: &User, roles: &[UserRole]) -> Self {
        Self {
            id: user.id,
            email: user.email.clone(),
            name: user.name.clone(),
            tenant_id: user.tenant_id,
            roles: roles.to_vec(),
            permissions: permissions_of(roles)
                .iter()
                .map(|p| p.as_str().to_owned())
                .collect(),
            is_super_admin: user.is_super_admin,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserEnvelope {
    pub user: UserView,
}

/// The signed-in user of this request; 401 when there is none.
pub struct CurrentUser(pub Authenticated);

impl<S: Send + Sync> FromRequestParts<S> for CurrentUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Authenticated>()
            .cloned()
            .map(CurrentUser)
            .ok_or_else(unauthorized)
    }
}

#[cfg(test)]
mod tests;
