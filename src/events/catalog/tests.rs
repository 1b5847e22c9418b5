//! Each document below is written by hand from the seed catalog's TypeScript interfaces, not
//! produced by our types, so a renamed field or a dropped `null` shows up as a difference.

use std::collections::HashSet;

use serde_json::Value;

use super::*;

/// Reads the document as the bus would hand it over, writes it back and requires the same JSON,
/// then requires that what we wrote reads back to the same event.
fn round_trip(document: &str) -> Event {
    let event: Event = serde_json::from_str(document).expect("the catalog document is read");
    let original: Value = serde_json::from_str(document).expect("the document is JSON");
    let written = serde_json::to_value(&event).expect("the event is written");
    assert_eq!(written, original);
    let reread: Event = serde_json::from_value(written).expect("what we wrote is read back");
    assert_eq!(reread, event);
    event
}

#[test]
fn order_created_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "8fa052b5-b8e5-4293-9fd2-6ad3dd2de676",
            "eventType": "order.created",
            "source": "order-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T10:15:30.123Z",
            "correlationId": "f19faed5-afcf-4d1e-b078-e66ec7a6d4bf",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "lineItems": [
                {
                    "lineItemId": "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a",
                    "productSku": "GRID-2x3-MAG-NONE",
                    "quantity": 2
                },
                {
                    "lineItemId": "964b6dfe-8c18-4078-90b4-f9561f825777",
                    "productSku": "PLANTER-S-PLA-WHITE",
                    "quantity": 1
                }
            ]
        }"#,
    );
    assert_eq!(event.event_type(), names::ORDER_CREATED);
    assert_eq!(
        event.correlation_id.as_deref(),
        Some("f19faed5-afcf-4d1e-b078-e66ec7a6d4bf")
    );
    let EventPayload::OrderCreated(order) = event.payload else {
        panic!("expected order.created, got {:?}", event.payload);
    };
    assert_eq!(order.order_id, "44196935-7814-4853-982f-12d19dc61647");
    assert_eq!(order.line_items.len(), 2);
    assert_eq!(order.line_items[0].product_sku, "GRID-2x3-MAG-NONE");
    assert_eq!(order.line_items[0].quantity, 2);
}

#[test]
fn order_ready_for_fulfillment_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "96f8cc9c-edc4-48f1-b048-6c304be6e2a2",
            "eventType": "order.ready-for-fulfillment",
            "source": "order-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-24T08:02:11.480Z",
            "orderId": "44196935-7814-4853-982f-12d19dc61647"
        }"#,
    );
    assert_eq!(event.event_type(), names::ORDER_READY_FOR_FULFILLMENT);
    assert_eq!(event.correlation_id, None);
    let EventPayload::OrderReadyForFulfillment(ready) = event.payload else {
        panic!(
            "expected order.ready-for-fulfillment, got {:?}",
            event.payload
        );
    };
    assert_eq!(ready.order_id, "44196935-7814-4853-982f-12d19dc61647");
}

#[test]
fn order_cancelled_round_trips_the_catalog_document() {
    // A whole-second timestamp: chrono alone would write it without the `.000`.
    let event = round_trip(
        r#"{
            "eventId": "715de4b1-3496-4cbf-9753-d224480a4f8a",
            "eventType": "order.cancelled",
            "source": "order-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T11:00:00.000Z",
            "correlationId": "f9e2d2fc-f0ef-49c1-a559-ad7b1527acf0",
            "orderId": "07d06906-74ac-45db-ba41-4af47c3135ce"
        }"#,
    );
    assert_eq!(event.event_type(), names::ORDER_CANCELLED);
    assert_eq!(event.source, "order-service");
    let EventPayload::OrderCancelled(cancelled) = event.payload else {
        panic!("expected order.cancelled, got {:?}", event.payload);
    };
    assert_eq!(cancelled.order_id, "07d06906-74ac-45db-ba41-4af47c3135ce");
}

