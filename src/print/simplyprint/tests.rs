//! The print farm integration against the SimplyPrint simulator, over real HTTP both ways.

use std::time::Duration;

use serde_json::{Value, json};

use super::client::SimplyPrint;
use super::{dispatch, reconcile};
use crate::infra::db::{Conn, Db};
use crate::on_conn;
use crate::order::flow_tests::{
    Deployment, SHOP, SP_TOKEN, deliver, get_json, integrations, line, map, order_numbered,
};
use crate::simulators::shopify::{self, Delivery};
use crate::simulators::simplyprint::Item;
use crate::testing::{TestApp, eventually};

const WAIT: Duration = Duration::from_secs(60);

/// An order of `quantity` cubes (one job each), and its jobs once planned.
async fn order_of_cubes(
    deployment: &Deployment,
    number: u64,
    quantity: u32,
) -> (reqwest::Client, String, Vec<Value>) {
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    map(
        &admin,
        app,
        &format!("CUBE-{number}"),
        json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]),
    )
    .await;
    let document = shopify::order_document(
        number,
        number,
        &[line(1, &format!("CUBE-{number}"), quantity)],
    );
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let id = order_numbered(&admin, app, number).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let url = app.url(&format!("/api/v1/print-jobs?orderId={id}"));
    let jobs = eventually("the jobs are planned", WAIT, || async {
        let page = get_json(&admin, &url).await;
        let items = page["items"].as_array()?.clone();
        (items.len() == quantity as usize).then_some(items)
    })
    .await;
    (admin, id, jobs)
}

async fn farm_items(deployment: &Deployment, n: usize) -> Vec<Item> {
    eventually(&format!("the farm has {n} items"), WAIT, || async {
        let items = deployment.farm.items();
        (items.len() >= n).then_some(items)
    })
    .await
}

async fn job(admin: &reqwest::Client, app: &TestApp, id: &str) -> Value {
    get_json(admin, &app.url(&format!("/api/v1/print-jobs/{id}"))).await
}

/// A SimplyPrint client of the deployment's farm, for a test that makes the sender's passes
/// itself (the deployment has no credentials, so no sender runs).
fn farm_client(deployment: &Deployment) -> SimplyPrint {
    let mut config = (*deployment.gateway(0).ctx.config).clone();
    integrations(&mut config, Some(&deployment.farm));
    SimplyPrint::from_config(&config).unwrap().unwrap()
}

fn sqlite(db: &Db) -> &sqlx::SqlitePool {
    let Db::Sqlite(pool) = db else {
        panic!("role all in these tests runs on SQLite")
    };
    pool
}

/// Makes the database refuse (or accept again) to record any SimplyPrint id, as a failing
/// database would.
async fn refuse_simplyprint_ids(pool: &sqlx::SqlitePool, refuse: bool) {
    let statement = if refuse {
        "CREATE TRIGGER refuse_simplyprint_ids BEFORE UPDATE OF simplyprint_job_id ON print_jobs \
         WHEN NEW.simplyprint_job_id IS NOT NULL BEGIN SELECT RAISE(ABORT, 'refused'); END"
    } else {
        "DROP TRIGGER refuse_simplyprint_ids"
    };
    sqlx::query(statement).execute(pool).await.unwrap();
}

/// An order of one cube whose job the farm has, with SimplyPrint's id recorded: the admin, the
/// job's id and the farm's item.
async fn one_job_at_the_farm(
    deployment: &Deployment,
    number: u64,
) -> (reqwest::Client, String, Item) {
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(deployment, number, 1).await;
    let job_id = jobs[0]["id"].as_str().unwrap().to_owned();
    let item = farm_items(deployment, 1).await.remove(0);
    eventually("the job was sent", WAIT, || async {
        job(&admin, app, &job_id).await["simplyPrintJobId"]
            .is_string()
            .then_some(())
    })
    .await;
    (admin, job_id, item)
}

/// `POST /api/v1/print-jobs/{id}/cancel`'s status.
async fn cancel(admin: &reqwest::Client, app: &TestApp, job_id: &str) -> u16 {
    let url = app.url(&format!("/api/v1/print-jobs/{job_id}/cancel"));
    admin.post(url).send().await.unwrap().status().as_u16()
}

