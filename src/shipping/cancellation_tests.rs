//! A cancelled order's parcel against the Sendcloud simulator over loopback, on both databases:
//! cancelled through an outage, a refusal, and a crash.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use super::{Answer, LEASE, ask, claim_due, request as record};
use crate::each_database;
use crate::events::catalog::{Event, EventPayload, OrderCancelled};
use crate::infra::db::Db;
use crate::on_pool;
use crate::shipping::parcels;
use crate::shipping::sendcloud::status;
use crate::shipping::shipments::{Shipment, ShipmentRequest, ShipmentStatus, repository};
use crate::shipping::subscriber;
use crate::shipping::tests::{Sendclouded, request};
use crate::testing::eventually;

/// `order.cancelled` for the request's order, as the bus hands it to the shipping side.
fn order_cancelled(request: &ShipmentRequest) -> Event {
    let payload = EventPayload::OrderCancelled(OrderCancelled {
        order_id: request.order_id.to_string(),
    });
    Event::new("order-service", request.tenant_id.to_string(), payload)
}

/// The parcel's cancellation as its shipment's row records it.
#[derive(Debug, sqlx::FromRow)]
struct Recorded {
    cancel_requested_at: Option<DateTime<Utc>>,
    cancel_after: Option<DateTime<Utc>>,
    cancel_attempts: i64,
    cancel_error: Option<String>,
}

async fn recorded(db: &Db, id: Uuid) -> Recorded {
    on_pool!(db, pool => {
        sqlx::query_as::<_, Recorded>(
            "SELECT cancel_requested_at, cancel_after, cancel_attempts, cancel_error \
             FROM shipments WHERE id = $1",
        )
        .bind(id)
        .fetch_one(pool)
        .await
    })
    .unwrap()
}

async fn stored(setup: &Sendclouded, shipment: &Shipment) -> Shipment {
    repository::find(&setup.core.db, shipment.tenant_id, shipment.id)
        .await
        .unwrap()
        .unwrap()
}

/// Runs the parcel sender until `shipment` is CANCELLED, and checks Sendcloud cancelled `parcel`.
async fn cancelled_by_the_sender(setup: &Sendclouded, shipment: &Shipment, parcel: i64) {
    let (core, client) = (&setup.core, &setup.client);
    eventually(
        "the sender cancels the parcel",
        Duration::from_secs(30),
        || async move {
            parcels::pass(core, client).await.unwrap();
            let now = stored(setup, shipment).await;
            (now.status == ShipmentStatus::Cancelled).then_some(())
        },
    )
    .await;
    let at_sendcloud = setup
        .sim
        .parcels()
        .into_iter()
        .find(|p| p.id == parcel)
        .unwrap();
    assert_eq!(at_sendcloud.status_id, status::CANCELLED);
}

/// A shipment whose parcel Sendcloud has made (ready to send), and the parcel's id.
async fn announced(setup: &Sendclouded, request: &ShipmentRequest) -> (Shipment, i64) {
    let (shipment, _) = setup.core.request(request).await.unwrap();
    assert_eq!(parcels::pass(&setup.core, &setup.client).await.unwrap(), 1);
    let parcel = setup.sim.parcels()[0].id;
    (shipment, parcel)
}

each_database! {
    /// Sendcloud answers 503 to the cancellation of a cancelled order's parcel. The order's
    /// cancellation is handled all the same (its bus job is done), with the request recorded on
    /// the shipment; the parcel sender asks again until Sendcloud answers, and the parcel is
    /// cancelled rather than shipped.
    async fn a_parcel_sendcloud_cannot_cancel_now_is_cancelled_once_it_answers(backend: Backend) {
        let setup = &Sendclouded::start(backend).await;
        let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
        let request = request();
        let (shipment, parcel) = announced(setup, &request).await;
        let shipment = &shipment;

        sim.set_cancellations_unavailable(true);
        subscriber::cancel_shipment(core, &order_cancelled(&request)).await.unwrap();
        assert_eq!(stored(setup, shipment).await.status, ShipmentStatus::Announced);
        assert_eq!(sim.parcels()[0].status_id, status::READY_TO_SEND, "not cancelled yet");
        let waiting = recorded(&core.db, shipment.id).await;
        assert!(
            waiting.cancel_requested_at.is_some() && waiting.cancel_after.is_some(),
            "{waiting:?}"
        );
        assert_eq!(waiting.cancel_attempts, 1);
        assert!(
            waiting.cancel_error.as_deref().is_some_and(|e| e.contains("503")),
            "{waiting:?}"
        );
        // Still unavailable when its backoff runs out: asked again, and it waits on.
        eventually("a second attempt", Duration::from_secs(30), || async move {
            parcels::pass(core, client).await.unwrap();
            (recorded(&core.db, shipment.id).await.cancel_attempts >= 2).then_some(())
        })
        .await;
        assert_eq!(stored(setup, shipment).await.status, ShipmentStatus::Announced);

        sim.set_cancellations_unavailable(false);
        cancelled_by_the_sender(setup, shipment, parcel).await;
        let done = recorded(&core.db, shipment.id).await;
        assert!(
            done.cancel_requested_at.is_none() && done.cancel_after.is_none(),
            "{done:?}"
        );
        assert_eq!((done.cancel_attempts, done.cancel_error), (0, None));
        assert_eq!(parcels::pass(core, client).await.unwrap(), 0, "nothing left to ask");
    }
}

