//! First run (SPEC §2): an empty database gets tenant `default` and the user `admin@localhost`.

use super::roles::UserRole;
use super::users::{self, NewUser};
use super::{password, tenants};
use crate::infra::db::Db;

use crate::config::Secret;

pub const ADMIN_EMAIL: &str = "admin@localhost";
/// The variable that sets `admin_password`, named in the log line.
const ADMIN_PASSWORD_ENV: &str = "FORMA_ADMIN_PASSWORD";

/// Idempotent and safe to race: several processes starting on one empty database create one admin,
/// and only the process whose insert won logs the password.
pub async fn ensure_first_admin(db: &Db, admin_password: Option<&Secret>) -> anyhow::Result<()> {
    let tenant = tenants::ensure(db, tenants::DEFAULT_SLUG, "Default").await?;
    if users::count(db).await? > 0 {
        return Ok(());
    }
    let (password, generated) = match admin_password.map(Secret::expose) {
        Some(p) if !p.is_empty() => {
            // The super admin's password meets the policy every other password meets.
            password::check_policy(p)
                .map_err(|e| anyhow::anyhow!("{ADMIN_PASSWORD_ENV} (admin_password): {e}"))?;
            (p.to_owned(), false)
        }
        _ => (password::generate(), true),
    };
    let password_hash = password::hash(&password).await?;
    let created = users::create(
        db,
        &NewUser {
            tenant_id: tenant.id,
            email: ADMIN_EMAIL.to_owned(),
            name: "Administrator".to_owned(),
            password_hash,
            roles: vec![UserRole::Admin],
            is_super_admin: true,
        },
    )
    .await?;
    match (created, generated) {
        (None, _) => {}
        (Some(_), true) => tracing::warn!(
            email = ADMIN_EMAIL,
            password = %password,
            "created the first admin user with a random password; it is shown only this once, \
             change it after signing in (or set {ADMIN_PASSWORD_ENV} before the first start)"
        ),
        (Some(_), false) => tracing::info!(
            email = ADMIN_EMAIL,
            "created the first admin user with the password from {ADMIN_PASSWORD_ENV}"
        ),
    }
    Ok(())
}