/// `POST /api/v1/print-jobs/{id}/retry`'s status.
async fn retry(admin: &reqwest::Client, app: &TestApp, job_id: &str) -> u16 {
    let url = app.url(&format!("/api/v1/print-jobs/{job_id}/retry"));
    admin.post(url).send().await.unwrap().status().as_u16()
}

/// Delivers SimplyPrint's webhook `event` about farm item `item`, tagged with job `job_id`, as the
/// farm would; returns forma's outcome.
async fn webhook(app: &TestApp, webhook_id: &str, event: &str, item: &str, job_id: &str) -> Value {
    let body = json!({"webhook_id": webhook_id, "event": event, "timestamp": 1_767_225_600,
        "data": {"job": {"id": item.parse::<u64>().unwrap(), "uid": job_id}, "printer": {"id": 7}}});
    let response = crate::testing::client()
        .post(app.url("/api/v1/webhooks/simplyprint"))
        .header("x-sp-token", SP_TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json::<Value>().await.unwrap()["outcome"].clone()
}

/// An order of one cube whose job a pass of the test's own (through `client`, the deployment
/// having no sender) sent to the farm: the admin, the job's id and SimplyPrint's id of its item.
async fn one_job_sent_by_hand(
    deployment: &Deployment,
    client: &SimplyPrint,
    number: u64,
) -> (reqwest::Client, String, String) {
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(deployment, number, 1).await;
    assert_eq!(dispatch::pass(&app.ctx.db, client).await.unwrap(), 1);
    let id = jobs[0]["id"].as_str().unwrap().to_owned();
    let item = job(&admin, app, &id).await["simplyPrintJobId"]
        .as_str()
        .unwrap()
        .to_owned();
    (admin, id, item)
}

#[tokio::test]
async fn without_credentials_jobs_wait_queued_and_health_says_disconnected() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9001, 2).await;
    assert!(
        jobs.iter()
            .all(|j| j["status"] == "QUEUED" && j["simplyPrintJobId"].is_null())
    );
    let health = get_json(&admin, &app.url("/health")).await;
    assert_eq!(
        health["checks"]["simplyprint"]["status"], "disabled",
        "{health}"
    );
    assert!(
        health["checks"]["simplyprint"]["message"]
            .as_str()
            .unwrap()
            .starts_with("disconnected")
    );
    assert_eq!(health["status"], "ok");
    assert!(
        deployment.farm.requests().is_empty(),
        "nothing is sent anywhere"
    );
}

#[tokio::test]
async fn a_failing_farm_delays_a_job_but_never_loses_or_doubles_it() {
    let deployment = Deployment::all().await;
    deployment.farm.fail_next(2);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9002, 1).await;
    let items = farm_items(&deployment, 1).await;
    assert_eq!(items.len(), 1);
    let job_id = jobs[0]["id"].as_str().unwrap();
    assert_eq!(items[0].note, job_id);
    let adds = deployment
        .farm
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/queue/AddItem"))
        .count();
    assert_eq!(
        adds, 2,
        "one refused attempt, then one that arrived (the 500 before it was a lookup)"
    );
    let sent = eventually("the job has SimplyPrint's id", WAIT, || async {
        let job = job(&admin, deployment.gateway(0), job_id).await;
        job["simplyPrintJobId"].is_string().then_some(job)
    })
    .await;
    assert_eq!(sent["simplyPrintJobId"], items[0].id.to_string());
    let app = deployment.gateway(0);
    let mut conn = Conn::Pool(&app.ctx.db);
    let attempts = on_conn!(&mut conn, c => {
        sqlx::query_scalar::<_, i64>("SELECT dispatch_attempts FROM print_jobs WHERE id = $1")
            .bind(uuid::Uuid::parse_str(job_id).unwrap())
            .fetch_one(c)
            .await
    })
    .unwrap();
    assert_eq!(attempts, 3, "two failures, one success");
}

