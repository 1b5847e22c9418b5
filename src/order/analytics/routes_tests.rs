//! `/api/v1/analytics` over loopback HTTP, on both databases, against a known data set written
//! with chosen creation times (the figures are about when things happened, which a test cannot
//! wait for).

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::config::Role;
use crate::each_database;
use crate::identity::context::UserContext;
use crate::identity::roles::UserRole;
use crate::identity::{tenants, users};
use crate::infra::db::{Backend, Db};
use crate::on_pool;
use crate::order::event_log::types;
use crate::testing::{TestApp, signed_context};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("a test instant")
        .with_timezone(&Utc)
}

/// An order as the data set describes it.
struct Seed<'a> {
    created: &'a str,
    status: &'a str,
    total: &'a str,
    currency: &'a str,
    /// `(sku, quantity, line status)`.
    lines: &'a [(&'a str, i64, &'a str)],
    /// When it became FULFILLED, per the event log.
    fulfilled: Option<&'a str>,
}

async fn insert_order(db: &Db, tenant_id: Uuid, seed: &Seed<'_>) -> Uuid {
    let id = Uuid::now_v7();
    let created = at(seed.created);
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO orders (id, tenant_id, shopify_order_id, order_number, status, total_price, \
         currency, created_at, updated_at) VALUES ($1, $2, $3, $3, $4, $5, $6, $7, $7)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(id.to_string())
    .bind(seed.status)
    .bind(seed.total)
    .bind(seed.currency)
    .bind(created)
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
    for (position, (sku, quantity, status)) in seed.lines.iter().enumerate() {
        on_pool!(db, pool => sqlx::query(
            "INSERT INTO line_items (id, tenant_id, order_id, position, shopify_line_item_id, sku, \
             product_name, quantity, unit_price, status, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7, '1.00', $8, $9, $9)",
        )
        .bind(Uuid::now_v7())
        .bind(tenant_id)
        .bind(id)
        .bind(position as i64)
        .bind(position.to_string())
        .bind(*sku)
        .bind(*quantity)
        .bind(*status)
        .bind(created)
        .execute(pool)
        .await
        .map(drop))
        .unwrap();
    }
    if let Some(fulfilled) = seed.fulfilled {
        // What the order went through on its way, as the orchestration and the sender log it.
        let shipped = created + (at(fulfilled) - created) / 2;
        log_move(
            db,
            tenant_id,
            id,
            "READY_FOR_FULFILLMENT",
            "SHIPPED",
            shipped,
        )
        .await;
        log_move(db, tenant_id, id, "SHIPPED", "FULFILLED", at(fulfilled)).await;
    }
    id
}

async fn log_move(
    db: &Db,
    tenant_id: Uuid,
    order_id: Uuid,
    from: &str,
    to: &str,
    when: DateTime<Utc>,
) {
    let details = json!({"previousStatus": from, "newStatus": to}).to_string();
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO event_log (id, tenant_id, order_id, event_type, severity, message, details, \
         created_at) VALUES ($1, $2, $3, $4, 'info', $5, $6, $7)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(order_id)
    .bind(types::ORDER_STATUS_CHANGED)
    .bind(format!("Order {from} → {to}"))
    .bind(details)
    .bind(when)
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
}

async fn insert_job(db: &Db, tenant_id: Uuid, status: &str, created: &str) {
    on_pool!(db, pool => sqlx::query(
        "INSERT INTO print_jobs (id, tenant_id, file_id, file_name, status, created_at, updated_at) \
         VALUES ($1, $2, 'f', 'f.gcode', $3, $4, $4)",
    )
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(status)
    .bind(at(created))
    .execute(pool)
    .await
    .map(drop))
    .unwrap();
}

