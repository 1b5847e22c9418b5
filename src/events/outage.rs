//! Bus handlers ride out a database outage instead of spending their attempts on it.
//!
//! The bus gives a handler three attempts, 1 s, 2 s and 4 s apart (SPEC §8.1). They are meant
//! for a failure of the event's own; while the database is away they are all spent within
//! seconds (sooner still when requests hold every connection of the pool), and the event ends
//! dead although nothing is wrong with it. So a handler that fails while the database does not
//! answer waits, within the same attempt, until it answers again, and runs again. Handlers are
//! idempotent ([`super::idempotency`]): running one again is safe. The bus applies it to every
//! handler of a process's bus ([`super::bus::open`] gives it the database), so no subscriber has
//! to remember it.

use std::future::Future;
use std::time::{Duration, Instant};

use super::bus::HandlerError;
use crate::health::CHECK_TIMEOUT;
use crate::infra::db::Db;

/// How long one attempt waits for the database before its failure counts: a longer outage still
/// ends the event dead after three such waits, where an operator can retry it.
const PATIENCE: Duration = Duration::from_secs(5 * 60);
/// How often the database is asked whether it is back.
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// Runs `handler`; when it fails and `db` does not answer, waits until `db` answers (at most
/// [`PATIENCE`]) and runs it again. A failure while the database answers is the handler's own,
/// returned for the bus to retry.
pub async fn ride_out<F, Fut>(db: &Db, mut handler: F) -> Result<(), HandlerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        let error = match handler().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if answers(db).await {
            return Err(error);
        }
        tracing::warn!(
            %error,
            "an event handler failed while the database does not answer; it runs again once it does"
        );
        loop {
            if Instant::now() >= deadline {
                return Err(error);
            }
            tokio::time::sleep(PROBE_EVERY).await;
            if answers(db).await {
                break;
            }
        }
    }
}

async fn answers(db: &Db) -> bool {
    matches!(
        tokio::time::timeout(CHECK_TIMEOUT, db.ping()).await,
        Ok(Ok(_))
    )
}
