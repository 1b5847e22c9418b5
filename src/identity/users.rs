//! Users and their roles.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::roles::UserRole;
use crate::infra::db::{Db, DbError, Tx};
use crate::{on_pool, on_tx};

#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub is_super_admin: bool,
    pub is_active: bool,
    /// Bumped to revoke every session of the user at once.
    pub session_epoch: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
impl User {
    /// A user held in memory only, for tests of what the gateway does with one it resolved.
    pub fn in_memory(id: Uuid) -> Self {
        let now = Utc::now();
        Self {
            id,
            tenant_id: Uuid::nil(),
            email: "someone@example.com".into(),
            name: "Someone".into(),
            password_hash: String::new(),
            is_super_admin: false,
            is_active: true,
            session_epoch: 0,
            created_at: now,
            updated_at: now,
        }
    }
}

/// What creating a user takes. `email` must already be normalized and `password_hash` an argon2 PHC.
#[derive(Debug, Clone)]
pub struct NewUser {
    pub tenant_id: Uuid,
    pub email: String,
    pub name: String,
    pub password_hash: String,
    pub roles: Vec<UserRole>,
    pub is_super_admin: bool,
}

const COLUMNS: &str = "id, tenant_id, email, name, password_hash, is_super_admin, is_active, \
                       session_epoch, created_at, updated_at";

/// Inserts the user and their roles; `None` if the e-mail address is taken.
pub async fn insert(tx: &mut Tx, new: &NewUser) -> Result<Option<User>, DbError> {
    let id = Uuid::now_v7();
    let now = Utc::now();
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO users (id, tenant_id, email, name, password_hash, is_super_admin, is_active, \
         created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, TRUE, $7, $7) \
         ON CONFLICT (email) DO NOTHING RETURNING {COLUMNS}"
    ));
    let user = on_tx!(tx, conn => {
        sqlx::query_as::<_, User>(sql)
            .bind(id)
            .bind(new.tenant_id)
            .bind(&new.email)
            .bind(&new.name)
            .bind(&new.password_hash)
            .bind(new.is_super_admin)
            .bind(now)
            .fetch_optional(&mut *conn)
            .await
    })?;
    let Some(user) = user else { return Ok(None) };
    for role in &new.roles {
        on_tx!(tx, conn => {
            sqlx::query("INSERT INTO user_roles (user_id, role_name) VALUES ($1, $2)")
                .bind(user.id)
                .bind(role.as_str())
                .execute(&mut *conn)
                .await
                .map(|r| r.rows_affected())
        })?;
    }
    Ok(Some(user))
}

/// Creates the user and their roles in a transaction of their own; `None` if the e-mail address is
/// taken (nothing is written then).
pub async fn create(db: &Db, new: &NewUser) -> Result<Option<User>, DbError> {
    let mut tx = db.begin().await?;
    let user = insert(&mut tx, new).await?;
    match user {
        Some(_) => tx.commit().await?,
        None => tx.rollback().await?,
    }
    Ok(user)
}

pub async fn count(db: &Db) -> Result<i64, DbError> {
    let count = on_pool!(db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users").fetch_one(pool).await
    })?;
    Ok(count)
}

pub async fn find_by_email(db: &Db, email: &str) -> Result<Option<User>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE email = $1"));
    let user = on_pool!(db, pool => {
        sqlx::query_as::<_, User>(sql).bind(email).fetch_optional(pool).await
    })?;
    Ok(user)
}

/// The user's roles, in a stable order.
pub async fn roles_of(db: &Db, user_id: Uuid) -> Result<Vec<UserRole>, DbError> {
    let names = on_pool!(db, pool => {
        sqlx::query_scalar::<_, String>(
            "SELECT role_name FROM user_roles WHERE user_id = $1 ORDER BY role_name",
        )
        .bind(user_id)
        .fetch_all(pool)
        .await
    })?;
    Ok(names.iter().filter_map(|n| UserRole::parse(n)).collect())
}

pub async fn find_by_id(db: &Db, id: Uuid) -> Result<Option<User>, DbError> {
    let sql = sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM users WHERE id = $1"));
    let user = on_pool!(db, pool => {
        sqlx::query_as::<_, User>(sql).bind(id).fetch_optional(pool).await
    })?;
    Ok(user)
}

/// The user a sign-in made in session epoch `epoch` still speaks for: active, and the epoch not
/// moved on since (a new password or a deactivation moves it, ending every sign-in).
pub async fn still_signed_in(db: &Db, id: Uuid, epoch: i64) -> Result<Option<User>, DbError> {
    let user = find_by_id(db, id).await?;
    Ok(user.filter(|u| u.is_active && u.session_epoch == epoch))
}

/// Stores a new password hash and bumps the session epoch, which revokes every existing session;
/// returns the new epoch so the caller can keep its own session.
pub async fn change_password(db: &Db, id: Uuid, password_hash: &str) -> Result<i64, DbError> {
    let now = Utc::now();
    let mut tx = db.begin().await?;
    let (epoch, tenant_id) = on_tx!(&mut tx, conn => {
        sqlx::query_as::<_, (i64, Uuid)>(
            "UPDATE users SET password_hash = $2, session_epoch = session_epoch + 1, updated_at = $3 \
             WHERE id = $1 RETURNING session_epoch, tenant_id",
        )
        .bind(id)
        .bind(password_hash)
        .bind(now)
        .fetch_one(&mut *conn)
        .await
    })?;
    sessions_ended(&mut tx, tenant_id, id, now).await?;
    tx.commit().await?;
    Ok(epoch)
}

