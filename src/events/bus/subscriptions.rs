//! Who listens to what on the bus (SPEC §8.1 fan-out: one queue per event type per subscribing
//! service), from the "Cross-Service Events" catalog of `seeds/002_5ca7b485915c61ab.txt`.
//!
//! The table is static on purpose. A dynamic registry (queues created when a consumer calls
//! `subscribe`) would only know about the consumers running right now: an event published while
//! the shipping service is down or not yet deployed would find no shipping queue and be lost to it.
//! With the table compiled in, the publisher pushes into every subscriber's queue whether or not
//! that subscriber is up, and the subscriber drains its queue when it comes back.

use crate::events::catalog::names;

/// Consumer (service) names: the second half of every queue name.
pub mod consumers {
    pub const ORDER: &str = "order";
    pub const PRINT: &str = "print";
    pub const SHIPPING: &str = "shipping";
}

use consumers::{ORDER, PRINT, SHIPPING};

/// `(event type, subscribing consumers)`. `inventory.stock-batch-completed` has no subscriber yet
/// (the catalog lists it for monitoring only), so publishing it enqueues nothing.
pub const SUBSCRIPTIONS: [(&str, &[&str]); 15] = [
    (names::ORDER_CREATED, &[PRINT]),
    (names::ORDER_READY_FOR_FULFILLMENT, &[SHIPPING]),
    (names::ORDER_CANCELLED, &[PRINT, SHIPPING]),
    (names::PRINT_JOB_COMPLETED, &[ORDER]),
    (names::PRINT_JOB_FAILED, &[ORDER]),
    (names::PRINT_JOB_STATUS_CHANGED, &[ORDER]),
    (names::PRINT_JOB_CANCELLED, &[ORDER]),
    (names::SHIPMENT_CREATED, &[ORDER]),
    (names::SHIPMENT_STATUS_CHANGED, &[ORDER]),
    (names::GRIDFLOCK_MAPPING_READY, &[ORDER]),
    (names::GRIDFLOCK_PIPELINE_FAILED, &[ORDER]),
    (names::STOCK_REPLENISHMENT_SCHEDULED, &[PRINT]),
    (names::STOCK_BATCH_COMPLETED, &[]),
    (names::INTEGRATION_SIMPLYPRINT_CHANGED, &[ORDER]),
    (names::INTEGRATION_SENDCLOUD_CHANGED, &[ORDER]),
];

/// The consumers subscribed to `event_type` (empty for unknown types).
pub fn subscribers(event_type: &str) -> &'static [&'static str] {
    SUBSCRIPTIONS
        .iter()
        .find(|(name, _)| *name == event_type)
        .map_or(&[], |(_, consumers)| *consumers)
}

/// Every queue of the table, as `(event type, consumer)`.
pub fn queues() -> impl Iterator<Item = (&'static str, &'static str)> {
    SUBSCRIPTIONS.iter().flat_map(|(event_type, consumers)| {
        consumers
            .iter()
            .map(move |consumer| (*event_type, *consumer))
    })
}

/// Whether `consumer` has a queue for `event_type`.
pub fn is_subscribed(event_type: &str, consumer: &str) -> bool {
    subscribers(event_type).contains(&consumer)
}

/// The queue of one consumer for one event type, e.g. `order.cancelled:print`. Backends add their
/// own prefix (the Redis key prefix) in front.
pub fn queue_name(event_type: &str, consumer: &str) -> String {
    format!("{event_type}:{consumer}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_of_the_catalog_has_exactly_one_row() {
        for name in names::ALL {
            let rows = SUBSCRIPTIONS.iter().filter(|(n, _)| *n == name).count();
            assert_eq!(rows, 1, "{name}");
        }
    }

    #[test]
    fn order_cancelled_fans_out_to_print_and_shipping() {
        assert_eq!(subscribers(names::ORDER_CANCELLED), &[PRINT, SHIPPING]);
        assert_eq!(
            queue_name(names::ORDER_CANCELLED, PRINT),
            "order.cancelled:print"
        );
        assert!(!is_subscribed(names::ORDER_CANCELLED, ORDER));
        assert!(subscribers(names::STOCK_BATCH_COMPLETED).is_empty());
    }
}
