//! The SQL database port (SPEC §2): SQLite embedded by default, PostgreSQL when configured, picked
//! from the URL scheme once at start-up.
//!
//! Repositories write their SQL once: [`on_pool!`] and [`on_tx!`] expand the same query text for
//! both backends, so the two dialects only diverge where they must (in the migrations, and in the
//! rare query that needs `FOR UPDATE SKIP LOCKED`).

mod postgres;
mod sqlite;

use std::time::{Duration, Instant};

use sqlx::{PgPool, Postgres, Sqlite, SqlitePool, Transaction};

/// A handle on the configured database; cheap to clone.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction on either backend. Passed explicitly to every write that must commit together
/// (a change and its outbox event, a handler's writes and its dedupe record).
pub enum Tx {
    Sqlite(Transaction<'static, Sqlite>),
    Postgres(Transaction<'static, Postgres>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Runs `$body` with `$pool` bound to the backend's pool: one query text, both databases.
#[macro_export]
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::infra::db::Db::Sqlite($pool) => $body,
            $crate::infra::db::Db::Postgres($pool) => $body,
        }
    };
}

/// Runs `$body` with `$conn` bound to the transaction's connection (`&mut *conn` for executors).
#[macro_export]
macro_rules! on_tx {
    ($tx:expr, $conn:ident => $body:expr) => {
        match $tx {
            $crate::infra::db::Tx::Sqlite(tx) => {
                let $conn = &mut **tx;
                $body
            }
            $crate::infra::db::Tx::Postgres(tx) => {
                let $conn = &mut **tx;
                $body
            }
        }
    };
}

/// Where a query runs: on the pool, or on an open transaction's connection. Repositories take it
/// for reads that serve both a plain request and a transaction (which must not take a second
/// connection from the pool while it holds one: enough such transactions at once would wait on
/// each other until the pool's timeout).
pub enum Conn<'a> {
    Pool(&'a Db),
    Tx(&'a mut Tx),
}

impl<'a> From<&'a Db> for Conn<'a> {
    fn from(db: &'a Db) -> Self {
        Conn::Pool(db)
    }
}

impl<'a> From<&'a mut Tx> for Conn<'a> {
    fn from(tx: &'a mut Tx) -> Self {
        Conn::Tx(tx)
    }
}

/// Runs `$body` with `$c` bound to an executor of the [`Conn`] behind `$conn` (a `&mut Conn`): the
/// pool, or the transaction's connection. One query text, both databases, either place.
#[macro_export]
macro_rules! on_conn {
    ($conn:expr, $c:ident => $body:expr) => {
        match $conn {
            $crate::infra::db::Conn::Pool(db) => match *db {
                $crate::infra::db::Db::Sqlite($c) => $body,
                $crate::infra::db::Db::Postgres($c) => $body,
            },
            $crate::infra::db::Conn::Tx(tx) => match &mut **tx {
                $crate::infra::db::Tx::Sqlite(tx) => {
                    let $c = &mut **tx;
                    $body
                }
                $crate::infra::db::Tx::Postgres(tx) => {
                    let $c = &mut **tx;
                    $body
                }
            },
        }
    };
}

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database.url {url}: {reason}")]
    Connect { url: String, reason: String },
    #[error("migrating the database failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Sqlx(#[from] sqlx::Error),
}

impl DbError {
    /// A unique constraint was violated: callers turn this into a 409.
    pub fn is_unique_violation(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e)) if e.is_unique_violation())
    }

    /// The database cannot store a text the request brought: PostgreSQL takes no NUL character
    /// in text (SQLSTATE 22021) nor `\u0000` in JSON (22P05); SQLite takes both. A fault of the
    /// input (callers turn it into a 400), never of the server.
    pub fn is_unstorable_text(&self) -> bool {
        matches!(self, DbError::Sqlx(sqlx::Error::Database(e))
            if e.code().is_some_and(|code| matches!(&*code, "22021" | "22P05")))
    }

    /// The database did not answer, or went away mid-query: stopped, restarting, unreachable, out
    /// of connections. A passing condition the caller can wait out (callers turn it into a 503),
    /// never a fault of the request.
    pub fn is_unavailable(&self) -> bool {
        match self {
            DbError::Connect { .. } => true,
            DbError::Migrate(_) => false,
            DbError::Sqlx(e) => match e {
                sqlx::Error::PoolTimedOut
                | sqlx::Error::PoolClosed
                | sqlx::Error::Io(_)
                | sqlx::Error::Tls(_) => true,
                // SQLSTATE class 08 (connection exception), the server shutting down or starting
                // (57P01-57P03), too many connections (53300).
                sqlx::Error::Database(e) => e.code().is_some_and(|code| {
                    code.starts_with("08")
                        || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
                }),
                _ => false,
            },
        }
    }
}