/// Records, in the transaction that ends the user's sessions, that what was opened under them
/// elsewhere must end too: the order service is to forget their browsers' push subscriptions
/// (`push_revocations`, which the gateway carries out). A sessions' end and
/// its record commit together, or neither does.
async fn sessions_ended(
    tx: &mut Tx,
    tenant_id: Uuid,
    user_id: Uuid,
    at: DateTime<Utc>,
) -> Result<(), DbError> {
    on_tx!(tx, conn => {
        sqlx::query(
            "INSERT INTO push_revocations \
             (user_id, tenant_id, ended_at, next_attempt_at, attempts, last_error) \
             VALUES ($1, $2, $3, $3, 0, NULL) \
             ON CONFLICT (user_id) DO UPDATE SET tenant_id = excluded.tenant_id, \
             ended_at = excluded.ended_at, next_attempt_at = excluded.next_attempt_at, \
             attempts = 0, last_error = NULL",
        )
        .bind(user_id)
        .bind(tenant_id)
        .bind(at)
        .execute(&mut *conn)
        .await
        .map(drop)
    })?;
    Ok(())
}

/// One page of a tenant's users, oldest first, and how many there are.
pub async fn list(
    db: &Db,
    tenant_id: Uuid,
    limit: i64,
    offset: i64,
) -> Result<(Vec<User>, i64), DbError> {
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY created_at, id LIMIT $2 OFFSET $3"
    ));
    // One snapshot, so the page and the count agree while users are added.
    let mut tx = db.snapshot().await?;
    let users = on_tx!(&mut tx, c => {
        sqlx::query_as::<_, User>(sql)
            .bind(tenant_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(&mut *c)
            .await
    })?;
    let total = on_tx!(&mut tx, c => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users WHERE tenant_id = $1")
            .bind(tenant_id)
            .fetch_one(&mut *c)
            .await
    })?;
    tx.commit().await?;
    Ok((users, total))
}

/// The roles of every user of a tenant, in one query.
pub async fn roles_in_tenant(
    db: &Db,
    tenant_id: Uuid,
) -> Result<std::collections::HashMap<Uuid, Vec<UserRole>>, DbError> {
    let rows = on_pool!(db, pool => {
        sqlx::query_as::<_, (Uuid, String)>(
            "SELECT ur.user_id, ur.role_name FROM user_roles ur JOIN users u ON u.id = ur.user_id \
             WHERE u.tenant_id = $1 ORDER BY ur.role_name",
        )
        .bind(tenant_id)
        .fetch_all(pool)
        .await
    })?;
    let mut roles: std::collections::HashMap<Uuid, Vec<UserRole>> = Default::default();
    for (user_id, name) in rows {
        if let Some(role) = UserRole::parse(&name) {
            roles.entry(user_id).or_default().push(role);
        }
    }
    Ok(roles)
}

/// A partial update of a user; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserChanges {
    pub name: Option<String>,
    pub is_active: Option<bool>,
    pub is_super_admin: Option<bool>,
    pub password_hash: Option<String>,
    pub roles: Option<Vec<UserRole>>,
}

/// Applies `changes` in one transaction. A new password or a deactivation bumps the session
/// epoch, so the user's sessions end at once.
pub async fn update(db: &Db, id: Uuid, changes: &UserChanges) -> Result<Option<User>, DbError> {
    let now = Utc::now();
    let revoke = changes.password_hash.is_some() || changes.is_active == Some(false);
    let mut tx = db.begin().await?;
    let updated = on_tx!(&mut tx, conn => {
        sqlx::query_scalar::<_, Uuid>(
            "UPDATE users SET name = COALESCE($2, name), is_active = COALESCE($3, is_active), \
             is_super_admin = COALESCE($4, is_super_admin), \
             password_hash = COALESCE($5, password_hash), \
             session_epoch = session_epoch + $6, updated_at = $7 WHERE id = $1 RETURNING tenant_id",
        )
        .bind(id)
        .bind(changes.name.as_deref())
        .bind(changes.is_active)
        .bind(changes.is_super_admin)
        .bind(changes.password_hash.as_deref())
        .bind(i64::from(revoke))
        .bind(now)
        .fetch_optional(&mut *conn)
        .await
    })?;
    let Some(tenant_id) = updated else {
        tx.rollback().await?;
        return Ok(None);
    };
    if revoke {
        sessions_ended(&mut tx, tenant_id, id, now).await?;
    }
    if let Some(roles) = &changes.roles {
        on_tx!(&mut tx, conn => {
            sqlx::query("DELETE FROM user_roles WHERE user_id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await
                .map(|_| ())
        })?;
        for role in roles {
            on_tx!(&mut tx, conn => {
                sqlx::query("INSERT INTO user_roles (user_id, role_name) VALUES ($1, $2)")
                    .bind(id)
                    .bind(role.as_str())
                    .execute(&mut *conn)
                    .await
                    .map(|_| ())
            })?;
        }
    }
    tx.commit().await?;
    find_by_id(db, id).await
}

/// Deletes the user (their roles go with them); whether one was deleted.
pub async fn delete(db: &Db, id: Uuid) -> Result<bool, DbError> {
    let mut tx = db.begin().await?;
    let deleted = on_tx!(&mut tx, conn => {
        sqlx::query_scalar::<_, Uuid>("DELETE FROM users WHERE id = $1 RETURNING tenant_id")
            .bind(id)
            .fetch_optional(&mut *conn)
            .await
    })?;
    let Some(tenant_id) = deleted else {
        tx.rollback().await?;
        return Ok(false);
    };
    sessions_ended(&mut tx, tenant_id, id, Utc::now()).await?;
    tx.commit().await?;
    Ok(true)
}
