//! Stock batches on both databases: racing scheduler passes schedule once, and a completion
//! counts once however often it is delivered.

use std::time::Duration;

use serde_json::json;
use uuid::Uuid;

use super::{batches, repository};
use crate::config::Role;
use crate::each_database;
use crate::events::catalog::{Event, EventPayload, PrintJobCancelled, PrintJobCompleted};
use crate::infra::db::Conn;
use crate::order::flow_tests::{get_json, map};
use crate::print::jobs::PrintJobStatus;
use crate::testing::TestApp;

fn completed(tenant: Uuid, job: Uuid) -> Event {
    let payload = EventPayload::PrintJobCompleted(PrintJobCompleted {
        print_job_id: job.to_string(),
        order_id: String::new(),
        line_item_id: String::new(),
    });
    Event::new("print-service", tenant.to_string(), payload)
}

fn cancelled(tenant: Uuid, job: Uuid) -> Event {
    let payload = EventPayload::PrintJobCancelled(PrintJobCancelled {
        print_job_id: job.to_string(),
        order_id: String::new(),
        line_item_id: String::new(),
    });
    Event::new("print-service", tenant.to_string(), payload)
}

/// A CUBE mapping of `units_per_print`, given a stock target of `target` in batches of
/// `batch_size` in the transaction it returns (uncommitted: the background scheduler does not see
/// it yet): its tenant and mapping.
async fn cube_with_a_target(
    app: &TestApp,
    units_per_print: u32,
    target: i64,
    batch_size: i64,
) -> (Uuid, Uuid, crate::infra::db::Tx) {
    let admin = app.admin().await;
    let cube =
        json!([{"fileId": "f-cube", "fileName": "cube.gcode", "unitsPerPrint": units_per_print}]);
    let mapping = map(&admin, app, "CUBE", cube).await;
    let mapping_id = Uuid::parse_str(mapping["id"].as_str().unwrap()).unwrap();
    let tenant = Uuid::parse_str(mapping["tenantId"].as_str().unwrap()).unwrap();
    let update = crate::order::inventory::InventoryUpdate {
        stock_target: Some(target),
        batch_size: Some(batch_size),
        ..Default::default()
    };
    let mut tx = app.ctx.db.begin().await.unwrap();
    repository::update(&mut tx, tenant, mapping_id, &update)
        .await
        .unwrap()
        .unwrap();
    (tenant, mapping_id, tx)
}

/// A CUBE mapping (two units per print) with a stock target of 4 in batches of 4, and the one
/// batch of two jobs a scheduler pass plans for it, committed: its tenant, mapping and jobs.
async fn cube_with_a_scheduled_batch(app: &TestApp) -> (Uuid, Uuid, Vec<Uuid>) {
    let (tenant, mapping_id, mut tx) = cube_with_a_target(app, 2, 4, 4).await;
    let shortfalls = batches::shortfalls(&mut tx).await.unwrap();
    assert_eq!(shortfalls.len(), 1);
    // Four units at two per print: one batch of two jobs.
    let jobs = batches::schedule(&mut tx, &shortfalls[0]).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        batches::shortfalls(&mut tx).await.unwrap().is_empty(),
        "the batch is printing"
    );
    tx.commit().await.unwrap();
    (tenant, mapping_id, jobs)
}

