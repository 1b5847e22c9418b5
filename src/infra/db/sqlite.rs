//! The embedded database: one SQLite file, WAL mode, durable commits.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::DbError;

pub(super) async fn connect(url: &str, max_connections: u32) -> Result<SqlitePool, DbError> {
    let failed = |reason: String| DbError::Connect {
        url: url.to_owned(),
        reason,
    };
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|e| failed(e.to_string()))?
        .create_if_missing(true)
        .foreign_keys(true)
        // WAL lets readers run beside the one writer; NORMAL is durable in WAL mode except for the
        // last transactions before a power loss, never corrupting.
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10));

    let path = options.get_filename();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| failed(format!("cannot create folder {}: {e}", dir.display())))?;
    }

    SqlitePoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .map_err(|e| failed(e.to_string()))
}
