//! The queue dashboard over loopback HTTP, on the embedded (SQLite) bus.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::config::Role;
use crate::events::bus::EventBus;
use crate::events::catalog::{Event, EventPayload, OrderCancelled, names};
use crate::events::publish::EventPublisher;
use crate::identity::roles::UserRole;
use crate::infra::db::{Backend, Db};
use crate::infra::workers::Workers;
use crate::order::flow_tests::get_json;
use crate::testing::{TestApp, client};

const PASSWORD: &str = "a-long-password";
const PRINT_QUEUE: &str = "order.cancelled:print";

fn cancelled(tenant: &str) -> Event {
    Event::new(
        "order-service",
        tenant,
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: uuid::Uuid::new_v4().to_string(),
        }),
    )
}

async fn tenant_of(app: &TestApp, email: &str) -> String {
    let user = crate::identity::users::find_by_email(&app.ctx.db, email)
        .await
        .unwrap()
        .unwrap();
    user.tenant_id.to_string()
}

async fn queue(admin: &reqwest::Client, app: &TestApp, name: &str) -> Value {
    let all: Value = admin
        .get(app.url("/api/v1/admin/queues"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|q| q["queue"] == name)
        .cloned()
        .expect("the queue is listed")
}

#[tokio::test]
async fn the_dashboard_counts_jobs_and_needs_queues_read() {
    let app = TestApp::spawn(Role::Gateway, Backend::Sqlite).await;
    let admin = app.admin().await;
    let print = queue(&admin, &app, PRINT_QUEUE).await;
    assert_eq!(
        (print["eventType"].as_str(), print["consumer"].as_str()),
        (Some(names::ORDER_CANCELLED), Some("print"))
    );
    assert_eq!(print["waiting"], 0);

    let tenant = tenant_of(&app, "admin@localhost").await;
    app.ctx
        .bus()
        .unwrap()
        .publish(&[cancelled(&tenant)])
        .await
        .unwrap();
    // A lone gateway consumes nothing: the fan-out waits in both queues.
    assert_eq!(queue(&admin, &app, PRINT_QUEUE).await["waiting"], 1);
    assert_eq!(
        queue(&admin, &app, "order.cancelled:shipping").await["waiting"],
        1
    );

    app.create_user("viewer@example.com", PASSWORD, UserRole::Viewer)
        .await;
    app.create_user("ops@example.com", PASSWORD, UserRole::Operator)
        .await;
    let (viewer, _) = app.login("viewer@example.com", PASSWORD).await;
    let (operator, _) = app.login("ops@example.com", PASSWORD).await;
    for path in ["/api/v1/admin/queues", "/admin/queues"] {
        assert_eq!(
            viewer.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
        assert_eq!(
            operator.get(app.url(path)).send().await.unwrap().status(),
            403,
            "{path}"
        );
        assert_eq!(
            client().get(app.url(path)).send().await.unwrap().status(),
            401,
            "{path}"
        );
    }
    let unknown = admin
        .get(app.url("/api/v1/admin/queues/no.such:queue/jobs"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
}

#[tokio::test]
async fn the_page_is_self_contained() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    let page = app
        .admin()
        .await
        .get(app.url("/admin/queues"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    assert!(html.contains("/api/v1/admin/queues"));
    for external in ["http://", "https://", " src=", "<link"] {
        assert!(
            !html.contains(external),
            "the page loads nothing from elsewhere ({external})"
        );
    }
}

#[tokio::test]
async fn a_dead_job_shows_its_payload_and_error_and_an_admin_retries_it() {
    let app = TestApp::spawn(Role::Gateway, Backend::Sqlite).await;
    let Db::Sqlite(pool) = &app.ctx.db else {
        unreachable!("a SQLite test")
    };
    // A print service whose handler always fails, on the same queue storage.
    let print = EventBus::sqlite(pool.clone()).await.unwrap();
    print
        .subscribe("print", names::ORDER_CANCELLED, |_event| async {
            Err::<(), _>("the printer farm is on fire".into())
        })
        .unwrap();
    let workers = Workers::new();
    print.start(&workers).unwrap();

    let admin = app.admin().await;
    let own = tenant_of(&app, "admin@localhost").await;
    let bus = app.ctx.bus().unwrap();
    bus.publish(&[
        cancelled(&own),
        cancelled(&uuid::Uuid::new_v4().to_string()),
    ])
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue(&admin, &app, PRINT_QUEUE).await["dead"] != 2 {
        assert!(Instant::now() < deadline, "the jobs did not die");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    workers.shutdown(Duration::from_secs(5)).await;

    let dead = get_json(
        &admin,
        &app.url(&format!(
            "/api/v1/admin/queues/{PRINT_QUEUE}/jobs?state=dead"
        )),
    )
    .await;
    assert_eq!(
        dead.as_array().unwrap().len(),
        2,
        "a super admin sees every tenant's jobs"
    );

    // A tenant admin sees only their tenant's job, and may retry it.
    app.create_user("tenant-admin@example.com", PASSWORD, UserRole::Admin)
        .await;
    let (tenant_admin, _) = app.login("tenant-admin@example.com", PASSWORD).await;
    let mine = get_json(
        &tenant_admin,
        &app.url(&format!(
            "/api/v1/admin/queues/{PRINT_QUEUE}/jobs?state=dead"
        )),
    )
    .await;
    let mine = mine.as_array().unwrap();
    assert_eq!(mine.len(), 1);
    // One asked for: their own, though another tenant's died after it.
    let newest = get_json(
        &tenant_admin,
        &app.url(&format!(
            "/api/v1/admin/queues/{PRINT_QUEUE}/jobs?state=dead&limit=1"
        )),
    )
    .await;
    assert_eq!(newest[0]["id"], mine[0]["id"], "{newest}");
    assert_eq!(mine[0]["payload"]["tenantId"], own.as_str());
    assert_eq!(mine[0]["attempts"], 3);
    assert!(
        mine[0]["lastError"].as_str().unwrap().contains("on fire"),
        "{mine:?}"
    );

    let id = mine[0]["id"].as_str().unwrap();
    let retry_url = app.url(&format!(
        "/api/v1/admin/queues/{PRINT_QUEUE}/jobs/{id}/retry"
    ));
    app.create_user("viewer@example.com", PASSWORD, UserRole::Viewer)
        .await;
    let (viewer, _) = app.login("viewer@example.com", PASSWORD).await;
    assert_eq!(viewer.post(&retry_url).send().await.unwrap().status(), 403);
    assert_eq!(
        tenant_admin.post(&retry_url).send().await.unwrap().status(),
        204
    );
    assert_eq!(
        tenant_admin.post(&retry_url).send().await.unwrap().status(),
        404,
        "no longer dead"
    );
    let print = queue(&admin, &app, PRINT_QUEUE).await;
    assert_eq!(
        (print["dead"].as_u64(), print["waiting"].as_u64()),
        (Some(1), Some(1))
    );
}

/// PostgreSQL without Redis runs the bus on PostgreSQL (SPEC §2): an event published there is
/// counted by the dashboard, handled by the order role's consumers, and `/health` says ok.
#[tokio::test]
async fn on_postgresql_without_redis_the_bus_runs_on_postgresql() {
    let app = TestApp::spawn(Role::All, Backend::Postgres).await;
    let health: Value = app.get("/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["bus"]["status"], "ok", "{health}");
    assert_eq!(health["status"], "ok");

    let admin = app.admin().await;
    let tenant = tenant_of(&app, "admin@localhost").await;
    app.ctx
        .bus()
        .expect("a bus on PostgreSQL")
        .publish(&[cancelled(&tenant)])
        .await
        .unwrap();
    // The print service consumes order.cancelled in this role: the job is handled, not left.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let print = queue(&admin, &app, PRINT_QUEUE).await;
        if print["completed"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "never handled: {print}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
