//! The shipping side against the Sendcloud simulator over loopback, on a real database.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::parcels::{self, parcel_request};
use super::sendcloud::Sendcloud;
use super::sendcloud::status;
use super::shipments::repository::ParcelState;
use super::shipments::{Recipient, ShipmentItem, ShipmentRequest, ShipmentStatus, repository};
use super::{ShippingCore, reconcile, subscriber};
use crate::clients::order::InProcessOrderClient;
use crate::config::Config;
use crate::config::Role;
use crate::events::catalog::{Event, EventPayload, OrderReadyForFulfillment};
use crate::infra::db::Backend;
use crate::order::flow_tests::{Deployment, SHOP, deliver, line, order_numbered};
use crate::simulators::sendcloud::SendcloudSim;
use crate::simulators::shopify::{self, Delivery};
use crate::testing::TestApp;

pub(super) fn request() -> ShipmentRequest {
    ShipmentRequest {
        tenant_id: Uuid::new_v4(),
        order_id: Uuid::new_v4(),
        order_number: "#2001".into(),
        recipient: Recipient {
            name: "Grace Hopper".into(),
            address1: "Coolsingel 40".into(),
            city: "Rotterdam".into(),
            postal_code: "3011 AD".into(),
            country_code: "NL".into(),
            ..Recipient::default()
        },
        items: vec![ShipmentItem {
            sku: "CUBE".into(),
            description: "Cube".into(),
            quantity: 1,
            unit_price: "5.00".into(),
        }],
    }
}

async fn core(app: &TestApp, sim: &SendcloudSim) -> (ShippingCore, Arc<Sendcloud>) {
    let mut config = Config::default();
    config.sendcloud = sim.config();
    let client = Arc::new(Sendcloud::from_config(&config).unwrap().unwrap());
    let core = ShippingCore {
        sendcloud: Some(client.clone()),
        ..ShippingCore::detached(app.ctx.db.clone())
    };
    (core, client)
}

/// A role `all` app, Sendcloud's simulator, and the shipping core and client on both. The
/// simulator stops when this is dropped.
pub(super) struct Sendclouded {
    pub(super) sim: SendcloudSim,
    _app: TestApp,
    pub(super) core: ShippingCore,
    pub(super) client: Arc<Sendcloud>,
    _stop: tokio_util::sync::DropGuard,
}

impl Sendclouded {
    pub(super) async fn start(backend: Backend) -> Self {
        let stop = CancellationToken::new();
        let sim = SendcloudSim::start(stop.clone()).await.unwrap();
        let app = TestApp::spawn(Role::All, backend).await;
        let (core, client) = core(&app, &sim).await;
        Self {
            sim,
            _app: app,
            core,
            client,
            _stop: stop.drop_guard(),
        }
    }
}

/// The process was killed after Sendcloud made the parcel and before forma stored its id: the
/// next attempt finds the parcel by its order number and adopts it.
#[tokio::test]
async fn a_parcel_made_before_a_crash_is_adopted_not_made_twice() {
    let setup = Sendclouded::start(Backend::Sqlite).await;
    let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
    let request = request();
    // What the killed attempt did: the parcel exists at Sendcloud, forma's shipment waits.
    let made = client
        .create_parcel(&parcel_request(&request))
        .await
        .unwrap();
    let (shipment, _) = core.request(&request).await.unwrap();
    assert_eq!(shipment.status, ShipmentStatus::Pending);

    assert_eq!(parcels::pass(core, client).await.unwrap(), 1);
    let stored = repository::find(&core.db, request.tenant_id, shipment.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (stored.sendcloud_parcel_id, stored.status),
        (Some(made.id), ShipmentStatus::Announced)
    );
    assert_eq!(sim.parcels().len(), 1, "no second parcel");
    assert_eq!(
        parcels::pass(core, client).await.unwrap(),
        0,
        "nothing waits"
    );
}