#[tokio::test]
async fn jobs_that_reached_the_farm_but_could_not_be_recorded_do_not_stop_their_pass() {
    // No credentials, so no sender runs: the test makes the passes itself.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9003, 4).await;
    let db = &app.ctx.db;
    let pool = sqlite(db);
    // The database refuses to record any SimplyPrint id, as a failing database would.
    refuse_simplyprint_ids(pool, true).await;
    let client = farm_client(&deployment);

    // Every job of the pass is tried, not only those before the first failure.
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 4);
    assert_eq!(deployment.farm.items().len(), 4);
    for j in &jobs {
        let job = job(&admin, app, j["id"].as_str().unwrap()).await;
        assert!(job["simplyPrintJobId"].is_null(), "{job}");
    }
    let (leased, with_error) = sqlx::query_as::<_, (i64, i64)>(
        "SELECT COUNT(dispatch_lease_until), COUNT(dispatch_error) FROM print_jobs",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        (leased, with_error),
        (0, 4),
        "each job waits for its backoff, not for its lease, and says why"
    );

    // Once the database records again, the next passes adopt the farm's items: none is sent twice.
    refuse_simplyprint_ids(pool, false).await;
    for j in &jobs {
        let id = j["id"].as_str().unwrap();
        let recorded = eventually("the job has SimplyPrint's id", WAIT, || async {
            dispatch::pass(db, &client).await.ok()?;
            let job = job(&admin, app, id).await;
            job["simplyPrintJobId"].is_string().then_some(job)
        })
        .await;
        let item = deployment.farm.items().into_iter().find(|i| i.note == id);
        assert_eq!(
            recorded["simplyPrintJobId"],
            item.map(|i| i.id.to_string()).unwrap_or_default()
        );
    }
    assert_eq!(deployment.farm.items().len(), 4);
}

