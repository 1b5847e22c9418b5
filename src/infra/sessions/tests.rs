//! Both session stores honour the same contract.

use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::SessionStore;

use super::*;
use crate::each_database;
use crate::testing::TestDatabase;

fn record(expires_in_secs: i64) -> Record {
    let mut data = std::collections::HashMap::new();
    data.insert(
        "auth".to_owned(),
        serde_json::json!({"userId": "u-1", "epoch": 3}),
    );
    Record {
        id: Id::default(),
        data,
        expiry_date: time::OffsetDateTime::now_utc() + time::Duration::seconds(expires_in_secs),
    }
}

async fn contract(store: &dyn SessionStore) {
    let mut live = record(3600);
    let original_id = live.id;
    store.create(&mut live).await.unwrap();
    assert_eq!(live.id, original_id);
    let loaded = store
        .load(&live.id)
        .await
        .unwrap()
        .expect("a created session loads");
    assert_eq!(loaded.data, live.data);

    live.data.insert("extra".into(), serde_json::json!(true));
    store.save(&live).await.unwrap();
    assert_eq!(store.load(&live.id).await.unwrap().unwrap().data, live.data);

    let mut expired = record(-10);
    store.create(&mut expired).await.unwrap();
    assert!(
        store.load(&expired.id).await.unwrap().is_none(),
        "expired sessions do not load"
    );

    store.delete(&live.id).await.unwrap();
    assert!(store.load(&live.id).await.unwrap().is_none());
    assert!(store.load(&Id::default()).await.unwrap().is_none());

    // A request that loaded the session before a sign-out saves it after: it stays signed out.
    store.save(&live).await.unwrap();
    assert!(
        store.load(&live.id).await.unwrap().is_none(),
        "a save brought a deleted session back"
    );
}

each_database! {
    async fn the_sql_store_keeps_the_session_contract(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let db = Db::connect(&database.url, 2).await.unwrap();
        db.migrate().await.unwrap();
        let store = SqlSessionStore::new(db.clone());
        contract(&store).await;
        let mut old = record(-5);
        store.create(&mut old).await.unwrap();
        assert!(store.delete_expired().await.unwrap() >= 1);
    }
}

#[tokio::test]
async fn the_redis_store_keeps_the_session_contract() {
    let mut config = crate::config::Config::default();
    crate::testing::use_redis(&mut config);
    let redis =
        RedisHandle::open(config.redis.url.as_ref().unwrap(), &config.redis.key_prefix).unwrap();
    contract(&RedisSessionStore::new(redis)).await;
}
