//! Identity storage on both databases.

use std::sync::Arc;

use crate::config::Secret;
use crate::each_database;
use crate::identity::roles::UserRole;
use crate::identity::users::{self, NewUser};
use crate::identity::{bootstrap, password, tenants};
use crate::infra::db::{Backend, Db};
use crate::on_pool;
use crate::testing::{ADMIN_PASSWORD, TestDatabase};

async fn database(backend: Backend) -> (Arc<TestDatabase>, Db) {
    let test_db = Arc::new(TestDatabase::create(backend).await);
    let db = Db::connect(&test_db.url, 2).await.unwrap();
    db.migrate().await.unwrap();
    (test_db, db)
}

each_database! {
    async fn first_start_creates_the_default_tenant_and_one_admin(backend: Backend) {
        let (_guard, db) = database(backend).await;
        // A password the policy refuses (`admin`) stops the first start and creates nobody.
        let weak = bootstrap::ensure_first_admin(&db, Some(&Secret::new("admin"))).await;
        let error = weak.expect_err("a weak admin password").to_string();
        assert!(error.contains("FORMA_ADMIN_PASSWORD") && error.contains("at least 8"), "{error}");
        assert_eq!(users::count(&db).await.unwrap(), 0);

        let secret = Secret::new(ADMIN_PASSWORD);
        bootstrap::ensure_first_admin(&db, Some(&secret)).await.unwrap();
        bootstrap::ensure_first_admin(&db, Some(&secret)).await.unwrap();

        assert_eq!(users::count(&db).await.unwrap(), 1, "a second start creates nobody");
        let tenant = tenants::find_by_slug(&db, "default").await.unwrap().expect("tenant default");
        let admin = users::find_by_email(&db, "admin@localhost").await.unwrap().expect("the admin");
        assert_eq!(admin.tenant_id, tenant.id);
        assert!(admin.is_super_admin && admin.is_active);
        assert_eq!(users::roles_of(&db, admin.id).await.unwrap(), vec![UserRole::Admin]);
        assert!(password::verify(ADMIN_PASSWORD, &admin.password_hash).await);
    }
}

each_database! {
    async fn concurrent_first_starts_create_exactly_one_admin(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let starts = (0..4).map(|_| {
            let db = db.clone();
            tokio::spawn(async move { bootstrap::ensure_first_admin(&db, None).await })
        });
        for start in futures::future::join_all(starts).await {
            start.unwrap().unwrap();
        }
        assert_eq!(users::count(&db).await.unwrap(), 1);
    }
}

each_database! {
    async fn an_email_address_is_taken_only_once(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let tenant = tenants::ensure(&db, "acme", "Acme").await.unwrap();
        let new = NewUser {
            tenant_id: tenant.id,
            email: "ops@acme.test".into(),
            name: "Ops".into(),
            password_hash: password::hash("long enough").await.unwrap(),
            roles: vec![UserRole::Operator, UserRole::Viewer],
            is_super_admin: false,
        };
        let mut tx = db.begin().await.unwrap();
        let first = users::insert(&mut tx, &new).await.unwrap().expect("created");
        tx.commit().await.unwrap();
        assert_eq!(users::roles_of(&db, first.id).await.unwrap(), vec![UserRole::Operator, UserRole::Viewer]);

        let mut tx = db.begin().await.unwrap();
        assert!(users::insert(&mut tx, &new).await.unwrap().is_none());
        tx.rollback().await.unwrap();
        assert_eq!(users::count(&db).await.unwrap(), 1);
    }
}

each_database! {
    async fn the_roles_table_holds_exactly_the_roles_of_the_code(backend: Backend) {
        let (_guard, db) = database(backend).await;
        let names = on_pool!(&db, pool => {
            sqlx::query_scalar::<_, String>("SELECT name FROM roles ORDER BY name").fetch_all(pool).await
        })
        .unwrap();
        let mut expected: Vec<&str> = UserRole::ALL.iter().map(|r| r.as_str()).collect();
        expected.sort();
        assert_eq!(names, expected);
    }
}

each_database! {
    async fn migrations_can_run_twice(backend: Backend) {
        let (_guard, db) = database(backend).await;
        db.migrate().await.unwrap();
        db.ping().await.unwrap();
    }
}
