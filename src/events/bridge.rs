//! The bridges between internal events and the bus (SPEC §8.2), the old `EventPublisherService`
//! and `EventSubscriberService`: outbound, the order events other services act on; inbound, the
//! print-job and shipment events the order role acts on.
//!
//! Internal and bus names differ in places; [`NAMES`] is the one table that says how.

use uuid::Uuid;

use super::catalog::{self, Event, EventPayload, names as bus};
use super::internal::{self, InternalEvent, names as local};

/// The `source` of the events the order role publishes.
pub const ORDER_SERVICE: &str = "order-service";

/// (internal name, bus name) of every bridged event, from the seed catalog's "Internal vs
/// Cross-Service Event Naming" table. Bus events without an internal twin (integration changes,
/// inventory, GridFlock) are published and consumed directly and are not listed.
pub const NAMES: [(&str, &str); 9] = [
    (local::PRINT_JOB_COMPLETED, bus::PRINT_JOB_COMPLETED),
    (local::PRINT_JOB_FAILED, bus::PRINT_JOB_FAILED),
    (
        local::PRINT_JOB_STATUS_CHANGED,
        bus::PRINT_JOB_STATUS_CHANGED,
    ),
    (local::PRINT_JOB_CANCELLED, bus::PRINT_JOB_CANCELLED),
    (local::SHIPMENT_CREATED, bus::SHIPMENT_CREATED),
    (local::SHIPMENT_STATUS_CHANGED, bus::SHIPMENT_STATUS_CHANGED),
    (local::ORDER_CREATED, bus::ORDER_CREATED),
    (
        local::ORDER_READY_FOR_FULFILLMENT,
        bus::ORDER_READY_FOR_FULFILLMENT,
    ),
    (local::ORDER_CANCELLED, bus::ORDER_CANCELLED),
];

/// The bus name of a bridged internal event.
pub fn bus_name(internal: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(name, _)| *name == internal)
        .map(|(_, bus)| *bus)
}

/// The internal name of a bridged bus event.
pub fn internal_name(bus: &str) -> Option<&'static str> {
    NAMES
        .iter()
        .find(|(_, name)| *name == bus)
        .map(|(internal, _)| *internal)
}

/// The bus event for an internal event the order role publishes (`order.created`,
/// `order.ready-for-fulfillment`, `order.cancelled`); `None` for every other event. The result
/// has a fresh event id and goes into the outbox in the transaction of the change.
pub fn to_bus_event(event: &InternalEvent, source: &str) -> Option<Event> {
    let payload = match event {
        InternalEvent::OrderCreated(e) => EventPayload::OrderCreated(catalog::OrderCreated {
            order_id: e.order_id.to_string(),
            line_items: e
                .line_items
                .iter()
                .map(|item| catalog::OrderCreatedLineItem {
                    line_item_id: item.line_item_id.to_string(),
                    product_sku: item.product_sku.clone(),
                    quantity: item.quantity,
                })
                .collect(),
        }),
        InternalEvent::OrderReadyForFulfillment(e) => {
            EventPayload::OrderReadyForFulfillment(catalog::OrderReadyForFulfillment {
                order_id: e.order_id.to_string(),
            })
        }
        InternalEvent::OrderCancelled(e) => EventPayload::OrderCancelled(catalog::OrderCancelled {
            order_id: e.order_id.to_string(),
        }),
        _ => return None,
    };
    Some(Event::new(source, event.tenant_id().to_string(), payload))
}

/// The internal event for a bus event the order role consumes (the four print-job events and the
/// two shipment events); `None` for every other event, and for one whose tenant or ids are not
/// UUIDs (logged: such an event cannot name anything this service stores).
pub fn to_internal(event: &Event) -> Option<InternalEvent> {
    let id = |field: &'static str, value: &str| parse_id(event, field, value);
    let tenant_id = id("tenantId", &event.tenant_id)?;
    let job = |print_job_id: &str, order_id: &str, line_item_id: &str| {
        Some(internal::PrintJobRef {
            tenant_id,
            print_job_id: id("printJobId", print_job_id)?,
            order_id: id("orderId", order_id)?,
            line_item_id: id("lineItemId", line_item_id)?,
        })
    };
    Some(match &event.payload {
        EventPayload::PrintJobCompleted(e) => {
            InternalEvent::PrintJobCompleted(job(&e.print_job_id, &e.order_id, &e.line_item_id)?)
        }
        EventPayload::PrintJobFailed(e) => {
            InternalEvent::PrintJobFailed(internal::PrintJobFailed {
                job: job(&e.print_job_id, &e.order_id, &e.line_item_id)?,
                error_message: e.error_message.clone(),
            })
        }
        EventPayload::PrintJobStatusChanged(e) => {
            InternalEvent::PrintJobStatusChanged(internal::PrintJobStatusChanged {
                job: job(&e.print_job_id, &e.order_id, &e.line_item_id)?,
                previous_status: e.previous_status.clone(),
                new_status: e.new_status.clone(),
            })
        }
        EventPayload::PrintJobCancelled(e) => {
            InternalEvent::PrintJobCancelled(job(&e.print_job_id, &e.order_id, &e.line_item_id)?)
        }
        EventPayload::ShipmentCreated(e) => {
            InternalEvent::ShipmentCreated(internal::ShipmentCreated {
                tenant_id,
                shipment_id: id("shipmentId", &e.shipment_id)?,
                order_id: id("orderId", &e.order_id)?,
                tracking_number: e.tracking_number.clone(),
                tracking_url: e.tracking_url.clone(),
                carrier: e.carrier.clone(),
            })
        }
        EventPayload::ShipmentStatusChanged(e) => {
            InternalEvent::ShipmentStatusChanged(internal::ShipmentStatusChanged {
                tenant_id,
                shipment_id: id("shipmentId", &e.shipment_id)?,
                order_id: id("orderId", &e.order_id)?,
                previous_status: e.previous_status.clone(),
                new_status: e.new_status.clone(),
            })
        }
        _ => return None,
    })
}

fn parse_id(event: &Event, field: &'static str, value: &str) -> Option<Uuid> {
    match Uuid::parse_str(value) {
        Ok(id) => Some(id),
        Err(_) => {
            tracing::warn!(
                event_id = %event.event_id, event_type = event.event_type(), field, value,
                "a bus event names something by a non-UUID id; ignored"
            );
            None
        }
    }
}

#[cfg(test)]
#[path = "bridge_tests.rs"]
mod tests;