#[tokio::test]
async fn webhooks_are_authenticated_matched_and_acknowledged_whatever_they_say() {
    let deployment = Deployment::all().await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9003, 1).await;
    let job_id = jobs[0]["id"].as_str().unwrap().to_owned();
    let item = farm_items(&deployment, 1).await.remove(0);
    let hook = app.url("/api/v1/webhooks/simplyprint");
    let farm = &deployment.farm;
    let envelope = |webhook_id: &str, event: &str, job: Value| json!({"webhook_id": webhook_id, "event": event, "timestamp": 1_767_225_600, "data": {"job": job, "printer": {"id": 7}, "user": {"id": 1}}});
    assert_eq!(
        farm.deliver(
            &hook,
            "wrong-token",
            &envelope("w1", "job.started", json!({"id": item.id}))
        )
        .await
        .unwrap(),
        401
    );
    assert_eq!(
        farm.deliver(
            &hook,
            "",
            &envelope("w1", "job.started", json!({"id": item.id}))
        )
        .await
        .unwrap(),
        401
    );
    let status = crate::testing::client()
        .post(&hook)
        .header("x-sp-token", SP_TOKEN)
        .body("not json")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 400);

    let hook = &hook;
    let ack = |body: Value| async move {
        let response = crate::testing::client()
            .post(hook)
            .header("x-sp-token", SP_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json::<Value>().await.unwrap()["outcome"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        ack(envelope("w2", "printer.online", json!({}))).await,
        "ignored"
    );
    assert_eq!(
        ack(envelope(
            "w3",
            "job.done",
            json!({"id": 987_654, "uid": "not-ours"})
        ))
        .await,
        "unknown-job"
    );
    // A print started by hand from forma's file: SimplyPrint's id is new, forma's tag is the uid.
    assert_eq!(
        ack(envelope(
            "w4",
            "job.started",
            json!({"id": 555, "uid": job_id})
        ))
        .await,
        "updated"
    );
    assert_eq!(job(&admin, app, &job_id).await["status"], "PRINTING");
    assert_eq!(
        ack(envelope(
            "w4",
            "job.started",
            json!({"id": 555, "uid": job_id})
        ))
        .await,
        "duplicate"
    );
    assert_eq!(
        ack(envelope("w5", "job.started", json!({"id": item.id}))).await,
        "unchanged"
    );
    assert_eq!(
        ack(envelope(
            "w6",
            "job.failed",
            json!({"id": item.id, "error": "Spaghetti detected"})
        ))
        .await,
        "updated"
    );
    let failed = job(&admin, app, &job_id).await;
    assert_eq!(
        (failed["status"].as_str(), failed["errorMessage"].as_str()),
        (Some("FAILED"), Some("Spaghetti detected"))
    );
    // Terminal: a late "done" is acknowledged and changes nothing.
    assert_eq!(
        ack(envelope("w7", "job.done", json!({"id": item.id}))).await,
        "unchanged"
    );
    assert_eq!(job(&admin, app, &job_id).await["status"], "FAILED");
}

#[tokio::test]
async fn a_change_whose_webhook_was_missed_is_caught_by_reconciliation() {
    let deployment = Deployment::all().await;
    let app = deployment.gateway(0);
    let (admin, order_id, jobs) = order_of_cubes(&deployment, 9004, 1).await;
    let item = farm_items(&deployment, 1).await.remove(0);
    let job_id = jobs[0]["id"].as_str().unwrap();
    eventually("the job was sent", WAIT, || async {
        job(&admin, app, job_id).await["simplyPrintJobId"]
            .is_string()
            .then_some(())
    })
    .await;
    // The farm finishes the print, and nobody tells forma.
    deployment.farm.set_status(item.id, "done");
    eventually("reconciliation completes the job", WAIT, || async {
        (job(&admin, app, job_id).await["status"] == "COMPLETED").then_some(())
    })
    .await;
    // Ready for fulfillment, or already past it: its parcel follows at once.
    eventually("the order follows", WAIT, || async {
        let order = get_json(&admin, &app.url(&format!("/api/v1/orders/{order_id}"))).await;
        let status = order["status"].as_str()?;
        ["READY_FOR_FULFILLMENT", "SHIPPED", "FULFILLED"]
            .contains(&status)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_job_cancelled_in_forma_leaves_the_farms_queue() {
    let deployment = Deployment::all().await;
    let app = deployment.gateway(0);
    let (admin, job_id, item) = one_job_at_the_farm(&deployment, 9005).await;
    assert_eq!(cancel(&admin, app, &job_id).await, 200);
    let removed = deployment
        .farm
        .items()
        .into_iter()
        .find(|i| i.id == item.id)
        .unwrap();
    assert_eq!(removed.status, "removed");
    let again = cancel(&admin, app, &job_id).await;
    assert_eq!(again, 200, "cancelling twice changes nothing");
}

/// SimplyPrint fails when a job is cancelled in forma: its item stays in the farm's queue only
/// until SimplyPrint answers again; the sender takes it out then.
#[tokio::test]
async fn a_cancelled_jobs_item_leaves_the_farms_queue_once_simplyprint_answers_again() {
    let deployment = Deployment::all().await;
    let app = deployment.gateway(0);
    let (admin, job_id, item) = one_job_at_the_farm(&deployment, 9013).await;
    let status_of = |id: u64| {
        let items = deployment.farm.items();
        items.into_iter().find(|i| i.id == id).map(|i| i.status)
    };
    deployment.farm.set_failing(true);
    assert_eq!(cancel(&admin, app, &job_id).await, 200);
    assert_eq!(status_of(item.id).as_deref(), Some("queued"));
    deployment.farm.set_failing(false);
    eventually("the item is taken out", WAIT, || async {
        (status_of(item.id).as_deref() == Some("removed")).then_some(())
    })
    .await;
}

/// A job whose item reached the farm but was never recorded is cancelled: the item is found by
/// the job's tag and taken out of the queue.
#[tokio::test]
async fn a_cancelled_jobs_unrecorded_item_is_found_by_its_tag_and_taken_out() {
    // No credentials, so no sender runs: the test makes the passes itself.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9014, 1).await;
    let db = &app.ctx.db;
    let pool = sqlite(db);
    let client = farm_client(&deployment);
    refuse_simplyprint_ids(pool, true).await;
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 1);
    refuse_simplyprint_ids(pool, false).await;
    let job_id = jobs[0]["id"].as_str().unwrap();
    assert!(job(&admin, app, job_id).await["simplyPrintJobId"].is_null());

    assert_eq!(cancel(&admin, app, job_id).await, 200);
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 1, "one removal");
    let items = deployment.farm.items();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].status, "removed");
    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        0,
        "nothing left"
    );
}

