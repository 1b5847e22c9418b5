//! The audit log's storage on both databases.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::repository::record_at;
use super::{AuditEntry, AuditFilter, AuditQuery, AuditRecord, actions, list, record};
use crate::each_database;
use crate::http::pagination::PageRequest;
use crate::infra::db::{Backend, Db};
use crate::on_pool;
use crate::testing::TestDatabase;

/// A migrated database of the test's own; the handle keeps it alive.
pub(super) async fn database(backend: Backend) -> (TestDatabase, Db) {
    let database = TestDatabase::create(backend).await;
    let db = Db::connect(&database.url, 5)
        .await
        .expect("the test database");
    db.migrate().await.expect("the migrations apply");
    (database, db)
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

const ALL: PageRequest = PageRequest {
    page: 1,
    page_size: 100,
};

async fn listed(db: &Db, tenant: Uuid, filter: AuditFilter) -> Vec<AuditRecord> {
    let (items, total) = list(db, tenant, &filter, ALL).await.unwrap();
    assert_eq!(total, items.len() as i64);
    items
}

fn actions_of(records: &[AuditRecord]) -> Vec<&str> {
    records.iter().map(|r| r.entry.action.as_str()).collect()
}

each_database! {
    async fn recorded_entries_read_back_identical_and_newest_first(backend: Backend) {
        let (_database, db) = database(backend).await;
        let tenant = Uuid::new_v4();
        let mut login = AuditEntry::new(tenant, actions::LOGIN_SUCCEEDED);
        login.actor_id = Some(Uuid::new_v4());
        login.actor_email = Some("ops@example.com".into());
        login.ip = Some("203.0.113.7".into());
        login.user_agent = Some("Mozilla/5.0".into());
        login.details = json!({"method": "password", "attempt": 1, "nested": {"ok": true}});
        let first = record(&db, &login).await.unwrap();
        let second = record(&db, &AuditEntry::new(tenant, actions::LOGOUT)).await.unwrap();

        let items = listed(&db, tenant, AuditFilter::default()).await;
        assert_eq!(items, vec![second, first.clone()]);
        assert_eq!(first.entry, login);
    }
}

each_database! {
    async fn each_filter_narrows_the_list(backend: Backend) {
        let (_database, db) = database(backend).await;
        let tenant = Uuid::new_v4();
        let alice = Uuid::new_v4();
        let mut created = AuditEntry::new(tenant, actions::USER_CREATED);
        created.actor_id = Some(alice);
        created.target_type = Some("user".into());
        created.target_id = Some("u-1".into());
        record(&db, &created).await.unwrap();
        let mut deleted = AuditEntry::new(tenant, actions::USER_DELETED);
        deleted.target_type = Some("user".into());
        deleted.target_id = Some("u-2".into());
        record(&db, &deleted).await.unwrap();
        let mut failed = AuditEntry::new(tenant, actions::LOGIN_FAILED);
        failed.actor_email = Some("mallory@example.com".into());
        record(&db, &failed).await.unwrap();

        let by = |filter: AuditFilter| listed(&db, tenant, filter);
        let only = |action: &str| AuditFilter { action: Some(action.into()), ..AuditFilter::default() };
        assert_eq!(actions_of(&by(only(actions::LOGIN_FAILED)).await), [actions::LOGIN_FAILED]);
        let by_actor = AuditFilter { actor_id: Some(alice), ..AuditFilter::default() };
        assert_eq!(actions_of(&by(by_actor).await), [actions::USER_CREATED]);
        let users = AuditFilter { target_type: Some("user".into()), ..AuditFilter::default() };
        assert_eq!(actions_of(&by(users).await), [actions::USER_DELETED, actions::USER_CREATED]);
        let one_user = AuditFilter {
            target_type: Some("user".into()),
            target_id: Some("u-2".into()),
            ..AuditFilter::default()
        };
        assert_eq!(actions_of(&by(one_user).await), [actions::USER_DELETED]);
        assert!(by(only("no.such.action")).await.is_empty());
        // A value that looks like SQL is only ever a value.
        assert!(by(only("x' OR '1'='1")).await.is_empty());
    }
}

each_database! {
    async fn from_and_to_bound_the_creation_time_inclusively(backend: Backend) {
        let (_database, db) = database(backend).await;
        let tenant = Uuid::new_v4();
        // Whole seconds and fractions mixed: on SQLite these are texts of different lengths.
        for (action, time) in [
            ("a", "2026-03-01T09:59:59.999999Z"),
            ("b", "2026-03-01T10:00:00Z"),
            ("c", "2026-03-01T10:00:00.5Z"),
            ("d", "2026-03-01T10:00:01Z"),
            ("e", "2026-03-02T00:00:00Z"),
        ] {
            record_at(&db, &AuditEntry::new(tenant, action), at(time)).await.unwrap();
        }
        let between = |from: Option<&str>, to: Option<&str>| AuditFilter {
            from: from.map(at),
            to: to.map(at),
            ..AuditFilter::default()
        };
        let cases = [
            (between(Some("2026-03-01T10:00:00Z"), None), vec!["e", "d", "c", "b"]),
            (between(Some("2026-03-01T10:00:00.5Z"), None), vec!["e", "d", "c"]),
            (between(None, Some("2026-03-01T10:00:00Z")), vec!["b", "a"]),
            (between(None, Some("2026-03-01T10:00:00.500001Z")), vec!["c", "b", "a"]),
            (between(Some("2026-03-01T10:00:00Z"), Some("2026-03-01T10:00:00Z")), vec!["b"]),
            (between(Some("2026-03-01T10:00:00.1Z"), Some("2026-03-01T10:00:00.9Z")), vec!["c"]),
            (between(Some("2026-03-01T10:00:01Z"), Some("2026-03-01T10:00:00Z")), vec![]),
        ];
        for (filter, expected) in cases {
            let found = listed(&db, tenant, filter.clone()).await;
            assert_eq!(actions_of(&found), expected, "{filter:?}");
        }
        // A date as `to` means the whole of that day, through the query parameters too.
        let query = AuditQuery { to: Some("2026-03-01".into()), ..Default::default() };
        let whole_day = listed(&db, tenant, query.filter().unwrap()).await;
        assert_eq!(actions_of(&whole_day), ["d", "c", "b", "a"]);
    }
}

each_database! {
    async fn pages_split_the_list_and_the_total_counts_every_match(backend: Backend) {
        let (_database, db) = database(backend).await;
        let tenant = Uuid::new_v4();
        for n in 0..5 {
            let time = at("2026-03-01T10:00:00Z") + chrono::TimeDelta::seconds(n);
            record_at(&db, &AuditEntry::new(tenant, &format!("event.{n}")), time).await.unwrap();
        }
        record(&db, &AuditEntry::new(tenant, "other")).await.unwrap();
        let filter = AuditFilter { from: Some(at("2026-03-01T00:00:00Z")), to: Some(at("2026-03-02T00:00:00Z")), ..AuditFilter::default() };
        let page = |page: u32| list(&db, tenant, &filter, PageRequest { page, page_size: 2 });
        let (first, total) = page(1).await.unwrap();
        assert_eq!((actions_of(&first), total), (vec!["event.4", "event.3"], 5));
        let (third, total) = page(3).await.unwrap();
        assert_eq!((actions_of(&third), total), (vec!["event.0"], 5));
        let (beyond, total) = page(4).await.unwrap();
        assert_eq!((beyond.len(), total), (0, 5));
    }
}

each_database! {
    async fn another_tenants_entries_are_never_listed(backend: Backend) {
        let (_database, db) = database(backend).await;
        let (ours, theirs) = (Uuid::new_v4(), Uuid::new_v4());
        record(&db, &AuditEntry::new(ours, actions::LOGOUT)).await.unwrap();
        let mut foreign = AuditEntry::new(theirs, actions::LOGOUT);
        foreign.target_id = Some("shared".into());
        record(&db, &foreign).await.unwrap();
        let items = listed(&db, ours, AuditFilter::default()).await;
        assert_eq!(items.len(), 1);
        assert!(items.iter().all(|r| r.entry.tenant_id == ours));
        let same_target = AuditFilter { target_id: Some("shared".into()), ..AuditFilter::default() };
        assert!(listed(&db, ours, same_target).await.is_empty());
    }
}

each_database! {
    async fn the_database_refuses_to_update_or_delete_an_entry(backend: Backend) {
        let (_database, db) = database(backend).await;
        let tenant = Uuid::new_v4();
        let stored = record(&db, &AuditEntry::new(tenant, actions::LOGIN_FAILED)).await.unwrap();
        let update = on_pool!(&db, pool => {
            sqlx::query("UPDATE audit_logs SET action = 'auth.login.succeeded' WHERE id = $1")
                .bind(stored.id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        });
        assert!(update.unwrap_err().to_string().contains("append-only"));
        let delete = on_pool!(&db, pool => {
            sqlx::query("DELETE FROM audit_logs").execute(pool).await.map(|r| r.rows_affected())
        });
        assert!(delete.unwrap_err().to_string().contains("append-only"));
        assert_eq!(listed(&db, tenant, AuditFilter::default()).await, vec![stored]);
    }
}
