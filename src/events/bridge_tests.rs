//! The internal ↔ bus bridges.

use std::collections::HashSet;

use uuid::Uuid;

use super::*;
use crate::events::catalog::{self, names as bus};
use crate::events::internal::tests::{ORDER, TENANT, every_kind};
use crate::events::internal::{InternalEvent, names as local};

#[test]
fn every_pair_of_the_name_table_maps_both_ways() {
    for (internal, bus) in NAMES {
        assert_eq!(bus_name(internal), Some(bus), "{internal}");
        assert_eq!(internal_name(bus), Some(internal), "{bus}");
    }
    let internals: HashSet<&str> = NAMES.iter().map(|(i, _)| *i).collect();
    let buses: HashSet<&str> = NAMES.iter().map(|(_, b)| *b).collect();
    assert_eq!(
        (internals.len(), buses.len()),
        (NAMES.len(), NAMES.len()),
        "one-to-one"
    );
    assert_eq!(bus_name(local::ORDER_STATUS_CHANGED), None, "not bridged");
    assert_eq!(
        internal_name(bus::INTEGRATION_SENDCLOUD_CHANGED),
        None,
        "published directly"
    );
}

#[test]
fn every_name_of_the_table_is_a_catalog_name_on_the_bus_side_and_an_internal_name_on_the_other() {
    for (internal, bus) in NAMES {
        assert!(
            catalog::names::ALL.contains(&bus),
            "{bus} is not a catalog event"
        );
        assert!(
            local::ALL.contains(&internal),
            "{internal} is not an internal event"
        );
    }
}

#[test]
fn printjob_and_sendcloud_names_are_translated_as_the_seed_catalog_says() {
    assert_eq!(bus_name("printjob.completed"), Some("print-job.completed"));
    assert_eq!(
        bus_name("sendcloud.shipment.status_changed"),
        Some("shipment.status-changed")
    );
    assert_eq!(
        internal_name("print-job.status-changed"),
        Some("printjob.status-changed")
    );
}

#[test]
fn the_order_events_go_to_the_bus_with_their_fields_and_no_other_event_does() {
    let mut bridged = Vec::new();
    for event in every_kind() {
        let Some(out) = to_bus_event(&event, ORDER_SERVICE) else {
            assert_eq!(
                bus_name(event.name()).filter(|b| b.starts_with("order.")),
                None
            );
            continue;
        };
        assert_eq!(
            bus_name(event.name()),
            Some(out.event_type()),
            "the table agrees"
        );
        assert_eq!(out.source, ORDER_SERVICE);
        assert_eq!(out.tenant_id, TENANT.to_string());
        assert_eq!(out.event_id.get_version_num(), 4);
        // What the other services will read back from the wire.
        let read: catalog::Event =
            serde_json::from_str(&serde_json::to_string(&out).unwrap()).unwrap();
        assert_eq!(read, out);
        let order_id = match (&event, &read.payload) {
            (InternalEvent::OrderCreated(e), EventPayload::OrderCreated(p)) => {
                let items: Vec<_> = e
                    .line_items
                    .iter()
                    .map(|i| {
                        (
                            i.line_item_id.to_string(),
                            i.product_sku.clone(),
                            i.quantity,
                        )
                    })
                    .collect();
                let wire: Vec<_> = p
                    .line_items
                    .iter()
                    .map(|i| (i.line_item_id.clone(), i.product_sku.clone(), i.quantity))
                    .collect();
                assert_eq!(items, wire);
                &p.order_id
            }
            (
                InternalEvent::OrderReadyForFulfillment(_),
                EventPayload::OrderReadyForFulfillment(p),
            ) => &p.order_id,
            (InternalEvent::OrderCancelled(_), EventPayload::OrderCancelled(p)) => &p.order_id,
            (event, payload) => panic!("{} became {payload:?}", event.name()),
        };
        assert_eq!(order_id, &ORDER.to_string());
        bridged.push(read.event_type());
    }
    assert_eq!(
        bridged,
        vec![
            bus::ORDER_CREATED,
            bus::ORDER_CANCELLED,
            bus::ORDER_READY_FOR_FULFILLMENT
        ]
    );
}