/// Replica A, on a later attempt at a job, finds the farm item an earlier attempt left by its tag,
/// and is slow; its lease runs out and replica B adopts the same item and records it. When A
/// gets to record it, the job no longer waits to be sent: A must leave the item on the farm.
#[tokio::test]
async fn a_claim_whose_lease_ran_out_leaves_the_item_another_replica_recorded() {
    // No credentials, so no sender runs: the test makes the passes itself.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9011, 1).await;
    let db = &app.ctx.db;
    let client = farm_client(&deployment);
    let id = jobs[0]["id"].as_str().unwrap();
    let job_id = uuid::Uuid::parse_str(id).unwrap();

    // An earlier attempt reached the farm and was not recorded.
    let item = client
        .add_queue_item("f-cube", &super::tag(job_id))
        .await
        .unwrap();
    // A's claim is its second attempt, and its lease runs out while it waits on SimplyPrint.
    let pool = sqlite(db);
    let lease_runs_out = || async {
        sqlx::query("UPDATE print_jobs SET dispatch_lease_until = '2000-01-01T00:00:00Z'")
            .execute(pool)
            .await
            .unwrap();
    };
    let now = chrono::Utc::now();
    assert_eq!(dispatch::claim(db, now).await.unwrap().len(), 1);
    lease_runs_out().await;
    let slow = dispatch::claim(db, now).await.unwrap();
    assert_eq!(slow.len(), 1);
    lease_runs_out().await;

    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 1, "B claims it");
    dispatch::send(db, &client, &slow[0]).await.unwrap();

    let recorded = job(&admin, app, id).await;
    assert_eq!(recorded["simplyPrintJobId"], item.as_str(), "{recorded}");
    let items = deployment.farm.items();
    assert_eq!(items.len(), 1, "sent once");
    assert_eq!(
        items[0].status, "queued",
        "the job's item is still on the farm"
    );
}

/// A claim's jobs are sent one after another, and the lease of a job late in the batch can run out
/// before its turn, another replica claiming and sending it meanwhile. The old claim must then not
/// send it too: two sends at once both find no item by the tag and both add one.
#[tokio::test]
async fn a_job_whose_lease_ran_out_before_its_turn_is_left_to_the_newer_claim() {
    // No credentials, so no sender runs: the test makes the passes itself.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9012, 1).await;
    let db = &app.ctx.db;
    let client = farm_client(&deployment);
    let id = jobs[0]["id"].as_str().unwrap();

    let old = dispatch::claim(db, chrono::Utc::now()).await.unwrap();
    assert_eq!(old.len(), 1, "A claims the job");
    sqlx::query("UPDATE print_jobs SET dispatch_lease_until = '2000-01-01T00:00:00Z'")
        .execute(sqlite(db))
        .await
        .unwrap();
    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        1,
        "B claims and sends it"
    );
    // A's turn comes at last.
    dispatch::send(db, &client, &old[0]).await.unwrap();

    let items = deployment.farm.items();
    assert_eq!(items.len(), 1, "one item ever added: {items:?}");
    let recorded = job(&admin, app, id).await;
    assert_eq!(
        recorded["simplyPrintJobId"],
        items[0].id.to_string().as_str(),
        "{recorded}"
    );
}

