//! From internal events to socket events: one table names the socket event of each internal event
//! browsers see; the payload is the entity as the API returns it, read when the event is sent
//! (internal events carry ids only). Events queue in order and one worker sends them, so an
//! emitter is never held up by Socket.IO and a tenant sees an order's events in their order.

use std::sync::{Arc, OnceLock};

use serde_json::Value;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::adapter::Server;
use super::tenant_room;
use crate::app::AppContext;
use crate::events::internal::{InternalEvent, names};
use crate::infra::db::Conn;
use crate::order::OrderCore;
use crate::order::notifications::Kind;
use crate::order::orders::repository;

/// Internal event name → Socket.IO event name (SPEC §6.6, §8.2). Internal events not listed
/// (shipments, fulfillment, retry requests) are not sent to browsers.
pub const SOCKET_EVENTS: [(&str, &str); 11] = [
    (names::ORDER_CREATED, "order:created"),
    (names::ORDER_STATUS_CHANGED, "order:updated"),
    (
        names::ORDER_READY_FOR_FULFILLMENT,
        "order:ready-for-fulfillment",
    ),
    (names::ORDER_FULFILLED, "order:fulfilled"),
    (names::ORDER_CANCELLED, "order:cancelled"),
    (names::ORDER_FAILED, "order:failed"),
    (names::PRINT_JOB_CREATED, "printjob:created"),
    (names::PRINT_JOB_STATUS_CHANGED, "printjob:updated"),
    (names::PRINT_JOB_COMPLETED, "printjob:completed"),
    (names::PRINT_JOB_FAILED, "printjob:failed"),
    (names::PRINT_JOB_CANCELLED, "printjob:cancelled"),
];

/// The socket event of a notification (sent by [`super::Realtime::notify`]).
pub const NOTIFICATION: &str = "notification";

/// The `notification` an internal event is told live as, if any: what is also e-mailed (the same
/// [`Kind`] decides both), with what failed (or waits) and why.
pub fn notification(event: &InternalEvent) -> Option<Value> {
    let kind = Kind::of(event)?;
    let (print_job_id, message, severity) = match event {
        InternalEvent::PrintJobFailed(e) => {
            (Some(e.job.print_job_id), e.error_message.clone(), "error")
        }
        InternalEvent::OrderFailed(e) => (None, e.reason.clone(), "error"),
        InternalEvent::FulfillmentFailed(e) => (None, e.error_message.clone(), "error"),
        InternalEvent::OrderLinesUnmapped(e) => (
            None,
            format!("No active product mapping for SKU {}", e.skus.join(", ")),
            "warning",
        ),
        _ => return None,
    };
    Some(serde_json::json!({
        "kind": kind.as_str(),
        "severity": severity,
        "orderId": event.order_id(),
        "printJobId": print_job_id,
        "message": message,
        "at": chrono::Utc::now(),
    }))
}

/// The socket event of an internal event, if browsers see it.
pub fn socket_event(internal: &str) -> Option<&'static str> {
    SOCKET_EVENTS
        .iter()
        .find(|(name, _)| *name == internal)
        .map(|(_, socket)| *socket)
}

/// How many events may wait for the sender before new ones are dropped (and counted).
const QUEUE: usize = 4096;

/// What the sender sends.
#[derive(Debug)]
pub enum Outgoing {
    /// An internal event: its entity is read when it is sent.
    Event {
        event: &'static str,
        tenant_id: Uuid,
        entity: Entity,
    },
    /// A payload given whole.
    Ready {
        event: &'static str,
        tenant_id: Uuid,
        payload: Value,
    },
}

/// The entity an event is about.
#[derive(Debug, Clone, Copy)]
pub enum Entity {
    Order(Uuid),
    PrintJob { order_id: Uuid, print_job_id: Uuid },
}

impl Entity {
    fn of(event: &InternalEvent) -> Self {
        let job = match event {
            InternalEvent::PrintJobCreated(job)
            | InternalEvent::PrintJobCompleted(job)
            | InternalEvent::PrintJobCancelled(job)
            | InternalEvent::PrintJobRetryRequested(job) => Some(job),
            InternalEvent::PrintJobStatusChanged(e) => Some(&e.job),
            InternalEvent::PrintJobFailed(e) => Some(&e.job),
            _ => None,
        };
        match job {
            Some(job) => Entity::PrintJob {
                order_id: job.order_id,
                print_job_id: job.print_job_id,
            },
            None => Entity::Order(event.order_id()),
        }
    }
}

/// The sender's queue; pushing never waits.
#[derive(Clone)]
pub struct Queue(mpsc::Sender<Outgoing>);