#[test]
fn print_job_and_shipment_events_from_the_bus_become_the_same_internal_events() {
    let inbound: Vec<InternalEvent> = every_kind()
        .into_iter()
        .filter(|e| !e.name().starts_with("order.") && bus_name(e.name()).is_some())
        .collect();
    assert_eq!(
        inbound.len(),
        6,
        "four print-job events and two shipment events"
    );
    for event in inbound {
        let payload = wire_payload(&event);
        let wire = catalog::Event::new("print-service", TENANT.to_string(), payload);
        assert_eq!(bus_name(event.name()), Some(wire.event_type()));
        assert_eq!(to_internal(&wire), Some(event));
    }
}

#[test]
fn a_bus_event_with_a_non_uuid_id_or_one_the_order_role_does_not_consume_is_not_bridged() {
    let mut wire = catalog::Event::new(
        "print-service",
        TENANT.to_string(),
        EventPayload::PrintJobCompleted(catalog::PrintJobCompleted {
            print_job_id: "job-17".into(),
            order_id: ORDER.to_string(),
            line_item_id: Uuid::new_v4().to_string(),
        }),
    );
    assert_eq!(to_internal(&wire), None);
    wire.payload = EventPayload::OrderCancelled(catalog::OrderCancelled {
        order_id: ORDER.to_string(),
    });
    assert_eq!(
        to_internal(&wire),
        None,
        "the order role publishes this one"
    );
}

/// The bus payload the print or shipping service would publish for `event`.
fn wire_payload(event: &InternalEvent) -> EventPayload {
    let s = |id: Uuid| id.to_string();
    match event {
        InternalEvent::PrintJobCompleted(j) => {
            EventPayload::PrintJobCompleted(catalog::PrintJobCompleted {
                print_job_id: s(j.print_job_id),
                order_id: s(j.order_id),
                line_item_id: s(j.line_item_id),
            })
        }
        InternalEvent::PrintJobCancelled(j) => {
            EventPayload::PrintJobCancelled(catalog::PrintJobCancelled {
                print_job_id: s(j.print_job_id),
                order_id: s(j.order_id),
                line_item_id: s(j.line_item_id),
            })
        }
        InternalEvent::PrintJobFailed(e) => EventPayload::PrintJobFailed(catalog::PrintJobFailed {
            print_job_id: s(e.job.print_job_id),
            order_id: s(e.job.order_id),
            line_item_id: s(e.job.line_item_id),
            error_message: e.error_message.clone(),
        }),
        InternalEvent::PrintJobStatusChanged(e) => {
            EventPayload::PrintJobStatusChanged(catalog::PrintJobStatusChanged {
                print_job_id: s(e.job.print_job_id),
                order_id: s(e.job.order_id),
                line_item_id: s(e.job.line_item_id),
                previous_status: e.previous_status.clone(),
                new_status: e.new_status.clone(),
            })
        }
        InternalEvent::ShipmentCreated(e) => {
            EventPayload::ShipmentCreated(catalog::ShipmentCreated {
                shipment_id: s(e.shipment_id),
                order_id: s(e.order_id),
                tracking_number: e.tracking_number.clone(),
                tracking_url: e.tracking_url.clone(),
                carrier: e.carrier.clone(),
            })
        }
        InternalEvent::ShipmentStatusChanged(e) => {
            EventPayload::ShipmentStatusChanged(catalog::ShipmentStatusChanged {
                shipment_id: s(e.shipment_id),
                order_id: s(e.order_id),
                previous_status: e.previous_status.clone(),
                new_status: e.new_status.clone(),
            })
        }
        other => panic!("{} is not consumed from the bus", other.name()),
    }
}