/// Sends that reached the farm but could not be recorded, then given up by an operator: a given-up
/// job's item leaves the farm's queue (it would print a job forma counts as failed), and a job
/// retried before that happened adopts its old item rather than adding a second.
#[tokio::test]
async fn a_given_up_send_leaves_the_farm_and_a_retry_adopts_its_item() {
    // No credentials, so no sender runs: the test makes the passes itself.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (admin, _, jobs) = order_of_cubes(&deployment, 9013, 2).await;
    let db = &app.ctx.db;
    let pool = sqlite(db);
    let client = farm_client(&deployment);
    refuse_simplyprint_ids(pool, true).await;
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 2);
    refuse_simplyprint_ids(pool, false).await;
    assert_eq!(deployment.farm.items().len(), 2);

    let (given_up, retried) = (
        jobs[0]["id"].as_str().unwrap(),
        jobs[1]["id"].as_str().unwrap(),
    );
    for id in [given_up, retried] {
        let url = app.url(&format!("/api/v1/retry-queue/simplyprint.print-job:{id}"));
        assert_eq!(
            admin.delete(url).send().await.unwrap().status(),
            204,
            "{id}"
        );
    }
    let url = app.url(&format!("/api/v1/print-jobs/{retried}/retry"));
    assert_eq!(admin.post(url).send().await.unwrap().status(), 200);
    dispatch::pass(db, &client).await.unwrap();

    let items = deployment.farm.items();
    assert_eq!(items.len(), 2, "no item added again: {items:?}");
    let item_of = |id: &str| items.iter().find(|i| i.note == id).unwrap().clone();
    assert_eq!(item_of(given_up).status, "removed", "{items:?}");
    assert_eq!(item_of(retried).status, "queued", "{items:?}");
    let recorded = job(&admin, app, retried).await;
    assert_eq!(
        recorded["simplyPrintJobId"],
        item_of(retried).id.to_string().as_str()
    );

    // The farm has it now: it waits in no retry queue, and giving it up there changes nothing.
    let url = app.url(&format!(
        "/api/v1/retry-queue/simplyprint.print-job:{retried}"
    ));
    assert_eq!(admin.delete(url).send().await.unwrap().status(), 404);
    assert_eq!(job(&admin, app, retried).await["status"], "QUEUED");
}

/// A job cancelled while its item waited in the farm's queue, and retried before the item could be
/// taken out: the new attempt adopts the item (it carries the job's tag), and the item stays
/// queued for it rather than being taken out as the cancelled attempt's.
#[tokio::test]
async fn a_retried_job_keeps_the_queued_item_it_adopted() {
    // No credentials, so no sender runs: the test makes the passes itself, and the cancellation
    // cannot take the item out at once.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (db, client) = (&app.ctx.db, farm_client(&deployment));
    let (admin, id, item) = one_job_sent_by_hand(&deployment, &client, 9016).await;
    let id = id.as_str();
    assert_eq!(cancel(&admin, app, id).await, 200);
    assert_eq!(retry(&admin, app, id).await, 200);

    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        1,
        "sent, nothing taken out"
    );
    let status_of_item = || {
        let items = deployment.farm.items();
        items
            .into_iter()
            .find(|i| i.id.to_string() == item)
            .map(|i| i.status)
    };
    assert_eq!(status_of_item().as_deref(), Some("queued"));
    assert_eq!(
        job(&admin, app, id).await["simplyPrintJobId"],
        item.as_str()
    );
    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        0,
        "nothing left"
    );

    // A removal claimed before the adoption was recorded (another replica's pass) leaves the
    // item the job now waits on.
    let removal = crate::print::jobs::repository::Removal {
        id: uuid::Uuid::parse_str(id).unwrap(),
        item: item.clone(),
        status: "QUEUED".to_owned(),
        attempts: 1,
    };
    dispatch::take_out(db, &client, &removal).await.unwrap();
    assert_eq!(status_of_item().as_deref(), Some("queued"));
}

/// A job cancelled while its item waited in the farm's queue is retried before the item could be
/// taken out, and the farm starts that item before forma sends the job again: the item is the
/// job's again, and so is its news.
#[tokio::test]
async fn an_item_handed_back_on_retry_is_the_jobs_when_the_farm_starts_it() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (db, client) = (&app.ctx.db, farm_client(&deployment));
    let (admin, id, item) = one_job_sent_by_hand(&deployment, &client, 9018).await;
    let id = id.as_str();
    assert_eq!(cancel(&admin, app, id).await, 200);
    assert_eq!(retry(&admin, app, id).await, 200);

    deployment
        .farm
        .set_status(item.parse().unwrap(), "printing")
        .unwrap();
    assert_eq!(
        webhook(app, "h1", "job.started", &item, id).await,
        "updated"
    );
    let started = job(&admin, app, id).await;
    assert_eq!(started["status"], "PRINTING", "{started}");
    assert_eq!(started["simplyPrintJobId"], item.as_str());
    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        0,
        "nothing sent, nothing taken out"
    );
    assert_eq!(deployment.farm.items().len(), 1);
}