each_database! {
    /// The carrier took the parcel before the order was cancelled: Sendcloud refuses, for good.
    /// The order's cancellation is handled, the refusal is kept on the shipment (which follows
    /// its parcel), and nobody asks Sendcloud again.
    async fn a_parcel_sendcloud_refuses_to_cancel_is_not_asked_about_again(backend: Backend) {
        let setup = &Sendclouded::start(backend).await;
        let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
        let request = request();
        let (shipment, parcel) = announced(setup, &request).await;
        sim.advance(parcel, status::EN_ROUTE_TO_SORTING_CENTER, "En route").await.unwrap();

        subscriber::cancel_shipment(core, &order_cancelled(&request)).await.unwrap();
        assert_eq!(stored(setup, &shipment).await.status, ShipmentStatus::Announced);
        let refused = recorded(&core.db, shipment.id).await;
        assert!(
            refused.cancel_requested_at.is_some() && refused.cancel_after.is_none(),
            "{refused:?}"
        );
        assert!(
            refused.cancel_error.as_deref().is_some_and(|e| e.contains("no longer be cancelled")),
            "{refused:?}"
        );
        let asked = sim.requests().len();
        assert_eq!(parcels::pass(core, client).await.unwrap(), 0);
        assert_eq!(sim.requests().len(), asked, "Sendcloud asked again");
    }
}

each_database! {
    /// Sendcloud refused forma's keys (rotated at Sendcloud, not yet in forma): no refusal of the
    /// cancellation itself, which is asked again, and cancels the parcel once the keys work.
    async fn a_cancellation_refused_for_formas_keys_is_asked_again(backend: Backend) {
        let setup = &Sendclouded::start(backend).await;
        let (sim, core) = (&setup.sim, &setup.core);
        let (shipment, parcel) = announced(setup, &request()).await;
        let shipment = &shipment;
        let mut config = crate::config::Config::default();
        config.sendcloud = sim.config();
        config.sendcloud.secret_key = Some(crate::config::Secret::new("rotated-at-sendcloud"));
        let stale_keys = crate::shipping::sendcloud::Sendcloud::from_config(&config)
            .unwrap()
            .unwrap();
        let mut tx = core.db.begin().await.unwrap();
        let claimed = record(&mut tx, shipment.id, Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        let answer = ask(core, &stale_keys, &claimed).await.unwrap();
        assert!(matches!(answer, Answer::Later), "{answer:?}");
        let waiting = recorded(&core.db, shipment.id).await;
        assert!(waiting.cancel_after.is_some(), "given up: {waiting:?}");

        cancelled_by_the_sender(setup, shipment, parcel).await;
    }
}

each_database! {
    /// The order is cancelled while Sendcloud makes its parcel, and Sendcloud cannot cancel the
    /// new parcel at once: the parcel is kept on the cancelled shipment and cancelled once
    /// Sendcloud answers, not left bought and known to nobody.
    async fn a_parcel_made_as_its_order_is_cancelled_is_cancelled_once_sendcloud_answers(backend: Backend) {
        let setup = &Sendclouded::start(backend).await;
        let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
        let request = request();
        let (shipment, _) = core.request(&request).await.unwrap();
        let lease = TimeDelta::seconds(60);
        let claimed = repository::claim_waiting(&core.db, Utc::now(), lease, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        // Cancelled while the sender holds its claim: there is no parcel to cancel yet.
        subscriber::cancel_shipment(core, &order_cancelled(&request)).await.unwrap();
        assert_eq!(stored(setup, &shipment).await.status, ShipmentStatus::Cancelled);

        sim.set_cancellations_unavailable(true);
        parcels::send(core, client, &claimed[0]).await.unwrap();
        let made = sim.parcels();
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].status_id, status::READY_TO_SEND);
        let parcel = made[0].id;
        sim.set_cancellations_unavailable(false);
        eventually("the stray parcel is cancelled", Duration::from_secs(30), || async move {
            parcels::pass(core, client).await.unwrap();
            let cancelled = sim
                .parcels()
                .iter()
                .any(|p| p.id == parcel && p.status_id == status::CANCELLED);
            cancelled.then_some(())
        })
        .await;
        assert_eq!(stored(setup, &shipment).await.status, ShipmentStatus::Cancelled);
    }
}

