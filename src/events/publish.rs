//! The port through which events leave this process for the bus (SPEC §8.1).
//!
//! Only the outbox relay calls it: application code never publishes directly, it enqueues in its
//! own transaction (see [`super::outbox`]) so that an event exists if and only if its change
//! committed. The bus (apalis on SQLite or Redis) implements this trait.

use async_trait::async_trait;

use super::catalog::Event;

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[async_trait]
pub trait EventPublisher: Send + Sync {
    /// Hands events to the bus; returns once the bus has durably accepted them (at-least-once).
    ///
    /// `events` are in outbox order and the bus must keep that order within each event type (its
    /// queues are FIFO). On `Err` the relay treats the whole batch as unpublished and offers it
    /// again later, so events the bus did accept before failing are delivered twice; consumers
    /// deduplicate by `eventId` (see [`super::idempotency`]).
    async fn publish(&self, events: &[Event]) -> Result<(), PublishError>;
}

/// The bus did not (durably) accept a batch.
#[derive(Debug, thiserror::Error)]
#[error("the event bus did not accept the events: {message}")]
pub struct PublishError {
    message: String,
    #[source]
    source: Option<BoxError>,
}

impl PublishError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
        }
    }

    /// Keeps the bus client's own error as the cause, for the log.
    pub fn with_source(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Self {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}
