//! Internal events and their dispatcher.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use futures::FutureExt;
use serde_json::json;
use uuid::Uuid;

use super::*;

pub(crate) const TENANT: Uuid = Uuid::from_u128(0x7e4a_0000_0000_4000_8000_0000_0000_0001);
pub(crate) const ORDER: Uuid = Uuid::from_u128(0x0a0d_0000_0000_4000_8000_0000_0000_0002);
const LINE_ITEM: Uuid = Uuid::from_u128(0x11e0_0000_0000_4000_8000_0000_0000_0003);
const PRINT_JOB: Uuid = Uuid::from_u128(0x9b1a_0000_0000_4000_8000_0000_0000_0004);
const SHIPMENT: Uuid = Uuid::from_u128(0x5b1b_0000_0000_4000_8000_0000_0000_0005);

/// One event of every kind, all for [`TENANT`] and [`ORDER`].
pub(crate) fn every_kind() -> Vec<InternalEvent> {
    let order = OrderRef {
        tenant_id: TENANT,
        order_id: ORDER,
    };
    let job = PrintJobRef {
        tenant_id: TENANT,
        print_job_id: PRINT_JOB,
        order_id: ORDER,
        line_item_id: LINE_ITEM,
    };
    vec![
        InternalEvent::OrderCreated(OrderCreated {
            tenant_id: TENANT,
            order_id: ORDER,
            line_items: vec![OrderLineItem {
                line_item_id: LINE_ITEM,
                product_sku: "GRID-2x3-MAG-NONE".into(),
                quantity: 2,
            }],
        }),
        InternalEvent::OrderStatusChanged(StatusChanged {
            tenant_id: TENANT,
            order_id: ORDER,
            previous_status: "PENDING".into(),
            new_status: "PROCESSING".into(),
        }),
        InternalEvent::OrderCancelled(OrderCancelled {
            tenant_id: TENANT,
            order_id: ORDER,
            reason: Some("customer asked".into()),
        }),
        InternalEvent::OrderReadyForFulfillment(order),
        InternalEvent::OrderFulfilled(order),
        InternalEvent::OrderFailed(OrderFailed {
            tenant_id: TENANT,
            order_id: ORDER,
            reason: "every print job failed".into(),
        }),
        InternalEvent::OrderLinesUnmapped(OrderLinesUnmapped {
            tenant_id: TENANT,
            order_id: ORDER,
            skus: vec!["MYSTERY".into()],
        }),
        InternalEvent::PrintJobCreated(job),
        InternalEvent::PrintJobStatusChanged(PrintJobStatusChanged {
            job,
            previous_status: "QUEUED".into(),
            new_status: "PRINTING".into(),
        }),
        InternalEvent::PrintJobCompleted(job),
        InternalEvent::PrintJobFailed(PrintJobFailed {
            job,
            error_message: "nozzle clogged".into(),
        }),
        InternalEvent::PrintJobCancelled(job),
        InternalEvent::PrintJobRetryRequested(job),
        InternalEvent::ShipmentCreated(ShipmentCreated {
            tenant_id: TENANT,
            shipment_id: SHIPMENT,
            order_id: ORDER,
            tracking_number: Some("3SABCD0123456".into()),
            tracking_url: Some("https://tracking.example/3SABCD0123456".into()),
            carrier: None,
        }),
        InternalEvent::ShipmentStatusChanged(ShipmentStatusChanged {
            tenant_id: TENANT,
            shipment_id: SHIPMENT,
            order_id: ORDER,
            previous_status: "Ready to send".into(),
            new_status: "En route to sorting center".into(),
        }),
        InternalEvent::FulfillmentCreated(order),
        InternalEvent::FulfillmentFailed(FulfillmentFailed {
            tenant_id: TENANT,
            order_id: ORDER,
            error_message: "Shopify answered 502".into(),
        }),
        InternalEvent::FulfillmentRetrying(FulfillmentRetrying {
            tenant_id: TENANT,
            order_id: ORDER,
            attempt: 2,
        }),
    ]
}

/// A subscriber that notes `(label, event name)` for every event it is given.
fn recorder(
    seen: &Arc<Mutex<Vec<(&'static str, &'static str)>>>,
    label: &'static str,
) -> impl Fn(&InternalEvent) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    let seen = seen.clone();
    move |event: &InternalEvent| {
        let (seen, name) = (seen.clone(), event.name());
        async move { seen.lock().unwrap().push((label, name)) }.boxed()
    }
}