each_database! {
    /// Sendcloud queues the cancellation for the carrier, who may still refuse. The shipment is
    /// not taken for cancelled: it stays ANNOUNCED, nothing more is asked, and it follows its
    /// parcel. Here the carrier refused and the parcel moves on: IN_TRANSIT, for everyone to see,
    /// not a CANCELLED shipment whose goods ship.
    async fn a_queued_cancellation_follows_what_the_carrier_does(backend: Backend) {
        let setup = &Sendclouded::start(backend).await;
        let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
        let request = request();
        let (shipment, parcel) = announced(setup, &request).await;
        sim.set_cancellations_queued(true);
        subscriber::cancel_shipment(core, &order_cancelled(&request)).await.unwrap();
        assert_eq!(sim.parcels()[0].status_id, status::CANCELLATION_REQUESTED);
        assert_eq!(stored(setup, &shipment).await.status, ShipmentStatus::Announced);
        let handled = recorded(&core.db, shipment.id).await;
        assert!(
            handled.cancel_requested_at.is_some() && handled.cancel_after.is_none(),
            "{handled:?}"
        );
        let asked = sim.requests().len();
        assert_eq!(parcels::pass(core, client).await.unwrap(), 0);
        // The order's cancellation delivered again asks nothing more either.
        subscriber::cancel_shipment(core, &order_cancelled(&request)).await.unwrap();
        assert_eq!(sim.requests().len(), asked, "Sendcloud asked again");
        assert_eq!(recorded(&core.db, shipment.id).await.cancel_error, None);
        // Reconciliation hears "cancellation requested": still where it was.
        crate::shipping::reconcile::pass(core, client).await.unwrap();
        assert_eq!(stored(setup, &shipment).await.status, ShipmentStatus::Announced);

        sim.advance(parcel, status::EN_ROUTE_TO_SORTING_CENTER, "En route").await.unwrap();
        crate::shipping::reconcile::pass(core, client).await.unwrap();
        assert_eq!(stored(setup, &shipment).await.status, ShipmentStatus::InTransit);
    }
}

each_database! {
    /// The process was killed after it recorded a cancellation and before Sendcloud answered: the
    /// request waits out the dead claim's lease, then the sender asks and the parcel is cancelled.
    async fn a_cancellation_left_by_a_crash_is_asked_once_its_claim_runs_out(backend: Backend) {
        let setup = &Sendclouded::start(backend).await;
        let (sim, core, client) = (&setup.sim, &setup.core, &setup.client);
        let request = request();
        let (shipment, _) = announced(setup, &request).await;
        // What the killed cancellation left: its claimed request, and no answer.
        let mut tx = core.db.begin().await.unwrap();
        record(&mut tx, shipment.id, Utc::now()).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(parcels::pass(core, client).await.unwrap(), 0, "claimed by the killed process");

        let later = Utc::now() + LEASE + TimeDelta::seconds(1);
        let claimed = claim_due(&core.db, later, 10).await.unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].attempts, 2);
        let answer = ask(core, client, &claimed[0]).await.unwrap();
        assert!(
            matches!(&answer, Answer::Cancelled(Some(s)) if s.status == ShipmentStatus::Cancelled),
            "{answer:?}"
        );
        assert_eq!(sim.parcels()[0].status_id, status::CANCELLED);
        assert!(claim_due(&core.db, later, 10).await.unwrap().is_empty(), "nothing left");
    }
}