/// Tenant `default` gets the data set the assertions below are worked out from; tenant `acme`
/// gets orders and jobs in the same period that must never show in `default`'s figures.
async fn seed(db: &Db) -> (Uuid, Uuid) {
    let ours = tenants::find_by_slug(db, "default")
        .await
        .unwrap()
        .unwrap()
        .id;
    let theirs = tenants::ensure(db, "acme", "Acme").await.unwrap().id;
    let orders = [
        // Fulfilled 24 h and 12 h after creation: 18 h on average.
        Seed {
            created: "2026-11-02T10:00:00Z",
            status: "FULFILLED",
            total: "49.90",
            currency: "EUR",
            lines: &[("CUBE", 3, "COMPLETED"), ("PLATE", 1, "COMPLETED")],
            fulfilled: Some("2026-11-03T10:00:00Z"),
        },
        Seed {
            created: "2026-11-02T23:59:59.5Z",
            status: "FULFILLED",
            total: "10.05",
            currency: "EUR",
            lines: &[("CUBE", 1, "COMPLETED")],
            fulfilled: Some("2026-11-03T11:59:59.5Z"),
        },
        Seed {
            created: "2026-11-04T12:00:00Z",
            status: "PROCESSING",
            total: "100.00",
            currency: "USD",
            lines: &[("PLATE", 5, "PRINTING"), ("VASE", 2, "CANCELLED")],
            fulfilled: None,
        },
        // Counted as an order, worth nothing, its units not wanted.
        Seed {
            created: "2026-11-04T13:00:00Z",
            status: "CANCELLED",
            total: "999.99",
            currency: "EUR",
            lines: &[("CUBE", 10, "CANCELLED")],
            fulfilled: None,
        },
        // A Monday at midnight; a price with a third decimal.
        Seed {
            created: "2026-11-09T00:00:00Z",
            status: "PENDING",
            total: "0.125",
            currency: "EUR",
            lines: &[("VASE", 1, "PENDING")],
            fulfilled: None,
        },
        // Just outside 2026-11-01 … 2026-11-14.
        Seed {
            created: "2026-10-31T23:59:59Z",
            status: "PENDING",
            total: "5.00",
            currency: "EUR",
            lines: &[("CUBE", 50, "PENDING")],
            fulfilled: None,
        },
        Seed {
            created: "2026-11-15T00:00:00Z",
            status: "PENDING",
            total: "7.00",
            currency: "EUR",
            lines: &[("CUBE", 50, "PENDING")],
            fulfilled: None,
        },
    ];
    for order in &orders {
        insert_order(db, ours, order).await;
    }
    insert_order(
        db,
        theirs,
        &Seed {
            created: "2026-11-03T00:00:00Z",
            status: "FULFILLED",
            total: "1000.00",
            currency: "EUR",
            lines: &[("CUBE", 100, "COMPLETED")],
            fulfilled: Some("2026-11-03T01:00:00Z"),
        },
    )
    .await;
    for (status, created) in [
        ("COMPLETED", "2026-11-02T11:00:00Z"),
        ("COMPLETED", "2026-11-02T12:00:00Z"),
        ("COMPLETED", "2026-11-03T00:00:00Z"),
        ("FAILED", "2026-11-04T12:30:00Z"),
        ("QUEUED", "2026-11-14T23:00:00Z"),
        ("CANCELLED", "2026-11-04T13:30:00Z"),
        ("COMPLETED", "2026-10-30T00:00:00Z"),
    ] {
        insert_job(db, ours, status, created).await;
    }
    for _ in 0..5 {
        insert_job(db, theirs, "FAILED", "2026-11-05T00:00:00Z").await;
    }
    (ours, theirs)
}

/// A verified context in `tenant_id` with `permissions` of `role` (none when `None`).
async fn context(
    app: &TestApp,
    tenant_id: Uuid,
    role: Option<UserRole>,
    is_super_admin: bool,
) -> UserContext {
    let admin = users::find_by_email(&app.ctx.db, "admin@localhost")
        .await
        .unwrap()
        .unwrap();
    UserContext {
        user_id: admin.id,
        tenant_id,
        email: admin.email,
        roles: role.into_iter().collect(),
        permissions: role.map(|r| r.permissions()).unwrap_or_default(),
        is_super_admin,
    }
}