each_database! {
    async fn a_cancelled_stock_job_gives_its_batch_up_and_the_units_are_planned_again(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let (tenant, mapping_id, jobs) = cube_with_a_scheduled_batch(&app).await;
        let db = &app.ctx.db;
        let entry = || async {
            let e = repository::find(&mut Conn::Pool(db), tenant, mapping_id).await.unwrap().unwrap();
            (e.stock_on_hand, e.in_production, e.open_batches)
        };
        assert_eq!(entry().await, (0, 4, 1));

        // Delivered twice: one cancellation.
        for _ in 0..2 {
            batches::count_cancellation(db, &cancelled(tenant, jobs[0])).await.unwrap();
        }
        assert_eq!(entry().await, (0, 0, 0), "a cancelled batch prints nothing for stock");
        let mut tx = db.begin().await.unwrap();
        let again = batches::shortfalls(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(again.len(), 1, "the units are planned again");
        assert_eq!(again[0].missing, 4);

        // Queued again by hand and printed after all: the units are counted, once.
        for job in &jobs {
            batches::count_completion(db, &completed(tenant, *job)).await.unwrap();
        }
        assert_eq!(entry().await, (4, 0, 0));
        app.stop().await.unwrap();
    }
}

each_database! {
    async fn the_same_completion_delivered_twice_adds_stock_once(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let (tenant, mapping_id, jobs) = cube_with_a_scheduled_batch(&app).await;
        let db = &app.ctx.db;
        let on_hand = || async {
            repository::find(&mut Conn::Pool(db), tenant, mapping_id)
                .await
                .unwrap()
                .unwrap()
                .stock_on_hand
        };

        let first = completed(tenant, jobs[0]);
        for _ in 0..2 {
            batches::count_completion(db, &first).await.unwrap();
        }
        // The same job's completion again, in an event of its own (reconciliation).
        batches::count_completion(db, &completed(tenant, jobs[0])).await.unwrap();
        assert_eq!(on_hand().await, 0, "half a batch adds nothing");

        let last = completed(tenant, jobs[1]);
        batches::count_completion(db, &last).await.unwrap();
        batches::count_completion(db, &last).await.unwrap();
        batches::count_completion(db, &completed(tenant, jobs[1])).await.unwrap();
        let entry = repository::find(&mut Conn::Pool(db), tenant, mapping_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (entry.stock_on_hand, entry.in_production, entry.open_batches),
            (4, 0, 0)
        );
        app.stop().await.unwrap();
    }
}

each_database! {
    async fn passes_racing_on_one_database_schedule_the_batches_once(backend: Backend) {
        // No SimplyPrint and the default interval: only the passes below run.
        let app = TestApp::spawn(Role::All, backend).await;
        let admin = app.admin().await;
        let cube = json!([{"fileId": "f-cube", "fileName": "cube.gcode"}]);
        let mapping = map(&admin, &app, "CUBE", cube).await;
        let mapping_id = mapping["id"].as_str().unwrap();
        let response = admin
            .put(app.url(&format!("/api/v1/inventory/{mapping_id}")))
            .json(&json!({"stockTarget": 10, "batchSize": 5}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);

        // Eight replicas' passes at once, each due (interval 0): they take turns on the
        // scheduler's row, and the later ones see the batches of the first.
        let db = &app.ctx.db;
        let passes = (0..8).map(|_| crate::order::inventory::scheduler::pass(db, Duration::ZERO));
        let scheduled: Vec<usize> = futures::future::join_all(passes)
            .await
            .into_iter()
            .map(|r| r.unwrap().unwrap_or(0))
            .collect();
        assert_eq!(scheduled.iter().sum::<usize>(), 10, "{scheduled:?}");
        let entry = get_json(&admin, &app.url(&format!("/api/v1/inventory/{mapping_id}"))).await;
        assert_eq!((&entry["inProduction"], &entry["openBatches"]), (&json!(10), &json!(2)));
        app.stop().await.unwrap();
    }
}

each_database! {
    /// A batch counts only whole: once one of its jobs is cancelled, the farm stops printing the
    /// rest, whose units would be counted nowhere while the next batch prints them again.
    async fn a_given_up_batch_has_its_other_jobs_cancelled_once(backend: Backend) {
        // The app's own scheduler stays out of the way: the test runs the take-back itself.
        let app = TestApp::spawn_with(Role::All, backend, |c| c.inventory.interval_secs = Some(3_600)).await;
        let (tenant, _, jobs) = cube_with_a_scheduled_batch(&app).await;
        let core = crate::order::OrderCore::detached(app.ctx.db.clone());
        let status = |job: Uuid| {
            let core = core.clone();
            async move { core.print.print_job(tenant, job).await.unwrap().map(|j| j.status) }
        };
        // The print side creates the batch's jobs when it hears of them.
        crate::testing::eventually("the stock jobs exist", Duration::from_secs(60), || async {
            (status(jobs[0]).await.is_some() && status(jobs[1]).await.is_some()).then_some(())
        })
        .await;
        assert_eq!(batches::take_back_given_up(&core).await.unwrap(), 0, "nothing is given up");

        core.print.cancel_print_job(tenant, jobs[0]).await.unwrap();
        batches::count_cancellation(&core.db, &cancelled(tenant, jobs[0])).await.unwrap();
        assert_eq!(batches::take_back_given_up(&core).await.unwrap(), 1);
        assert_eq!(status(jobs[1]).await, Some(PrintJobStatus::Cancelled));
        assert_eq!(batches::take_back_given_up(&core).await.unwrap(), 0, "once");
        // Its own news changes nothing more.
        batches::count_cancellation(&core.db, &cancelled(tenant, jobs[1])).await.unwrap();
        assert_eq!(batches::take_back_given_up(&core).await.unwrap(), 0);
        app.stop().await.unwrap();
    }
}

each_database! {
    /// A failed stock job waits for the operator. Given up on (cancelled), its batch no longer
    /// counts as in production, and the units are planned again.
    async fn a_failed_stock_job_given_up_on_lets_its_units_be_planned_again(backend: Backend) {
        let app = TestApp::spawn_with(Role::All, backend, |c| c.inventory.interval_secs = Some(3_600)).await;
        let (tenant, _, jobs) = cube_with_a_scheduled_batch(&app).await;
        let core = crate::order::OrderCore::detached(app.ctx.db.clone());
        crate::testing::eventually("the stock job exists", Duration::from_secs(60), || async {
            core.print.print_job(tenant, jobs[0]).await.unwrap().map(drop)
        })
        .await;
        let print = crate::print::PrintCore::detached(app.ctx.db.clone());
        let failed = print
            .change(tenant, jobs[0], PrintJobStatus::Failed, Some("Spaghetti".to_owned()))
            .await;
        assert!(matches!(failed, Ok(crate::print::JobChange::Changed(_))));

        let cancelled_job = core.print.cancel_print_job(tenant, jobs[0]).await.unwrap();
        assert_eq!(cancelled_job.status, PrintJobStatus::Cancelled);
        let message = cancelled_job.error_message.unwrap_or_default();
        assert!(message.starts_with("Spaghetti"), "why it failed is kept: {message}");
        batches::count_cancellation(&core.db, &cancelled(tenant, jobs[0])).await.unwrap();
        let mut tx = core.db.begin().await.unwrap();
        let again = batches::shortfalls(&mut tx).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(again.len(), 1, "the units are planned again");
        assert_eq!(again[0].missing, 4);
        app.stop().await.unwrap();
    }
}

each_database! {
    /// The overview's period includes its last instant, for units served from stock as for the
    /// orders they were served to.
    async fn units_served_at_the_periods_last_instant_count(backend: Backend) {
        let app = TestApp::spawn(Role::All, backend).await;
        let (tenant, mapping_id, _) = cube_with_a_scheduled_batch(&app).await;
        let db = &app.ctx.db;
        let allocation = repository::Allocation {
            line_item_id: Uuid::new_v4(),
            order_id: Uuid::new_v4(),
            mapping_id,
            sku: "CUBE".to_owned(),
            units: 2,
        };
        let mut tx = db.begin().await.unwrap();
        repository::record_allocation(&mut tx, tenant, &allocation).await.unwrap();
        tx.commit().await.unwrap();
        let at: chrono::DateTime<chrono::Utc> = crate::on_pool!(db, pool => {
            sqlx::query_scalar("SELECT allocated_at FROM stock_allocations WHERE line_item_id = $1")
                .bind(allocation.line_item_id)
                .fetch_one(pool)
                .await
                .unwrap()
        });
        let from = at - chrono::TimeDelta::hours(1);
        let figures = repository::stock_figures(db, tenant, from, at).await.unwrap();
        assert_eq!(figures.total_served_from_stock, 2);
        app.stop().await.unwrap();
    }
}

/// A shortfall of thousands is scheduled a bounded number of jobs per pass; what is left stays
/// missing, for the next passes.
#[tokio::test]
async fn a_large_shortfall_is_scheduled_over_several_passes() {
    let app = TestApp::spawn(Role::All, crate::infra::db::Backend::Sqlite).await;
    // Never committed: the background scheduler does not see the target.
    let (_, _, mut tx) = cube_with_a_target(&app, 1, 100_000, 1).await;
    let shortfalls = batches::shortfalls(&mut tx).await.unwrap();
    assert_eq!(shortfalls[0].missing, 100_000);
    let jobs = batches::schedule(&mut tx, &shortfalls[0]).await.unwrap();
    assert_eq!(jobs.len(), batches::MAX_JOBS_PER_PASS);
    let left = batches::shortfalls(&mut tx).await.unwrap();
    assert_eq!(left[0].missing, 100_000 - batches::MAX_JOBS_PER_PASS as i64);
    tx.rollback().await.unwrap();
}
