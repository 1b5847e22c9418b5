//! Every kind of news pushed once along the real order flow, in role `all` on SQLite and split
//! (two gateways, two order services) on PostgreSQL and Redis: a new order, its status changes, a
//! failed print job (reported by the print side and again over the bus) and a shipment.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::order::flow_tests::{Deployment, SHOP, SP_TOKEN, deliver, line, map, order_numbered};
use crate::simulators::push::PushServiceSim;
use crate::simulators::shopify::{self, Delivery};
use crate::testing::eventually;

const WAIT: Duration = Duration::from_secs(60);

fn pushed(service: &PushServiceSim, order_id: &str, kind: &str) -> Vec<Value> {
    service
        .delivered()
        .into_iter()
        .map(|d| d.payload)
        .filter(|p| p["orderId"] == order_id && p["type"] == kind)
        .collect()
}

async fn every_kind_of_news_is_pushed_once(deployment: Deployment) {
    let stop = CancellationToken::new();
    let service = PushServiceSim::start(stop.clone()).await.unwrap();
    let gateway = deployment.gateway(0);
    let admin = gateway.admin().await;
    let browser = service.subscribe();
    let subscribed = admin
        .post(gateway.url("/api/v1/push/subscriptions"))
        .json(&browser)
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 201);
    map(
        &admin,
        gateway,
        "CUBE",
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let farm = &deployment.farm;
    let hook = gateway.url("/api/v1/webhooks/simplyprint");

    // Order 2001: its one print fails.
    let document = shopify::order_document(6_600_001, 2001, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(
        deployment.gateway(1),
        &Delivery::new("orders/create", SHOP, &document),
    )
    .await;
    assert_eq!(status, 200);
    let failing = eventually("the farm has the first job", WAIT, || async {
        farm.items().into_iter().next()
    })
    .await;
    assert_eq!(
        farm.report(failing.id, "job.failed", &hook, SP_TOKEN)
            .await
            .unwrap(),
        200
    );
    let failed_order = order_numbered(&admin, gateway, 2001).await;
    let failed_id = failed_order["id"].as_str().unwrap().to_owned();

    // Order 2002: printed, then shipped.
    deployment.carriers.shop.add_order(6_600_002, &[(1, 1)]);
    let document = shopify::order_document(6_600_002, 2002, &[line(1, "CUBE", 1)]);
    let (status, _) = deliver(
        deployment.gateway(1),
        &Delivery::new("orders/create", SHOP, &document),
    )
    .await;
    assert_eq!(status, 200);
    let printed = eventually("the farm has the second job", WAIT, || async {
        farm.items().into_iter().find(|i| i.id != failing.id)
    })
    .await;
    assert_eq!(
        farm.report(printed.id, "job.done", &hook, SP_TOKEN)
            .await
            .unwrap(),
        200
    );
    let shipped_order = order_numbered(&admin, gateway, 2002).await;
    let shipped_id = shipped_order["id"].as_str().unwrap().to_owned();

    eventually("the parcel's push", WAIT, || async {
        (!pushed(&service, &shipped_id, "shipment.created").is_empty()).then_some(())
    })
    .await;
    // The order side reports the failed job again when the bus brings it, just before it moves
    // the order: once the order's move is pushed, both reports were made.
    eventually("the failed order's move", WAIT, || async {
        let moves = pushed(&service, &failed_id, "order.status_changed");
        moves
            .iter()
            .any(|m| {
                m["body"]
                    .as_str()
                    .is_some_and(|b| b.starts_with("processing →"))
            })
            .then_some(())
    })
    .await;
    let db = &gateway.ctx.db;
    eventually("every push sent", WAIT, || async {
        let pending = crate::on_pool!(db, pool => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM push_messages WHERE status <> 'SENT'")
                .fetch_one(pool)
                .await
                .unwrap()
        });
        (pending == 0).then_some(())
    })
    .await;

    let failures = pushed(&service, &failed_id, "printjob.failed");
    assert_eq!(failures.len(), 1, "one push per failure: {failures:?}");
    assert_eq!(failures[0]["title"], "Print job failed for order #2001");
    for order_id in [&failed_id, &shipped_id] {
        assert_eq!(pushed(&service, order_id, "order.created").len(), 1);
    }
    let parcels = pushed(&service, &shipped_id, "shipment.created");
    assert_eq!(parcels.len(), 1, "{parcels:?}");
    let moves: Vec<Value> = pushed(&service, &shipped_id, "order.status_changed")
        .into_iter()
        .map(|m| m["body"].clone())
        .collect();
    assert!(
        moves.contains(&json!("processing → ready for fulfillment")),
        "{moves:?}"
    );
    let distinct: std::collections::HashSet<String> = moves.iter().map(Value::to_string).collect();
    assert_eq!(
        distinct.len(),
        moves.len(),
        "no move is pushed twice: {moves:?}"
    );
    assert!(service.refusals().is_empty(), "{:?}", service.refusals());
    stop.cancel();
}

#[tokio::test]
async fn every_kind_of_news_is_pushed_once_in_role_all() {
    every_kind_of_news_is_pushed_once(Deployment::all().await).await;
}

#[tokio::test]
async fn every_kind_of_news_is_pushed_once_split() {
    every_kind_of_news_is_pushed_once(Deployment::split().await).await;
}