#[test]
fn print_job_completed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "a8d57e36-4314-426f-9538-e2a613f4ccd3",
            "eventType": "print-job.completed",
            "source": "print-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T16:42:07.915Z",
            "correlationId": "f19faed5-afcf-4d1e-b078-e66ec7a6d4bf",
            "printJobId": "011c24f1-8b55-4007-a462-4eaa02870245",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "lineItemId": "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a"
        }"#,
    );
    assert_eq!(event.event_type(), names::PRINT_JOB_COMPLETED);
    let EventPayload::PrintJobCompleted(completed) = event.payload else {
        panic!("expected print-job.completed, got {:?}", event.payload);
    };
    assert_eq!(
        completed.print_job_id,
        "011c24f1-8b55-4007-a462-4eaa02870245"
    );
    assert_eq!(
        completed.line_item_id,
        "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a"
    );
}

#[test]
fn print_job_failed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "91cc1672-93ae-4b71-9c92-631e2069d560",
            "eventType": "print-job.failed",
            "source": "print-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T14:05:51.002Z",
            "printJobId": "45e804d6-dab7-457f-8ca4-78c66ce31b27",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "lineItemId": "964b6dfe-8c18-4078-90b4-f9561f825777",
            "errorMessage": "Printer reported filament runout on extruder 0"
        }"#,
    );
    assert_eq!(event.event_type(), names::PRINT_JOB_FAILED);
    assert_eq!(event.correlation_id, None);
    let EventPayload::PrintJobFailed(failed) = event.payload else {
        panic!("expected print-job.failed, got {:?}", event.payload);
    };
    assert_eq!(failed.print_job_id, "45e804d6-dab7-457f-8ca4-78c66ce31b27");
    assert_eq!(
        failed.error_message,
        "Printer reported filament runout on extruder 0"
    );
}

#[test]
fn print_job_status_changed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "73278362-44c6-4e63-be78-34e0d63a1db8",
            "eventType": "print-job.status-changed",
            "source": "print-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T12:30:00.250Z",
            "correlationId": "8e3967ed-6738-4189-95a3-cc2fe8bce157",
            "printJobId": "011c24f1-8b55-4007-a462-4eaa02870245",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "lineItemId": "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a",
            "previousStatus": "QUEUED",
            "newStatus": "PRINTING"
        }"#,
    );
    assert_eq!(event.event_type(), names::PRINT_JOB_STATUS_CHANGED);
    let EventPayload::PrintJobStatusChanged(changed) = event.payload else {
        panic!("expected print-job.status-changed, got {:?}", event.payload);
    };
    assert_eq!(changed.previous_status, "QUEUED");
    assert_eq!(changed.new_status, "PRINTING");
}

#[test]
fn print_job_cancelled_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "9cd19bb3-bc99-4520-a5e2-3e51dc235efd",
            "eventType": "print-job.cancelled",
            "source": "print-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T11:00:01.734Z",
            "correlationId": "f9e2d2fc-f0ef-49c1-a559-ad7b1527acf0",
            "printJobId": "7474fc10-3caa-46e6-956f-dfc92d7c4b40",
            "orderId": "07d06906-74ac-45db-ba41-4af47c3135ce",
            "lineItemId": "52f8df26-0a70-4137-8609-2d35989d7b9d"
        }"#,
    );
    assert_eq!(event.event_type(), names::PRINT_JOB_CANCELLED);
    let EventPayload::PrintJobCancelled(cancelled) = event.payload else {
        panic!("expected print-job.cancelled, got {:?}", event.payload);
    };
    assert_eq!(
        cancelled.print_job_id,
        "7474fc10-3caa-46e6-956f-dfc92d7c4b40"
    );
    assert_eq!(cancelled.order_id, "07d06906-74ac-45db-ba41-4af47c3135ce");
}

