//! Recording pushes behind the emitter's back. An internal event is emitted by whatever made the
//! change (a Shopify webhook, a print farm's report, an API call) and awaited there; recording its
//! push reads the tenant's subscriptions and the order and writes a row per browser, which is
//! nothing that request should wait for. So the event's handler only queues the event here, and a
//! background recorder records it and wakes the [`super::sender`].
//!
//! Nothing is dropped on the way: a full queue (the recorder far behind, e.g. the database slow)
//! records in the emitter as before, which slows the emitters instead of losing pushes, and at
//! shutdown the recorder records what is queued before it stops. What the queue does not survive
//! is a crash, as the in-process event itself does not: an event emitted after its change
//! committed is lost with the process before it was recorded, here as before.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use super::{Push, record_now};
use crate::events::internal::InternalEvent;
use crate::infra::workers::Workers;
use crate::order::OrderCore;

/// Events waiting at most; past that the emitter records its own.
const QUEUE: usize = 4096;
/// Events taken from the queue at once.
const BATCH: usize = 64;
/// Events recorded at once (each is a few statements).
const CONCURRENCY: usize = 4;

/// The handle the events' handler queues to. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    queue: mpsc::Sender<InternalEvent>,
    core: OrderCore,
    push: Arc<Push>,
}

impl Recorder {
    /// Starts the background recorder; it stops with `workers`, after recording what is queued.
    pub fn start(workers: &Workers, core: OrderCore, push: Arc<Push>) -> Self {
        let (queue, mut events) = mpsc::channel::<InternalEvent>(QUEUE);
        let (worker_core, worker_push) = (core.clone(), push.clone());
        workers.spawn("push-recorder", move |stop| async move {
            let mut batch = Vec::with_capacity(BATCH);
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    taken = events.recv_many(&mut batch, BATCH) => {
                        if taken == 0 {
                            return;
                        }
                        record_all(&worker_core, &worker_push, batch.drain(..)).await;
                    }
                }
            }
            // From now on emitters record their own (the queue is closed); what is in it is
            // recorded before the process goes.
            events.close();
            while events.recv_many(&mut batch, BATCH).await > 0 {
                record_all(&worker_core, &worker_push, batch.drain(..)).await;
            }
        });
        Self { queue, core, push }
    }

    /// Queues `event`'s push; records it at once only when the queue is full or closed.
    pub async fn submit(&self, event: InternalEvent) {
        match self.queue.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(event) | TrySendError::Closed(event)) => {
                record_now(&self.core, &self.push, &event).await;
            }
        }
    }
}

async fn record_all(core: &OrderCore, push: &Push, events: impl Iterator<Item = InternalEvent>) {
    futures::stream::iter(events)
        .map(|event| async move { record_now(core, push, &event).await })
        .buffer_unordered(CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}