async fn get_as(app: &TestApp, context: &UserContext, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(app.url(path))
        .headers(signed_context(context, "GET", path, b""))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

const NOVEMBER: &str = "from=2026-11-01&to=2026-11-14";

each_database! {
    async fn the_overview_adds_up_the_tenants_period_exactly(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let (ours, theirs) = seed(&app.ctx.db).await;
        let viewer = context(&app, ours, Some(UserRole::Viewer), false).await;
        let (status, body) = get_as(&app, &viewer, &format!("/api/v1/analytics/overview?{NOVEMBER}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["from"], "2026-11-01T00:00:00Z");
        assert_eq!(body["to"], "2026-11-14T23:59:59.999999Z");
        assert_eq!(body["orders"], json!({"total": 5, "byStatus": {
            "PENDING": 1, "PROCESSING": 1, "READY_FOR_FULFILLMENT": 0, "SHIPPED": 0, "FULFILLED": 2,
            "PARTIALLY_COMPLETED": 0, "FAILED": 0, "CANCELLED": 1}}));
        assert_eq!(body["revenue"], json!([
            {"currency": "EUR", "amount": "60.075", "orders": 3},
            {"currency": "USD", "amount": "100.00", "orders": 1}]));
        assert_eq!(body["fulfillment"], json!({"fulfilledOrders": 2, "averageHours": 18.0}));
        assert_eq!(body["printJobs"], json!({"total": 6, "byStatus": {
            "QUEUED": 1, "PRINTING": 0, "COMPLETED": 3, "FAILED": 1, "CANCELLED": 1}, "successRate": 0.75}));
        assert_eq!(body["topSkus"], json!([
            {"sku": "PLATE", "quantity": 6, "orders": 2},
            {"sku": "CUBE", "quantity": 4, "orders": 2},
            {"sku": "VASE", "quantity": 1, "orders": 1}]));

        // An offset moves the bound: 2026-11-01T00:00+01:00 takes in the order of 23:59:59 UTC.
        let (_, body) = get_as(&app, &viewer, "/api/v1/analytics/overview?from=2026-11-01T00:00:00%2B01:00&to=2026-11-14").await;
        assert_eq!(body["orders"]["total"], 6, "{body}");
        assert_eq!(body["revenue"][0]["amount"], "65.075", "{body}");

        // The other tenant sees only its own.
        let acme = context(&app, theirs, Some(UserRole::Viewer), false).await;
        let (status, body) = get_as(&app, &acme, &format!("/api/v1/analytics/overview?{NOVEMBER}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["orders"]["total"], 1);
        assert_eq!(body["revenue"], json!([{"currency": "EUR", "amount": "1000.00", "orders": 1}]));
        assert_eq!(body["fulfillment"], json!({"fulfilledOrders": 1, "averageHours": 1.0}));
        assert_eq!(body["printJobs"]["byStatus"]["FAILED"], 5);
        assert_eq!(body["printJobs"]["successRate"], 0.0);
        assert_eq!(body["topSkus"], json!([{"sku": "CUBE", "quantity": 100, "orders": 1}]));
    }
}

each_database! {
    async fn the_timeseries_lists_every_day_and_week_of_the_period_empty_ones_included(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let (ours, _) = seed(&app.ctx.db).await;
        let viewer = context(&app, ours, Some(UserRole::Viewer), false).await;

        let (status, body) = get_as(&app, &viewer, &format!("/api/v1/analytics/orders-timeseries?{NOVEMBER}")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["interval"], "day");
        let days = body["buckets"].as_array().unwrap();
        assert_eq!(days.len(), 14, "{body}");
        assert_eq!(days[0], json!({"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00Z", "orders": 0, "revenue": []}));
        assert_eq!(days[1], json!({"start": "2026-11-02T00:00:00Z", "end": "2026-11-03T00:00:00Z", "orders": 2,
            "revenue": [{"currency": "EUR", "amount": "59.95"}]}));
        assert_eq!(days[3]["orders"], 2, "the cancelled order counts as an order");
        assert_eq!(days[3]["revenue"], json!([{"currency": "USD", "amount": "100.00"}]), "but not as revenue");
        assert_eq!(days[8]["revenue"], json!([{"currency": "EUR", "amount": "0.125"}]));
        assert_eq!(days[13]["start"], "2026-11-14T00:00:00Z");
        let counts: Vec<i64> = days.iter().map(|d| d["orders"].as_i64().unwrap()).collect();
        assert_eq!(counts, [0, 2, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0]);

        // 2026-11-01 is a Sunday: its week began on Monday 26 October, before the period, whose
        // order of 31 October is not in the period and so not in the bucket.
        let (status, body) = get_as(&app, &viewer, &format!("/api/v1/analytics/orders-timeseries?{NOVEMBER}&interval=week")).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["buckets"], json!([
            {"start": "2026-10-26T00:00:00Z", "end": "2026-11-02T00:00:00Z", "orders": 0, "revenue": []},
            {"start": "2026-11-02T00:00:00Z", "end": "2026-11-09T00:00:00Z", "orders": 4,
             "revenue": [{"currency": "EUR", "amount": "59.95"}, {"currency": "USD", "amount": "100.00"}]},
            {"start": "2026-11-09T00:00:00Z", "end": "2026-11-16T00:00:00Z", "orders": 1,
             "revenue": [{"currency": "EUR", "amount": "0.125"}]}]));
    }
}

each_database! {
    async fn without_a_period_the_last_thirty_days_are_shown(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let (ours, _) = seed(&app.ctx.db).await;
        let viewer = context(&app, ours, Some(UserRole::Viewer), false).await;
        let before = Utc::now();
        let (status, body) = get_as(&app, &viewer, "/api/v1/analytics/overview").await;
        assert_eq!(status, 200, "{body}");
        let (from, to) = (at(body["from"].as_str().unwrap()), at(body["to"].as_str().unwrap()));
        assert!(to >= before - chrono::TimeDelta::seconds(1) && to <= Utc::now(), "{body}");
        assert_eq!(to - from, chrono::TimeDelta::days(30));

        let (status, body) = get_as(&app, &viewer, "/api/v1/analytics/orders-timeseries?to=2026-11-14").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["from"], "2026-10-15T23:59:59.999999Z");
        assert_eq!(body["buckets"].as_array().map(Vec::len), Some(31));
    }
}

each_database! {
    async fn bad_periods_and_intervals_are_400_with_every_problem_listed(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let ours = tenants::find_by_slug(&app.ctx.db, "default").await.unwrap().unwrap().id;
        let viewer = context(&app, ours, Some(UserRole::Viewer), false).await;
        for (query, message) in [
            ("from=yesterday&to=2026-13-01", json!(["from must be an ISO 8601 date or date-time", "to must be an ISO 8601 date or date-time"])),
            ("from=2026-11-02&to=2026-11-01", json!(["from must not be after to"])),
            ("interval=month", json!(["interval must be one of: day, week"])),
            ("from=2000-01-01&to=2026-01-01", json!(["from and to span 9498 buckets of a day; at most 1000 are allowed"])),
            ("from=0001-01-01&to=9999-12-31&interval=week", json!(["from and to span 521723 buckets of a week; at most 1000 are allowed"])),
        ] {
            let path = format!("/api/v1/analytics/orders-timeseries?{query}");
            let (status, body) = get_as(&app, &viewer, &path).await;
            assert_eq!(status, 400, "{query}: {body}");
            assert_eq!((&body["statusCode"], &body["error"], &body["message"]), (&json!(400), &json!("Bad Request"), &message), "{query}");
        }
        let (status, body) = get_as(&app, &viewer, "/api/v1/analytics/overview?from=2026-11-02&to=2026-11-01").await;
        assert_eq!((status, &body["message"]), (400, &json!(["from must not be after to"])));
        // The longest period there is has no buckets to list: the overview answers it.
        let (status, body) = get_as(&app, &viewer, "/api/v1/analytics/overview?from=0001-01-01&to=9999-12-31").await;
        assert_eq!((status, &body["orders"]["total"]), (200, &json!(0)), "{body}");
    }
}

each_database! {
    async fn analytics_need_analytics_read_which_a_super_admin_always_has(backend: Backend) {
        let app = TestApp::spawn(Role::Order, backend).await;
        let (ours, _) = seed(&app.ctx.db).await;
        let nobody = context(&app, ours, None, false).await;
        for path in ["/api/v1/analytics/overview", "/api/v1/analytics/orders-timeseries?interval=month"] {
            let (status, body) = get_as(&app, &nobody, path).await;
            assert_eq!(status, 403, "{path}: {body}");
            assert_eq!(body, json!({"statusCode": 403, "message": "Missing permission analytics.read", "error": "Forbidden"}));
        }
        let super_admin = context(&app, ours, None, true).await;
        let (status, body) = get_as(&app, &super_admin, &format!("/api/v1/analytics/overview?{NOVEMBER}")).await;
        assert_eq!((status, &body["orders"]["total"]), (200, &json!(5)), "{body}");
        let (status, _) = get_as(&app, &super_admin, "/api/v1/analytics/orders-timeseries").await;
        assert_eq!(status, 200);
        assert_eq!(app.get("/api/v1/analytics/overview").await.status(), 401, "no verified user context");
    }
}

#[tokio::test]
async fn a_signed_in_viewer_reads_analytics_through_the_gateway() {
    let app = TestApp::spawn(Role::All, Backend::Sqlite).await;
    seed(&app.ctx.db).await;
    app.create_user("viewer@example.com", "a-long-password", UserRole::Viewer)
        .await;
    let (viewer, _) = app.login("viewer@example.com", "a-long-password").await;
    let response = viewer
        .get(app.url(&format!("/api/v1/analytics/overview?{NOVEMBER}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["revenue"][1],
        json!({"currency": "USD", "amount": "100.00", "orders": 1})
    );
    let unsigned = app.get("/api/v1/analytics/overview").await;
    assert_eq!(unsigned.status(), 401);
}
