//! How a queue hands out its jobs, on both backends: in publish order, five at a time per
//! instance, woken by pushes; and what keeps that fast (no finished job left locked on SQLite).

use super::*;
use crate::events::bus::redis::RedisBus;
use crate::events::bus::{CONCURRENCY, JobState, subscriptions};

on_every_backend!(a_queue_hands_out_its_events_in_publish_order);
async fn a_queue_hands_out_its_events_in_publish_order(kind: Kind) {
    const BATCHES: usize = 8;
    const PER_BATCH: usize = 50;
    let fixture = Fixture::new(kind).await;
    let (bus, seen) = fixture.print_recorder().await;
    // Many events per millisecond: random ids within a millisecond would shuffle them.
    let events: Vec<Event> = (0..BATCHES * PER_BATCH).map(cancelled).collect();
    for batch in events.chunks(PER_BATCH) {
        bus.publish(batch).await.expect("published");
    }
    let published: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();

    // Waiting jobs are listed in the order the workers take them.
    let queue = subscriptions::queue_name(names::ORDER_CANCELLED, PRINT);
    let waiting = bus
        .jobs(&queue, JobState::Waiting, published.len() + 1)
        .await
        .expect("waiting jobs");
    let listed: Vec<Uuid> = waiting
        .iter()
        .map(|job| {
            let id = job.payload["eventId"].as_str().expect("an event id");
            Uuid::parse_str(id).expect("a UUID")
        })
        .collect();
    assert_eq!(
        listed, published,
        "the queue holds the events in publish order"
    );

    // And they start in that order, give or take the handlers running side by side.
    bus.start(&fixture.workers).expect("workers start");
    eventually(Duration::from_secs(20), "all events", || {
        seen.lock().expect("lock").len() >= published.len()
    })
    .await;
    let handled = seen.lock().expect("lock").clone();
    for (position, id) in handled.iter().enumerate() {
        let rank = published
            .iter()
            .position(|p| p == id)
            .expect("a published event");
        assert!(
            rank.abs_diff(position) <= 2 * CONCURRENCY,
            "event {rank} of the publish order was handled {position}th"
        );
    }
    fixture.stop().await;
}

on_every_backend!(an_instance_runs_five_handlers_of_a_queue_at_a_time);
async fn an_instance_runs_five_handlers_of_a_queue_at_a_time(kind: Kind) {
    const N: usize = 12;
    #[derive(Default)]
    struct Load {
        running: usize,
        most: usize,
        done: usize,
    }
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let load = Arc::new(Mutex::new(Load::default()));
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (handler_load, handler_gate) = (load.clone(), gate.clone());
    bus.subscribe(PRINT, names::ORDER_CANCELLED, move |_event: Event| {
        let (load, gate) = (handler_load.clone(), handler_gate.clone());
        async move {
            {
                let mut load = load.lock().expect("lock");
                load.running += 1;
                load.most = load.most.max(load.running);
            }
            // Held until the test opens the gate; each opening lets one handler through.
            gate.acquire().await.map_err(|e| e.to_string())?.forget();
            let mut load = load.lock().expect("lock");
            load.running -= 1;
            load.done += 1;
            Ok::<(), HandlerError>(())
        }
    })
    .expect("print subscribes");
    bus.start(&fixture.workers).expect("workers start");
    let events: Vec<Event> = (0..N).map(cancelled).collect();
    bus.publish(&events).await.expect("published");

    // The gate opens one handler at a time; after each, the next waiting job takes the free slot,
    // and never more than five run. Each step waits on the handler it expects, not on a pause.
    let state = || {
        let load = load.lock().expect("lock");
        (load.done, load.running)
    };
    eventually(Duration::from_secs(10), "five running handlers", || {
        state() == (0, CONCURRENCY)
    })
    .await;
    for done in 1..=N {
        gate.add_permits(1);
        let running = CONCURRENCY.min(N - done);
        eventually(Duration::from_secs(10), "the next handler", || {
            state() == (done, running)
        })
        .await;
        assert_eq!(load.lock().expect("lock").most, CONCURRENCY);
    }
    fixture.stop().await;
}

/// The acknowledgement of apalis-sqlite walks the jobs locked by its worker: finished jobs must
/// not stay locked, or each acknowledgement reads every job the worker ever finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn finished_jobs_on_sqlite_are_locked_by_no_worker() {
    const N: usize = 30;
    let fixture = Fixture::new(Kind::Sqlite).await;
    let (bus, _seen) = fixture.print_recorder().await;
    bus.start(&fixture.workers).expect("workers start");
    let events: Vec<Event> = (0..N).map(cancelled).collect();
    bus.publish(&events).await.expect("published");

    let queue = subscriptions::queue_name(names::ORDER_CANCELLED, PRINT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = bus.queues().await.expect("queue statistics");
        if stats
            .iter()
            .any(|q| q.queue == queue && q.completed == N as u64)
        {
            break;
        }
        assert!(Instant::now() < deadline, "the jobs were not completed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = &fixture.sqlite.as_ref().expect("SQLite").url;
    let Db::Sqlite(pool) = Db::connect(url, 1).await.expect("SQLite") else {
        panic!("not a SQLite URL");
    };
    let locked: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM Jobs WHERE lock_by IS NOT NULL")
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(locked, 0);
    fixture.stop().await;
}

/// Idle workers on Redis sleep until a push announces work: the announcement must reach every
/// instance, not only the one that pushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_on_one_redis_instance_wakes_the_workers_of_another() {
    let fixture = Fixture::new(Kind::Redis).await;
    let redis = fixture.redis.as_ref().expect("Redis");
    let queue = subscriptions::queue_name(names::ORDER_CANCELLED, PRINT);
    let listening = RedisBus::connect(redis).await.expect("Redis bus");
    let woken = listening.wakeups.watch(&queue);
    listening.spawn_wakeup_listener(&fixture.workers);
    // Once subscribed, the listener wakes every worker (for pushes it may have missed).
    eventually(Duration::from_secs(5), "the subscription", &woken).await;

    let pushing = RedisBus::connect(redis).await.expect("Redis bus");
    let payload = serde_json::to_vec(&cancelled(1)).expect("JSON");
    pushing.push(&[(queue, payload)]).await.expect("pushed");
    eventually(Duration::from_secs(5), "the wake-up", &woken).await;
    fixture.stop().await;
}