/// A retried job whose queued item was handed back to it is cancelled again before it is sent:
/// the item is still taken out of the farm's queue.
#[tokio::test]
async fn a_handed_back_item_goes_when_the_job_is_cancelled_again() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (db, client) = (&app.ctx.db, farm_client(&deployment));
    let (admin, id, item) = one_job_sent_by_hand(&deployment, &client, 9019).await;
    let id = id.as_str();
    assert_eq!(cancel(&admin, app, id).await, 200);
    assert_eq!(retry(&admin, app, id).await, 200);
    assert_eq!(cancel(&admin, app, id).await, 200);
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 1, "one removal");
    let items = deployment.farm.items();
    let removed = items.iter().find(|i| i.id.to_string() == item).unwrap();
    assert_eq!(removed.status, "removed", "{items:?}");
}

/// Reconciliation asked SimplyPrint about a queued job, and the job was cancelled before the
/// answer was applied: the farm's "queued" for its item does not queue it again.
#[tokio::test]
async fn reconciliation_news_of_an_item_the_job_left_changes_nothing() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let client = farm_client(&deployment);
    let (admin, id, item) = one_job_sent_by_hand(&deployment, &client, 9020).await;
    assert_eq!(cancel(&admin, app, &id).await, 200);
    let cancelled = job(&admin, app, &id).await;
    let tenant = uuid::Uuid::parse_str(cancelled["tenantId"].as_str().unwrap()).unwrap();
    let core = crate::print::PrintCore::detached(app.ctx.db.clone());
    let job_id = uuid::Uuid::parse_str(&id).unwrap();
    let queued = crate::print::jobs::PrintJobStatus::Queued;
    let applied = core
        .change_of_item(tenant, job_id, &item, queued, None)
        .await;
    assert!(
        matches!(applied, Ok(crate::print::JobChange::Unchanged(_))),
        "{applied:?}"
    );
    let after = job(&admin, app, &id).await;
    assert_eq!(
        (after["status"].as_str(), after["attempts"].as_i64()),
        (Some("CANCELLED"), Some(1)),
        "{after}"
    );
}

/// The farm cancels a queued job itself (an operator removed it there): its item has left the
/// queue, so nothing is left to take out, and once the job is retried, news of that item is old.
#[tokio::test]
async fn a_job_the_farm_cancelled_leaves_nothing_to_take_out_and_its_item_is_old_news() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (db, client) = (&app.ctx.db, farm_client(&deployment));
    let (admin, id, item) = one_job_sent_by_hand(&deployment, &client, 9021).await;
    let id = id.as_str();
    deployment
        .farm
        .set_status(item.parse().unwrap(), "cancelled")
        .unwrap();
    assert_eq!(
        webhook(app, "c1", "job.cancelled", &item, id).await,
        "updated"
    );
    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        0,
        "nothing to take out"
    );
    assert_eq!(retry(&admin, app, id).await, 200);
    assert_eq!(
        dispatch::pass(db, &client).await.unwrap(),
        1,
        "sent as a new item"
    );
    let reprint = job(&admin, app, id).await;
    assert_ne!(reprint["simplyPrintJobId"], item.as_str(), "{reprint}");
    assert_eq!(
        webhook(app, "c2", "job.cancelled", &item, id).await,
        "stale"
    );
    assert_eq!(job(&admin, app, id).await["status"], "QUEUED");
}

/// A removal of a job's unrecorded item, claimed before the job was retried and sent again: the
/// item its tag finds now is the one the job waits on, and it stays.
#[tokio::test]
async fn a_removal_by_tag_leaves_the_item_the_job_now_waits_on() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let client = farm_client(&deployment);
    let (_, id, item) = one_job_sent_by_hand(&deployment, &client, 9022).await;
    let removal = crate::print::jobs::repository::Removal {
        id: uuid::Uuid::parse_str(&id).unwrap(),
        item: String::new(),
        status: "CANCELLED".to_owned(),
        attempts: 1,
    };
    dispatch::take_out(&app.ctx.db, &client, &removal)
        .await
        .unwrap();
    let items = deployment.farm.items();
    let kept = items.iter().find(|i| i.id.to_string() == item).unwrap();
    assert_eq!(kept.status, "queued", "{items:?}");
}

