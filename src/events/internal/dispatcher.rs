//! The in-process dispatcher of [`InternalEvent`]s: subscribers by name, plus `*` for everything.

use std::any::Any;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, PoisonError, RwLock};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::{InternalEvent, names};

type Handler = Arc<dyn Fn(&InternalEvent) -> BoxFuture<'static, ()> + Send + Sync>;

/// Routes internal events to their subscribers. Cheap to clone: clones share the subscriptions.
#[derive(Clone, Default)]
pub struct Dispatcher {
    subscribers: Arc<RwLock<HashMap<&'static str, Vec<Handler>>>>,
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
            .push(Arc::new(handler));
    }

    /// Runs every subscriber of the event's name and every `*` subscriber, concurrently, and
    /// returns when all are done. A subscriber that panics is logged and does not stop the others.
    pub async fn emit(&self, event: InternalEvent) {
        let handlers: Vec<Handler> = {
            let subscribers = self
                .subscribers
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            [event.name(), names::ANY]
                .iter()
                .filter_map(|name| subscribers.get(name))
                .flatten()
                .cloned()
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
                    panic = panic_message(panic.as_ref()),
                    "an internal event subscriber panicked"
                );
            }
        });
        futures::future::join_all(runs).await;
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> &str {
    if let Some(message) = panic.downcast_ref::<&str>() {
        message
    } else if let Some(message) = panic.downcast_ref::<String>() {
        message
    } else {
        "(not a string)"
    }
}