#[test]
fn every_kind_of_event_has_its_own_listed_name_and_knows_its_tenant_and_order() {
    let events = every_kind();
    let names: HashSet<&str> = events.iter().map(InternalEvent::name).collect();
    assert_eq!(names.len(), events.len(), "no two kinds share a name");
    assert_eq!(
        names,
        names::ALL.into_iter().collect(),
        "names::ALL lists exactly the kinds"
    );
    for event in &events {
        assert_eq!(
            (event.tenant_id(), event.order_id()),
            (TENANT, ORDER),
            "{}",
            event.name()
        );
    }
}

#[test]
fn an_event_serializes_to_its_camel_case_payload() {
    let failed = every_kind()
        .into_iter()
        .find(|e| e.name() == names::PRINT_JOB_FAILED)
        .unwrap();
    assert_eq!(
        serde_json::to_value(&failed).unwrap(),
        json!({
            "tenantId": TENANT,
            "printJobId": PRINT_JOB,
            "orderId": ORDER,
            "lineItemId": LINE_ITEM,
            "errorMessage": "nozzle clogged",
        })
    );
}

#[tokio::test]
async fn subscribers_of_a_name_get_its_events_and_a_star_subscriber_gets_all() {
    let dispatcher = Dispatcher::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    dispatcher.subscribe(names::PRINT_JOB_COMPLETED, recorder(&seen, "orchestration"));
    dispatcher.subscribe(names::PRINT_JOB_COMPLETED, recorder(&seen, "push"));
    dispatcher.subscribe(names::ANY, recorder(&seen, "socket.io"));

    for event in every_kind() {
        dispatcher.clone().emit(event).await;
    }

    let seen = seen.lock().unwrap().clone();
    let of = |label| -> Vec<&str> {
        seen.iter()
            .filter(|(l, _)| *l == label)
            .map(|(_, name)| *name)
            .collect()
    };
    assert_eq!(of("orchestration"), vec![names::PRINT_JOB_COMPLETED]);
    assert_eq!(of("push"), vec![names::PRINT_JOB_COMPLETED]);
    assert_eq!(
        of("socket.io"),
        names::ALL.to_vec(),
        "every event, in emit order"
    );
}

/// What is told again (a bus redelivery of what the print side told) reaches the subscribers that
/// record each occurrence once, and not those that would show it twice.
#[tokio::test]
async fn an_event_told_again_reaches_only_the_subscribers_that_asked_for_redeliveries() {
    let dispatcher = Dispatcher::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    dispatcher.subscribe_with_redeliveries(names::PRINT_JOB_FAILED, recorder(&seen, "e-mail"));
    dispatcher.subscribe(names::ANY, recorder(&seen, "socket.io"));
    let failed = every_kind()
        .into_iter()
        .find(|e| e.name() == names::PRINT_JOB_FAILED)
        .unwrap();

    dispatcher.emit(failed.clone()).await;
    dispatcher.emit_again(failed).await;

    let seen = seen.lock().unwrap().clone();
    let labels: Vec<&str> = seen.iter().map(|(label, _)| *label).collect();
    let told = |label| labels.iter().filter(|l| **l == label).count();
    assert_eq!((told("e-mail"), told("socket.io")), (2, 1), "{labels:?}");
}

#[tokio::test]
async fn a_panicking_subscriber_does_not_stop_the_others() {
    let dispatcher = Dispatcher::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    dispatcher.subscribe(
        names::ORDER_FAILED,
        |_: &InternalEvent| -> futures::future::BoxFuture<'static, ()> {
            panic!("a subscriber that panics before returning its future")
        },
    );
    dispatcher.subscribe(names::ORDER_FAILED, |_: &InternalEvent| {
        async { panic!("a subscriber that panics while running") }.boxed()
    });
    dispatcher.subscribe(names::ORDER_FAILED, recorder(&seen, "notifications"));
    dispatcher.subscribe(names::ANY, recorder(&seen, "event log"));

    let failed = every_kind()
        .into_iter()
        .find(|e| e.name() == names::ORDER_FAILED)
        .unwrap();
    dispatcher.emit(failed.clone()).await;
    dispatcher.emit(failed).await;

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.iter().filter(|(l, _)| *l == "notifications").count(),
        2
    );
    assert_eq!(seen.iter().filter(|(l, _)| *l == "event log").count(), 2);
}