#[test]
fn shipment_created_round_trips_the_catalog_document_with_null_tracking() {
    // Sendcloud has not assigned tracking yet: the fields are present and null, not missing.
    let event = round_trip(
        r#"{
            "eventId": "10b8d8bd-8a82-4b3e-9b26-6e9e13b90393",
            "eventType": "shipment.created",
            "source": "shipping-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-24T08:02:13.066Z",
            "shipmentId": "93d6036a-e4cb-423d-b954-c213ead1fe3e",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "trackingNumber": null,
            "trackingUrl": null,
            "carrier": "postnl"
        }"#,
    );
    assert_eq!(event.event_type(), names::SHIPMENT_CREATED);
    let EventPayload::ShipmentCreated(shipment) = event.payload else {
        panic!("expected shipment.created, got {:?}", event.payload);
    };
    assert_eq!(shipment.shipment_id, "93d6036a-e4cb-423d-b954-c213ead1fe3e");
    assert_eq!(shipment.tracking_number, None);
    assert_eq!(shipment.tracking_url, None);
    assert_eq!(shipment.carrier.as_deref(), Some("postnl"));
}

#[test]
fn shipment_status_changed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "32c9be22-fbe0-4ab0-8dee-e9472383a48e",
            "eventType": "shipment.status-changed",
            "source": "shipping-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-25T09:47:22.318Z",
            "correlationId": "55830171-a0d8-4cfa-868b-a6c2c26ee96e",
            "shipmentId": "93d6036a-e4cb-423d-b954-c213ead1fe3e",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "previousStatus": "Ready to send",
            "newStatus": "En route to sorting center"
        }"#,
    );
    assert_eq!(event.event_type(), names::SHIPMENT_STATUS_CHANGED);
    let EventPayload::ShipmentStatusChanged(changed) = event.payload else {
        panic!("expected shipment.status-changed, got {:?}", event.payload);
    };
    assert_eq!(changed.shipment_id, "93d6036a-e4cb-423d-b954-c213ead1fe3e");
    assert_eq!(changed.new_status, "En route to sorting center");
}

#[test]
fn gridflock_mapping_ready_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "a517981b-6287-497f-902d-6e8c31c021f5",
            "eventType": "gridflock.mapping-ready",
            "source": "gridflock-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T10:17:45.901Z",
            "correlationId": "f19faed5-afcf-4d1e-b078-e66ec7a6d4bf",
            "orderId": "44196935-7814-4853-982f-12d19dc61647",
            "lineItemId": "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a",
            "sku": "GRID-2x3-MAG-NONE"
        }"#,
    );
    assert_eq!(event.event_type(), names::GRIDFLOCK_MAPPING_READY);
    assert_eq!(event.source, "gridflock-service");
    let EventPayload::GridflockMappingReady(ready) = event.payload else {
        panic!("expected gridflock.mapping-ready, got {:?}", event.payload);
    };
    assert_eq!(ready.sku, "GRID-2x3-MAG-NONE");
    assert_eq!(ready.line_item_id, "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a");
}

#[test]
fn gridflock_pipeline_failed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "a225a4cd-c3ee-4a83-9954-8a71e01d09f5",
            "eventType": "gridflock.pipeline-failed",
            "source": "gridflock-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T10:18:02.577Z",
            "orderId": "da0d0caf-a756-4fea-93b2-baacfb557660",
            "lineItemId": "2ff57bec-9eba-4cbb-8dde-46919a1747f4",
            "sku": "GRID-4x5-MAG-NONE",
            "errorMessage": "SimplyPrint upload failed: 413 Payload Too Large",
            "failedStep": "simplyprint-upload"
        }"#,
    );
    assert_eq!(event.event_type(), names::GRIDFLOCK_PIPELINE_FAILED);
    let EventPayload::GridflockPipelineFailed(failed) = event.payload else {
        panic!(
            "expected gridflock.pipeline-failed, got {:?}",
            event.payload
        );
    };
    assert_eq!(failed.failed_step, GridflockPipelineStep::SimplyprintUpload);
    assert_eq!(failed.sku, "GRID-4x5-MAG-NONE");
    // The other three steps are spelled as in the catalog too.
    for (step, wire) in [
        (GridflockPipelineStep::StlGeneration, "stl-generation"),
        (GridflockPipelineStep::Slicing, "slicing"),
        (GridflockPipelineStep::MappingCreation, "mapping-creation"),
    ] {
        assert_eq!(serde_json::to_value(step).expect("step"), Value::from(wire));
    }
}