/// A failing Sendcloud leaves the shipment waiting with the error on it; it is tried again after
/// its backoff and the parcel is made once.
#[tokio::test]
async fn a_failing_sendcloud_leaves_the_shipment_waiting_and_it_is_made_once_later() {
    let setup = Sendclouded::start(Backend::Postgres).await;
    let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
    let request = request();
    let (shipment, _) = core.request(&request).await.unwrap();

    sim.set_failing(true);
    assert_eq!(parcels::pass(core, client).await.unwrap(), 1);
    let waiting = repository::find(&core.db, request.tenant_id, shipment.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(waiting.status, ShipmentStatus::Pending);
    assert!(
        waiting
            .error_message
            .as_deref()
            .is_some_and(|e| e.contains("unavailable")),
        "{waiting:?}"
    );

    sim.set_failing(false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        parcels::pass(core, client).await.unwrap();
        let now = repository::find(&core.db, request.tenant_id, shipment.id)
            .await
            .unwrap()
            .unwrap();
        if now.status == ShipmentStatus::Announced {
            assert_eq!(now.error_message, None);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never made: {now:?}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(sim.parcels().len(), 1);
}

/// `order.cancelled` and `order.ready-for-fulfillment` travel in queues of their own (SPEC §8.1),
/// so the cancellation can be handled first and find no shipment: the ready event that follows
/// must not make one for the cancelled order.
#[tokio::test]
async fn an_order_cancelled_before_its_ready_event_is_handled_gets_no_shipment() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    let document = shopify::order_document(470, 1470, &[line(1, "NOPE", 1)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let order = order_numbered(&admin, app, 1470).await;
    let id = order["id"].as_str().unwrap();
    let response = admin
        .post(app.url(&format!("/api/v1/orders/{id}/cancel")))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let order_id = Uuid::parse_str(id).unwrap();
    let tenant_id = Uuid::parse_str(order["tenantId"].as_str().unwrap()).unwrap();

    let core = ShippingCore::detached(app.ctx.db.clone());
    let orders = InProcessOrderClient::of(&app.ctx);
    let ready = EventPayload::OrderReadyForFulfillment(OrderReadyForFulfillment {
        order_id: id.to_owned(),
    });
    let event = Event::new("order-service", tenant_id.to_string(), ready);
    subscriber::request_shipment(&core, &orders, &event)
        .await
        .unwrap();
    assert!(core.of_order(tenant_id, order_id).await.unwrap().is_empty());
}

/// Replica A claims a shipment and is slow; its lease runs out, replica B claims it and stores the
/// parcel. When A gets to it, it adopts that same parcel by the order number, finds the shipment
/// no longer waiting, and must leave the shipment's parcel alone.
#[tokio::test]
async fn a_claim_whose_lease_ran_out_leaves_the_parcel_another_replica_stored() {
    let setup = Sendclouded::start(Backend::Sqlite).await;
    let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
    let request = request();
    let (shipment, _) = core.request(&request).await.unwrap();
    let lease = chrono::TimeDelta::seconds(60);
    let long_ago = chrono::Utc::now() - lease - chrono::TimeDelta::seconds(1);
    let slow = repository::claim_waiting(&core.db, long_ago, lease, 10)
        .await
        .unwrap();
    assert_eq!(slow.len(), 1);

    assert_eq!(parcels::pass(core, client).await.unwrap(), 1, "B claims it");
    parcels::send(core, client, &slow[0]).await.unwrap();

    let stored = repository::find(&core.db, request.tenant_id, shipment.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.status, ShipmentStatus::Announced);
    let parcels = sim.parcels();
    assert_eq!(parcels.len(), 1, "no second parcel");
    assert_eq!(Some(parcels[0].id), stored.sendcloud_parcel_id);
    assert_ne!(
        parcels[0].status_id,
        crate::shipping::sendcloud::parcel::status::CANCELLED,
        "the shipment's parcel was cancelled"
    );
}

/// Reconciliation asks about a limited number of parcels per pass. A parcel not asked about in one
/// pass is asked about in the next, however many others stay as they are, Sendcloud no longer
/// knows, or Sendcloud refuses to tell of. On PostgreSQL, where NULLs sort last unless told.
#[tokio::test]
async fn reconciliation_asks_about_every_parcel_in_turn() {
    let setup = Sendclouded::start(Backend::Postgres).await;
    let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
    // Two hundred shipments whose parcels Sendcloud no longer knows, then one it does.
    for parcel_id in 1..=200 {
        let (shipment, _) = core.request(&request()).await.unwrap();
        let state = ParcelState {
            parcel_id: 9_000_000 + parcel_id,
            status_id: status::READY_TO_SEND,
            carrier: None,
            tracking_number: None,
            tracking_url: None,
            label_url: None,
            sent_at: None,
        };
        core.parcel_created(shipment.id, &state).await.unwrap();
    }
    let request = request();
    let (shipment, _) = core.request(&request).await.unwrap();
    assert_eq!(parcels::pass(core, client).await.unwrap(), 1);
    let parcel = sim.parcels()[0].id;

    assert_eq!(reconcile::pass(core, client).await.unwrap(), 0);
    // The carrier takes the parcel, and the webhook is missed.
    sim.advance(parcel, status::EN_ROUTE_TO_SORTING_CENTER, "En route")
        .await
        .unwrap();
    assert_eq!(reconcile::pass(core, client).await.unwrap(), 1);
    let moved = repository::find(&core.db, request.tenant_id, shipment.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.status, ShipmentStatus::InTransit);
}

/// Sendcloud retries a webhook it got no answer to, and a signed body can be posted again: a
/// webhook sent before the one whose status the shipment shows is older news and moves nothing
/// back. What forma asks for itself (reconciliation) is the latest there is.
#[tokio::test]
async fn a_late_sendcloud_webhook_does_not_move_the_shipment_back() {
    let setup = Sendclouded::start(Backend::Postgres).await;
    let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
    let request = request();
    let (shipment, _) = core.request(&request).await.unwrap();
    assert_eq!(parcels::pass(core, client).await.unwrap(), 1);
    let parcel = sim.parcels()[0].id;
    let reported = |status_id: i64, sent_at: Option<chrono::DateTime<chrono::Utc>>| ParcelState {
        parcel_id: parcel,
        status_id,
        carrier: None,
        tracking_number: None,
        tracking_url: None,
        label_url: None,
        sent_at,
    };
    let status = || async {
        let stored = repository::find(&core.db, request.tenant_id, shipment.id).await;
        stored.unwrap().unwrap().status
    };
    let sent = chrono::Utc::now();
    let en_route = reported(status::EN_ROUTE_TO_SORTING_CENTER, Some(sent));
    core.parcel_changed(&en_route).await.unwrap();
    assert_eq!(status().await, ShipmentStatus::InTransit);

    let earlier = sent - chrono::TimeDelta::seconds(30);
    let late = reported(status::READY_TO_SEND, Some(earlier));
    core.parcel_changed(&late).await.unwrap();
    assert_eq!(status().await, ShipmentStatus::InTransit, "moved back");

    core.parcel_changed(&reported(status::DELIVERED, None))
        .await
        .unwrap();
    assert_eq!(status().await, ShipmentStatus::Delivered);
}
