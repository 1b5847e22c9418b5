//! Retention of the SQL backends' job tables (SQLite's `Jobs`, PostgreSQL's `apalis.jobs`): the
//! same deletes, each backend naming its own table.
//!
//! A chunk of rows per statement, each its own transaction: publishers and workers get the write
//! lock between chunks instead of waiting out one long delete (benches/bus.sh saw 100-200 ms
//! stalls on SQLite when 20 000 completed jobs went in one statement).

use super::BusError;
use crate::infra::db::Db;

/// Rows deleted per statement.
const TRIM_CHUNK: i64 = 500;

/// For one state, the SQL of one backend: the newest job of a queue (`$1`) beyond `$2` kept
/// ones, and the delete of up to `$3` jobs of the queue in that state from that one (`$2`) down.
pub(super) struct StateTrim {
    pub(super) first: &'static str,
    pub(super) chunk: &'static str,
}

/// The SQL of one backend's retention.
pub(super) struct TrimSql {
    /// The queues that have jobs.
    pub(super) queues: &'static str,
    pub(super) completed: StateTrim,
    pub(super) dead: StateTrim,
}

/// Builds a [`StateTrim`] for `$table` (whose rows are deleted by `$rowid`) and the condition
/// `$state` of one state.
macro_rules! state_trim {
    ($table:literal, $rowid:literal, $state:expr) => {
        $crate::events::bus::sql_trim::StateTrim {
            first: concat!(
                "SELECT id FROM ",
                $table,
                " WHERE job_type = $1 AND ",
                $state,
                " ORDER BY id DESC LIMIT 1 OFFSET $2"
            ),
            chunk: concat!(
                "DELETE FROM ",
                $table,
                " WHERE ",
                $rowid,
                " IN (SELECT ",
                $rowid,
                " FROM ",
                $table,
                " WHERE job_type = $1 AND ",
                $state,
                " AND id <= $2 LIMIT $3)"
            ),
        }
    };
}
pub(super) use state_trim;

/// Deletes, per queue, the completed jobs beyond the newest `completed_keep` and the dead ones
/// beyond the newest `dead_keep` (newest by id: the last pushed, as on Redis).
pub(super) async fn trim(
    db: &Db,
    sql: &TrimSql,
    completed_keep: usize,
    dead_keep: usize,
) -> Result<u64, BusError> {
    let queues: Vec<String> = crate::on_pool!(db, pool => {
        sqlx::query_scalar(sql.queues).fetch_all(pool).await
    })
    .map_err(storage)?;
    let mut deleted = 0;
    for queue in &queues {
        deleted += trim_state(db, queue, completed_keep, &sql.completed).await?;
        deleted += trim_state(db, queue, dead_keep, &sql.dead).await?;
    }
    Ok(deleted)
}

async fn trim_state(db: &Db, queue: &str, keep: usize, sql: &StateTrim) -> Result<u64, BusError> {
    let keep = i64::try_from(keep).unwrap_or(i64::MAX);
    let first: Option<String> = crate::on_pool!(db, pool => {
        sqlx::query_scalar(sql.first)
            .bind(queue)
            .bind(keep)
            .fetch_optional(pool)
            .await
    })
    .map_err(storage)?;
    let Some(first) = first else {
        return Ok(0);
    };
    let mut deleted = 0;
    loop {
        let done = crate::on_pool!(db, pool => {
            sqlx::query(sql.chunk)
                .bind(queue)
                .bind(&first)
                .bind(TRIM_CHUNK)
                .execute(pool)
                .await
                .map(|done| done.rows_affected())
        })
        .map_err(storage)?;
        deleted += done;
        if done < TRIM_CHUNK as u64 {
            return Ok(deleted);
        }
    }
}

fn storage(e: sqlx::Error) -> BusError {
    BusError::Storage(e.to_string())
}