#[test]
fn stock_replenishment_scheduled_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "367ae1c5-eea7-4c18-8b31-5115efbfcc6c",
            "eventType": "inventory.stock-replenishment-scheduled",
            "source": "order-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T02:00:00.012Z",
            "printJobId": "1eb11aed-4008-4686-92db-bdef28f23f61",
            "fileId": "9f8c2e4a71b3d5f6",
            "purpose": "STOCK",
            "stockBatchId": "ef10152f-98ab-49db-9164-102506e09b22"
        }"#,
    );
    assert_eq!(event.event_type(), names::STOCK_REPLENISHMENT_SCHEDULED);
    let EventPayload::StockReplenishmentScheduled(scheduled) = event.payload else {
        panic!(
            "expected inventory.stock-replenishment-scheduled, got {:?}",
            event.payload
        );
    };
    assert_eq!(scheduled.purpose, PrintJobPurpose::Stock);
    assert_eq!(scheduled.file_id.as_deref(), Some("9f8c2e4a71b3d5f6"));
    assert_eq!(
        scheduled.stock_batch_id,
        "ef10152f-98ab-49db-9164-102506e09b22"
    );
}

#[test]
fn stock_batch_completed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "76e1d02b-342c-48cd-9b21-489444d6f05e",
            "eventType": "inventory.stock-batch-completed",
            "source": "order-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-23T19:31:44.640Z",
            "correlationId": "485a5b51-d034-4cbc-a902-8df8828aba57",
            "stockBatchId": "ef10152f-98ab-49db-9164-102506e09b22",
            "productMappingId": "135ea8e4-7aed-490b-9afc-299bdd7418b0",
            "totalJobs": 6
        }"#,
    );
    assert_eq!(event.event_type(), names::STOCK_BATCH_COMPLETED);
    let EventPayload::StockBatchCompleted(completed) = event.payload else {
        panic!(
            "expected inventory.stock-batch-completed, got {:?}",
            event.payload
        );
    };
    assert_eq!(completed.total_jobs, 6);
    assert_eq!(
        completed.product_mapping_id,
        "135ea8e4-7aed-490b-9afc-299bdd7418b0"
    );
}

#[test]
fn integration_simplyprint_changed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "dcec5cf6-049b-4f0a-98a9-18d7d69a188a",
            "eventType": "integration.simplyprint-changed",
            "source": "print-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-22T15:20:09.377Z",
            "action": "connected"
        }"#,
    );
    assert_eq!(event.event_type(), names::INTEGRATION_SIMPLYPRINT_CHANGED);
    let EventPayload::IntegrationSimplyprintChanged(changed) = event.payload else {
        panic!(
            "expected integration.simplyprint-changed, got {:?}",
            event.payload
        );
    };
    assert_eq!(changed.action, IntegrationAction::Connected);
}

#[test]
fn integration_sendcloud_changed_round_trips_the_catalog_document() {
    let event = round_trip(
        r#"{
            "eventId": "4b282459-93ce-4c16-98fd-60e9e72f420a",
            "eventType": "integration.sendcloud-changed",
            "source": "shipping-service",
            "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
            "timestamp": "2026-11-22T15:24:51.808Z",
            "correlationId": "57c1feac-5a50-4370-b73c-1ef75b48396b",
            "action": "disconnected"
        }"#,
    );
    assert_eq!(event.event_type(), names::INTEGRATION_SENDCLOUD_CHANGED);
    let EventPayload::IntegrationSendcloudChanged(changed) = event.payload else {
        panic!(
            "expected integration.sendcloud-changed, got {:?}",
            event.payload
        );
    };
    assert_eq!(changed.action, IntegrationAction::Disconnected);
}

