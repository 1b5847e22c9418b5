use super::*;
use crate::each_database;
use crate::testing::TestDatabase;

async fn count(mut conn: Conn<'_>) -> i64 {
    on_conn!(&mut conn, c => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM numbers").fetch_one(c).await
    })
    .expect("count")
}

each_database! {
    /// What a listing relies on: its page and its count, read in one snapshot, agree however many
    /// rows other connections add between the two reads.
    async fn a_snapshot_does_not_see_rows_added_after_its_first_read(backend: Backend) {
        let database = TestDatabase::create(backend).await;
        let db = Db::connect(&database.url, 4).await.expect("connect");
        on_pool!(&db, pool => {
            sqlx::query("CREATE TABLE numbers (n INTEGER NOT NULL)").execute(pool).await.map(|_| ())
        })
        .expect("create");
        let insert = |n: i64| {
            let db = db.clone();
            async move {
                on_pool!(&db, pool => {
                    sqlx::query("INSERT INTO numbers (n) VALUES ($1)").bind(n).execute(pool).await.map(|_| ())
                })
                .expect("insert");
            }
        };
        insert(1).await;

        let mut snapshot = db.snapshot().await.expect("snapshot");
        assert_eq!(count(Conn::Tx(&mut snapshot)).await, 1);
        insert(2).await;
        insert(3).await;
        assert_eq!(count(Conn::Tx(&mut snapshot)).await, 1, "the snapshot's view moved");
        assert_eq!(count(Conn::Pool(&db)).await, 3, "a plain read sees every row");
        snapshot.commit().await.expect("commit");

        let mut later = db.snapshot().await.expect("snapshot");
        assert_eq!(count(Conn::Tx(&mut later)).await, 3);
        let written = on_tx!(&mut later, c => {
            sqlx::query("INSERT INTO numbers (n) VALUES (4)").execute(&mut *c).await.map(|_| ())
        });
        if backend == Backend::Postgres {
            assert!(written.is_err(), "a snapshot is read-only");
        }
    }
}