/// A printing job is given up in forma and retried, and the operator then stops the old print at
/// the printer: SimplyPrint's news of the old item carries the job's tag, but it is not the
/// reprint's. The reprint stays queued, its item with it.
#[tokio::test]
async fn news_of_an_earlier_attempts_item_leaves_the_retried_job_alone() {
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let (db, client) = (&app.ctx.db, farm_client(&deployment));
    let (admin, id, old) = one_job_sent_by_hand(&deployment, &client, 9017).await;
    let id = id.as_str();
    let farm = &deployment.farm;
    farm.set_status(old.parse().unwrap(), "printing").unwrap();
    assert_eq!(webhook(app, "e1", "job.started", &old, id).await, "updated");
    assert_eq!(cancel(&admin, app, id).await, 200);
    assert_eq!(retry(&admin, app, id).await, 200);
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 1);
    let new = job(&admin, app, id).await["simplyPrintJobId"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_ne!(new, old, "the reprint is an item of its own");

    farm.set_status(old.parse().unwrap(), "cancelled").unwrap();
    assert_eq!(webhook(app, "e2", "job.cancelled", &old, id).await, "stale");
    let reprint = job(&admin, app, id).await;
    assert_eq!(reprint["status"], "QUEUED", "{reprint}");
    assert_eq!(reprint["simplyPrintJobId"], new.as_str());
    assert_eq!(dispatch::pass(db, &client).await.unwrap(), 0);
    let items = farm.items();
    let queued = items.iter().find(|i| i.id.to_string() == new).unwrap();
    assert_eq!(queued.status, "queued", "{items:?}");

    // The reprint's own news is news.
    assert_eq!(webhook(app, "e3", "job.started", &new, id).await, "updated");
    assert_eq!(job(&admin, app, id).await["status"], "PRINTING");
}

/// Reconciliation asks about a limited number of jobs per pass. A job not asked about in one pass
/// is asked about in the next, however many others stay unchanged at the farm: a farm with more
/// jobs in its queue than one pass asks about still has every missed change caught.
#[tokio::test]
async fn reconciliation_asks_about_every_job_in_turn() {
    // No credentials, so no sender or reconciliation runs: the test makes the passes itself.
    let deployment = Deployment::all_with(false, |_| {}).await;
    let app = deployment.gateway(0);
    let admin = app.admin().await;
    let files = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
    map(&admin, app, "CUBE-9012", files).await;
    let document = shopify::order_document(9012, 9012, &[line(1, "CUBE-9012", 201)]);
    deliver(app, &Delivery::new("orders/create", SHOP, &document)).await;
    let db = &app.ctx.db;
    eventually("the 201 jobs are planned", WAIT, || async {
        let mut conn = Conn::Pool(db);
        let planned = on_conn!(&mut conn, c => {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM print_jobs").fetch_one(c).await
        })
        .ok()?;
        (planned == 201).then_some(())
    })
    .await;
    let client = farm_client(&deployment);
    while dispatch::pass(db, &client).await.unwrap() > 0 {}
    assert_eq!(deployment.farm.items().len(), 201);
    let core = crate::print::PrintCore::detached(db.clone());

    assert_eq!(reconcile::pass(&core, &client).await.unwrap(), 0);
    let mut conn = Conn::Pool(db);
    let not_asked = on_conn!(&mut conn, c => {
        sqlx::query_as::<_, (uuid::Uuid, String)>(
            "SELECT id, simplyprint_job_id FROM print_jobs WHERE reconciled_at IS NULL",
        )
        .fetch_all(c)
        .await
    })
    .unwrap();
    assert_eq!(not_asked.len(), 1, "one pass asks about 200 jobs");
    let (job_id, item) = &not_asked[0];
    // The farm finishes the one job the first pass did not ask about, and nobody tells forma.
    deployment.farm.set_status(item.parse().unwrap(), "done");
    assert_eq!(reconcile::pass(&core, &client).await.unwrap(), 1);
    let job = job(&admin, app, &job_id.to_string()).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
}