#[test]
fn an_unknown_event_type_is_rejected() {
    let document = r#"{
        "eventId": "3d4ba908-053a-41b6-863e-abe982a4a089",
        "eventType": "order.shipped",
        "source": "order-service",
        "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
        "timestamp": "2026-11-23T10:15:30.123Z",
        "orderId": "44196935-7814-4853-982f-12d19dc61647"
    }"#;
    let error = serde_json::from_str::<Event>(document).expect_err("order.shipped is no event");
    assert!(error.to_string().contains("order.shipped"), "{error}");
}

#[test]
fn a_document_missing_a_required_field_is_rejected() {
    let document = r#"{
        "eventId": "cdcc9f2c-a351-4986-89b0-c341fe5e54df",
        "eventType": "order.cancelled",
        "source": "order-service",
        "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
        "timestamp": "2026-11-23T10:15:30.123Z"
    }"#;
    let error = serde_json::from_str::<Event>(document).expect_err("orderId is required");
    assert!(error.to_string().contains("orderId"), "{error}");
}

#[test]
fn a_null_correlation_id_is_read_as_absent() {
    let document = r#"{
        "eventId": "eac63ca2-bce4-4b58-857e-d795974dcfef",
        "eventType": "order.cancelled",
        "source": "order-service",
        "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
        "timestamp": "2026-11-23T10:15:30.123Z",
        "correlationId": null,
        "orderId": "44196935-7814-4853-982f-12d19dc61647"
    }"#;
    let event: Event = serde_json::from_str(document).expect("a null correlationId is accepted");
    assert_eq!(event.correlation_id, None);
    let written = serde_json::to_value(&event).expect("the event is written");
    assert!(written.get("correlationId").is_none(), "{written}");
}

#[test]
fn the_envelope_is_read_from_a_document_of_any_type() {
    // Deduplication and dead-letter inspection must work even for a type this build lacks.
    let document = r#"{
        "eventId": "2a8ea979-1068-4758-8f6e-a9bd7aa5d198",
        "eventType": "order.shipped",
        "source": "order-service",
        "tenantId": "b1042279-0862-41c4-b767-58cd68a1c212",
        "timestamp": "2026-11-23T10:15:30.123Z",
        "orderId": "44196935-7814-4853-982f-12d19dc61647"
    }"#;
    let envelope: Envelope = serde_json::from_str(document).expect("the envelope is read");
    assert_eq!(envelope.event_type, "order.shipped");
    assert_eq!(envelope.event_id.get_version_num(), 4);
}