impl Queue {
    pub fn push(&self, outgoing: Outgoing) {
        if self.0.try_send(outgoing).is_err() {
            metrics::counter!("socketio_events_dropped_total").increment(1);
            tracing::warn!("a Socket.IO event was dropped: the sender is behind or stopped");
        }
    }
}

/// Subscribes to every internal event of `core` and starts the sender.
pub fn start(ctx: &Arc<AppContext>, core: &OrderCore, server: Arc<OnceLock<Server>>) -> Queue {
    let (tx, mut rx) = mpsc::channel(QUEUE);
    let queue = Queue(tx);
    let subscriber = queue.clone();
    core.events.subscribe(names::ANY, move |event| {
        if let Some(socket) = socket_event(event.name()) {
            subscriber.push(Outgoing::Event {
                event: socket,
                tenant_id: event.tenant_id(),
                entity: Entity::of(event),
            });
        }
        if let Some(payload) = notification(event) {
            subscriber.push(Outgoing::Ready {
                event: NOTIFICATION,
                tenant_id: event.tenant_id(),
                payload,
            });
        }
        Box::pin(async {})
    });
    let core = core.clone();
    ctx.workers
        .spawn("socketio-fanout", move |stop| async move {
            loop {
                let outgoing = tokio::select! {
                    () = stop.cancelled() => return,
                    next = rx.recv() => match next {
                        Some(outgoing) => outgoing,
                        None => return,
                    },
                };
                send(&core, &server, outgoing).await;
            }
        });
    queue
}

async fn send(core: &OrderCore, server: &OnceLock<Server>, outgoing: Outgoing) {
    // Without a running server no socket is connected here: nothing to read, nobody to tell.
    let Some(server) = server.get() else { return };
    let (event, tenant_id, payload) = match outgoing {
        Outgoing::Ready {
            event,
            tenant_id,
            payload,
        } => (event, tenant_id, payload),
        Outgoing::Event {
            event,
            tenant_id,
            entity,
        } => match payload(core, tenant_id, entity).await {
            Some(payload) => (event, tenant_id, payload),
            None => return,
        },
    };
    (server.emit)(tenant_room(tenant_id), event, payload).await;
}

/// The entity as the API returns it (an order as listed, a print job as in the order's detail);
/// `None` when it is gone or cannot be read now (logged: a live view misses one update).
async fn payload(core: &OrderCore, tenant_id: Uuid, entity: Entity) -> Option<Value> {
    let json = match entity {
        Entity::Order(order_id) => {
            let found = repository::find(&mut Conn::Pool(&core.db), tenant_id, order_id).await;
            match found {
                Ok(Some(record)) => serde_json::to_value(record.into_order()),
                Ok(None) => return None,
                Err(e) => {
                    tracing::warn!(error = %e, %order_id, "the order of a Socket.IO event could not be read");
                    return None;
                }
            }
        }
        Entity::PrintJob {
            order_id,
            print_job_id,
        } => match core.print.print_job(tenant_id, print_job_id).await {
            Ok(Some(job)) if job.order_id == Some(order_id) => serde_json::to_value(job),
            Ok(_) => return None,
            Err(e) => {
                tracing::warn!(error = %e, %print_job_id, "the print job of a Socket.IO event could not be read");
                return None;
            }
        },
    };
    json.ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::internal::{OrderRef, PrintJobFailed, PrintJobRef};

    #[test]
    fn a_failure_is_told_live_as_a_notification_and_a_success_is_not() {
        let (tenant_id, order_id, print_job_id) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let failed = InternalEvent::PrintJobFailed(PrintJobFailed {
            job: PrintJobRef {
                tenant_id,
                print_job_id,
                order_id,
                line_item_id: Uuid::new_v4(),
            },
            error_message: "nozzle clogged".into(),
        });
        let told = notification(&failed).expect("a failed print is told");
        assert_eq!(told["kind"], "print_job_failed");
        assert_eq!(told["orderId"], order_id.to_string());
        assert_eq!(told["printJobId"], print_job_id.to_string());
        assert_eq!(told["message"], "nozzle clogged");
        let fulfilled = InternalEvent::OrderFulfilled(OrderRef {
            tenant_id,
            order_id,
        });
        assert_eq!(notification(&fulfilled), None);
        let unmapped =
            InternalEvent::OrderLinesUnmapped(crate::events::internal::OrderLinesUnmapped {
                tenant_id,
                order_id,
                skus: vec!["MYSTERY".into(), "ENIGMA".into()],
            });
        let told = notification(&unmapped).expect("a line waiting for a mapping is told");
        assert_eq!(
            (&told["kind"], &told["severity"], &told["message"]),
            (
                &serde_json::json!("unmapped_sku"),
                &serde_json::json!("warning"),
                &serde_json::json!("No active product mapping for SKU MYSTERY, ENIGMA")
            )
        );
    }
}