/// Our migrations are recorded in their own table, so job-queue libraries that keep theirs in
/// `_sqlx_migrations` on the same database do not collide with ours.
const MIGRATIONS_TABLE: &str = "forma_migrations";

impl Db {
    /// Connects to `url` (`sqlite://…` or `postgres://…`). The SQLite file and its folder are
    /// created when missing.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self, DbError> {
        if crate::config::is_postgres_url(url) {
            postgres::connect(url, max_connections)
                .await
                .map(Db::Postgres)
        } else {
            sqlite::connect(url, max_connections).await.map(Db::Sqlite)
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    /// Applies the embedded migrations of this backend. Safe to run from several processes at
    /// once: sqlx takes an advisory lock on PostgreSQL, SQLite serialises writers.
    pub async fn migrate(&self) -> Result<(), DbError> {
        match self {
            Db::Sqlite(pool) => {
                let mut migrator = sqlx::migrate!("migrations/sqlite");
                migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
                migrator.run(pool).await?;
            }
            Db::Postgres(pool) => {
                let mut migrator = sqlx::migrate!("migrations/postgres");
                migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
                migrator.run(pool).await?;
            }
        }
        Ok(())
    }

    pub async fn begin(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(pool.begin().await?),
        })
    }

    /// A read-only transaction whose statements all see one snapshot of the database, for reads
    /// that must agree with each other: a page of a listing and the count of everything matching
    /// it, taken while writers keep appending. Commit it (or drop it) when done.
    ///
    /// PostgreSQL's default isolation (READ COMMITTED) takes a new snapshot per statement, so this
    /// asks for REPEATABLE READ, which a read-only transaction gets without serialisation
    /// failures. A SQLite transaction in WAL mode keeps the snapshot of its first read to its end.
    pub async fn snapshot(&self) -> Result<Tx, DbError> {
        Ok(match self {
            Db::Sqlite(pool) => Tx::Sqlite(pool.begin().await?),
            Db::Postgres(pool) => Tx::Postgres(
                pool.begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await?,
            ),
        })
    }

    /// One round trip, for readiness checks; returns how long it took.
    pub async fn ping(&self) -> Result<Duration, DbError> {
        let started = Instant::now();
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))?;
        Ok(started.elapsed())
    }

    /// Sets timestamp `column` of the rows `ids` of `table` to `at`, in one statement: what a
    /// worker that went through some rows records of each (when it last looked at them).
    pub async fn stamp(
        &self,
        table: &'static str,
        column: &'static str,
        ids: &[uuid::Uuid],
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<(), DbError> {
        if ids.is_empty() {
            return Ok(());
        }
        let placeholders = (2..=ids.len() + 1)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!("UPDATE {table} SET {column} = $1 WHERE id IN ({placeholders})");
        on_pool!(self, pool => {
            let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(at);
            for id in ids {
                query = query.bind(*id);
            }
            query.execute(pool).await.map(|_| ())
        })?;
        Ok(())
    }

    /// Closes every connection; used at shutdown so SQLite checkpoints its WAL.
    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

impl Tx {
    pub async fn commit(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await?,
            Tx::Postgres(tx) => tx.commit().await?,
        }
        Ok(())
    }

    pub async fn rollback(self) -> Result<(), DbError> {
        match self {
            Tx::Sqlite(tx) => tx.rollback().await?,
            Tx::Postgres(tx) => tx.rollback().await?,
        }
        Ok(())
    }
}

/// The `LIKE` pattern of "contains `text`, any case": `text` lower-cased, its `%`, `_` and `\`
/// taken literally. The query compares it with `LOWER(column) LIKE $n ESCAPE '\'`, the same on
/// both databases (SQLite's `LOWER` folds ASCII letters only).
pub fn contains_pattern(text: &str) -> String {
    let mut pattern = String::with_capacity(text.len() + 2);
    pattern.push('%');
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests;