/// One payload of every variant, in the order of [`names::ALL`].
fn one_of_each() -> [EventPayload; 15] {
    let order_id = || "44196935-7814-4853-982f-12d19dc61647".to_owned();
    let line_item_id = || "b42f1912-2bfb-4d2a-b1c1-d4aa4b32671a".to_owned();
    let print_job_id = || "011c24f1-8b55-4007-a462-4eaa02870245".to_owned();
    let shipment_id = || "93d6036a-e4cb-423d-b954-c213ead1fe3e".to_owned();
    let stock_batch_id = || "ef10152f-98ab-49db-9164-102506e09b22".to_owned();
    [
        EventPayload::OrderCreated(OrderCreated {
            order_id: order_id(),
            line_items: vec![OrderCreatedLineItem {
                line_item_id: line_item_id(),
                product_sku: "GRID-2x3-MAG-NONE".to_owned(),
                quantity: 1,
            }],
        }),
        EventPayload::OrderReadyForFulfillment(OrderReadyForFulfillment {
            order_id: order_id(),
        }),
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: order_id(),
        }),
        EventPayload::PrintJobCompleted(PrintJobCompleted {
            print_job_id: print_job_id(),
            order_id: order_id(),
            line_item_id: line_item_id(),
        }),
        EventPayload::PrintJobFailed(PrintJobFailed {
            print_job_id: print_job_id(),
            order_id: order_id(),
            line_item_id: line_item_id(),
            error_message: "nozzle clog".to_owned(),
        }),
        EventPayload::PrintJobStatusChanged(PrintJobStatusChanged {
            print_job_id: print_job_id(),
            order_id: order_id(),
            line_item_id: line_item_id(),
            previous_status: "QUEUED".to_owned(),
            new_status: "PRINTING".to_owned(),
        }),
        EventPayload::PrintJobCancelled(PrintJobCancelled {
            print_job_id: print_job_id(),
            order_id: order_id(),
            line_item_id: line_item_id(),
        }),
        EventPayload::ShipmentCreated(ShipmentCreated {
            shipment_id: shipment_id(),
            order_id: order_id(),
            tracking_number: Some("3SABCD1234567".to_owned()),
            tracking_url: None,
            carrier: None,
        }),
        EventPayload::ShipmentStatusChanged(ShipmentStatusChanged {
            shipment_id: shipment_id(),
            order_id: order_id(),
            previous_status: "Ready to send".to_owned(),
            new_status: "Delivered".to_owned(),
        }),
        EventPayload::GridflockMappingReady(GridflockMappingReady {
            order_id: order_id(),
            line_item_id: line_item_id(),
            sku: "GRID-2x3-MAG-NONE".to_owned(),
        }),
        EventPayload::GridflockPipelineFailed(GridflockPipelineFailed {
            order_id: order_id(),
            line_item_id: line_item_id(),
            sku: "GRID-2x3-MAG-NONE".to_owned(),
            error_message: "slicer exited with 1".to_owned(),
            failed_step: GridflockPipelineStep::Slicing,
        }),
        EventPayload::StockReplenishmentScheduled(StockReplenishmentScheduled {
            print_job_id: print_job_id(),
            file_id: None,
            purpose: PrintJobPurpose::Stock,
            stock_batch_id: stock_batch_id(),
        }),
        EventPayload::StockBatchCompleted(StockBatchCompleted {
            stock_batch_id: stock_batch_id(),
            product_mapping_id: "135ea8e4-7aed-490b-9afc-299bdd7418b0".to_owned(),
            total_jobs: 4,
        }),
        EventPayload::IntegrationSimplyprintChanged(IntegrationChanged {
            action: IntegrationAction::Connected,
        }),
        EventPayload::IntegrationSendcloudChanged(IntegrationChanged {
            action: IntegrationAction::Disconnected,
        }),
    ]
}

#[test]
fn all_names_are_fifteen_distinct_types_matching_the_variants_and_their_wire_tags() {
    let distinct: HashSet<&str> = names::ALL.iter().copied().collect();
    assert_eq!(distinct.len(), 15);

    for (name, payload) in names::ALL.into_iter().zip(one_of_each()) {
        assert_eq!(payload.event_type(), name);
        // The serde rename (the tag on the wire) must agree with the constant.
        let event = Event::new(
            "order-service",
            "b1042279-0862-41c4-b767-58cd68a1c212",
            payload,
        )
        .with_correlation_id("f19faed5-afcf-4d1e-b078-e66ec7a6d4bf");
        assert_eq!(event.event_type(), name);
        assert_eq!(event.envelope().event_type, name);
        let written = serde_json::to_value(&event).expect("the event is written");
        assert_eq!(written["eventType"], Value::from(name));
        let reread: Event = serde_json::from_value(written).expect("the event is read back");
        assert_eq!(reread, event);
    }
}

#[test]
fn a_new_event_gets_a_v4_id_and_a_millisecond_timestamp() {
    let event = Event::new(
        "print-service",
        "b1042279-0862-41c4-b767-58cd68a1c212",
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: "44196935-7814-4853-982f-12d19dc61647".to_owned(),
        }),
    );
    assert_eq!(event.event_id.get_version_num(), 4);
    assert_eq!(event.correlation_id, None);
    let written = serde_json::to_value(&event).expect("the event is written");
    let timestamp = written["timestamp"].as_str().expect("a string timestamp");
    // `YYYY-MM-DDTHH:MM:SS.mmmZ`, like JavaScript's `toISOString()`.
    assert_eq!(timestamp.len(), 24, "{timestamp}");
    assert!(timestamp.ends_with('Z'), "{timestamp}");
}
