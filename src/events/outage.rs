//! Bus handlers ride out a database outage, or a peer service's, instead of spending their
//! attempts on it.
//!
//! The bus gives a handler three attempts, 1 s, 2 s and 4 s apart (SPEC §8.1). They are meant
//! for a failure of the event's own; while the database is away they are all spent within
//! seconds (sooner still when requests hold every connection of the pool), and the event ends
//! dead although nothing is wrong with it. So a handler that fails while the database does not
//! answer waits, within the same attempt, until it answers again, and runs again. Handlers are
//! idempotent ([`super::idempotency`]): running one again is safe. The bus applies it to every
//! handler of a process's bus ([`super::bus::open`] gives it the database), so no subscriber has
//! to remember it.
//!
//! A split deployment's handlers also call other services (the order side asks the print service
//! for an order's jobs, the print side asks the order service for a plan). A call that found no
//! instance answering (a deploy, a restart) is such a passing failure too: the handler reports it
//! as [`PeerUnavailable`], and the attempt waits and runs again, with backoff, up to the same
//! patience.

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
/// The longest wait before a handler whose peer did not answer runs again.
const PEER_BACKOFF_MAX: Duration = Duration::from_secs(15);

/// A handler's failure that passes: another service it called did not answer. Ridden out as a
/// database outage is, rather than spending the bus's attempts (seconds apart) on it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PeerUnavailable(pub String);

/// Runs `handler`; when it fails and `db` does not answer, waits until `db` answers (at most
/// [`PATIENCE`]) and runs it again. A failure while the database answers is the handler's own,
/// returned for the bus to retry.
pub async fn ride_out<F, Fut>(db: &Db, mut handler: F) -> Result<(), HandlerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), HandlerError>>,
{
    let deadline = Instant::now() + PATIENCE;
    let mut peer_wait = Duration::from_secs(1);
    loop {
        let error = match handler().await {
            Ok(()) => return Ok(()),
            Err(error) => error,
        };
        if error.is::<PeerUnavailable>() {
            if Instant::now() + peer_wait >= deadline {
                return Err(error);
            }
            tracing::warn!(
                %error,
                retry_in_ms = peer_wait.as_millis(),
                "an event handler's call to another service found it unavailable; it runs again"
            );
            tokio::time::sleep(peer_wait).await;
            peer_wait = (peer_wait * 2).min(PEER_BACKOFF_MAX);
            continue;
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::infra::db::Backend;
    use crate::testing::TestDatabase;

    /// A peer that does not answer for a while is waited out within the attempt; a failure of the
    /// handler's own, with the database answering, is returned at once for the bus to retry.
    #[tokio::test]
    async fn a_peer_that_does_not_answer_is_waited_out_and_an_own_failure_is_not() {
        let database = TestDatabase::create(Backend::Sqlite).await;
        let db = Db::connect(&database.url, 2).await.unwrap();
        let calls = AtomicUsize::new(0);
        let outcome = ride_out(&db, || {
            let call = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if call < 2 {
                    Err(
                        Box::new(PeerUnavailable("no print service answered".into()))
                            as HandlerError,
                    )
                } else {
                    Ok(())
                }
            }
        })
        .await;
        assert!(outcome.is_ok(), "{outcome:?}");
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        let calls = AtomicUsize::new(0);
        let outcome = ride_out(&db, || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err::<(), HandlerError>("the event's own fault".into()) }
        })
        .await;
        assert!(outcome.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
