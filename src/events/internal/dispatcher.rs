//! The in-process dispatcher of [`InternalEvent`]s: subscribers by name, plus `*` for everything.
//!
//! An event is emitted once where it happens ([`Dispatcher::emit`]). Some are told again when
//! their bus event is handled ([`Dispatcher::emit_again`]: the print side's job events, which the
//! order side hears from the bus too), so that a process killed between a commit and its emit
//! loses nothing for the subscribers that record once per occurrence (e-mails, pushes). Those
//! subscribe with [`Dispatcher::subscribe_with_redeliveries`]; the others (a socket event, which
//! a browser would show twice) hear each event once.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{InternalEvent, names};

type Handler = Arc<dyn Fn(&InternalEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// A subscriber, and whether it hears what is told again.
#[derive(Clone)]
struct Subscriber {
    handler: Handler,
    hears_again: bool,
}

/// Routes internal events to their subscribers. Cheap to clone: clones share the subscriptions.
#[derive(Clone, Default)]
pub struct Dispatcher {
    subscribers: Arc<RwLock<HashMap<&'static str, Vec<Subscriber>>>>,
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let subscribers = self
            .subscribers
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("Dispatcher")
            .field("names", &subscribers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Calls `handler` for every event named `name` (a constant of [`names`]), or for every event
    /// when `name` is [`names::ANY`]. The handler clones what its future needs from the event.
    ///
    /// Handlers report their own errors (log, retry queue): the emitter of an event is never
    /// failed by one of its listeners, as with EventEmitter2.
    pub fn subscribe<H>(&self, name: &'static str, handler: H)
    where
        H: Fn(&InternalEvent) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        self.add(name, Arc::new(handler), false);
    }

    /// As [`Dispatcher::subscribe`], and also hears what [`Dispatcher::emit_again`] tells: for a
    /// subscriber that records each occurrence once, whoever tells it and however often.
    pub fn subscribe_with_redeliveries<H>(&self, name: &'static str, handler: H)
    where
        H: Fn(&InternalEvent) -> BoxFuture<'static, ()> + Send + Sync + 'static,
    {
        self.add(name, Arc::new(handler), true);
    }

    fn add(&self, name: &'static str, handler: Handler, hears_again: bool) {
        // A misspelt name would silently never fire; the names are constants, so this only
        // catches a constant that is not an internal event name (e.g. a bus name).
        if name != names::ANY && !names::ALL.contains(&name) {
            debug_assert!(false, "{name} is not an internal event name");
            tracing::error!(name, "subscribed to an unknown internal event name");
        }
        self.subscribers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(name)
            .or_default()
            .push(Subscriber {
                handler,
                hears_again,
            });
    }

    /// Runs every subscriber of the event's name and every `*` subscriber, concurrently, and
    /// returns when all are done. A subscriber that panics is logged and does not stop the others.
    pub async fn emit(&self, event: InternalEvent) {
        self.run(event, false).await;
    }

    /// Tells again an event this or another process may have emitted already (a redelivery):
    /// only the subscribers that asked for it hear it ([`Dispatcher::subscribe_with_redeliveries`]).
    pub async fn emit_again(&self, event: InternalEvent) {
        self.run(event, true).await;
    }

    async fn run(&self, event: InternalEvent, again: bool) {
        let handlers: Vec<Handler> = {
            let subscribers = self
                .subscribers
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            [event.name(), names::ANY]
                .iter()
                .filter_map(|name| subscribers.get(name))
                .flatten()
                .filter(|s| s.hears_again || !again)
                .map(|s| s.handler.clone())
                .collect()
        };
        let event = &event;
        let runs = handlers.iter().map(|handler| async move {
            // The handler can panic while building its future as well as while running it.
            let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(event))) {
                Ok(run) => AssertUnwindSafe(run).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            if let Err(panic) = outcome {
                tracing::error!(
                    event = event.name(),
                    panic = crate::infra::panics::message(panic.as_ref()),
                    "an internal event subscriber panicked"
                );
            }
        });
        futures::future::join_all(runs).await;
    }
}
