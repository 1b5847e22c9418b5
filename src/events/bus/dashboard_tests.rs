//! The queue dashboard's data (counts, jobs, retry of a dead job) and retention, on both backends.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::events::bus::{JobState, QueueStats, record_metrics, subscriptions};

const QUEUE: &str = "order.cancelled:print";
const POISON: &str = "order-poison";

/// A print handler failing on the poison order until `healed` is set, recording the others.
fn poisoned(
    seen: &Seen,
    healed: &Arc<AtomicBool>,
) -> impl Fn(Event) -> std::future::Ready<Result<(), HandlerError>> + Send + Sync + 'static {
    let (seen, healed) = (seen.clone(), healed.clone());
    move |event: Event| {
        let poison =
            matches!(&event.payload, EventPayload::OrderCancelled(o) if o.order_id == POISON);
        if poison && !healed.load(Ordering::SeqCst) {
            return std::future::ready(Err("poison pill: cannot print this order".into()));
        }
        seen.lock().expect("lock").push(event.event_id);
        std::future::ready(Ok(()))
    }
}

/// Waits (bounded) until the dashboard queue's counts satisfy `done`.
async fn until_stats(bus: &EventBus, what: &str, done: impl Fn(&QueueStats) -> bool) -> QueueStats {
    super::until_stats(bus, QUEUE, what, done).await
}

/// 3 good events and 1 poison pill published before the workers start, then handled.
async fn three_ok_one_dead(kind: Kind, healed: &Arc<AtomicBool>) -> (Fixture, EventBus, Seen) {
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let seen = Seen::default();
    bus.subscribe(PRINT, names::ORDER_CANCELLED, poisoned(&seen, healed))
        .expect("print subscribes");
    let mut events: Vec<Event> = (0..3).map(cancelled).collect();
    events.push(Event::new(
        "order-service",
        "tenant-1",
        EventPayload::OrderCancelled(OrderCancelled {
            order_id: POISON.to_owned(),
        }),
    ));
    bus.publish(&events).await.expect("published");

    let all = bus.queues().await.expect("queue statistics");
    assert_eq!(
        all.len(),
        subscriptions::queues().count(),
        "every queue is listed"
    );
    let waiting = stats_of(&bus, QUEUE).await;
    assert_eq!(
        (waiting.waiting, waiting.completed, waiting.dead),
        (4, 0, 0)
    );
    assert_eq!(
        (waiting.event_type.as_str(), waiting.consumer.as_str()),
        (names::ORDER_CANCELLED, PRINT)
    );
    let shipping = stats_of(&bus, "order.cancelled:shipping").await;
    assert_eq!(
        shipping.waiting, 4,
        "queues nobody consumes here are counted too"
    );

    bus.start(&fixture.workers).expect("workers start");
    let stats = until_stats(&bus, "3 completed and 1 dead", |s| {
        s.completed == 3 && s.dead == 1
    })
    .await;
    assert_eq!((stats.waiting, stats.active, stats.failed), (0, 0, 0));
    (fixture, bus, seen)
}

on_every_backend!(stats_count_waiting_jobs_then_three_completed_and_one_dead);
async fn stats_count_waiting_jobs_then_three_completed_and_one_dead(kind: Kind) {
    let healed = Arc::new(AtomicBool::new(false));
    let (fixture, bus, _seen) = three_ok_one_dead(kind, &healed).await;

    let stats = bus.queues().await.expect("queue statistics");
    let render = crate::observability::metrics::install();
    record_metrics(&stats);
    let text = render.render();
    assert!(
        text.lines().any(|l| l.starts_with("queue_jobs{")
            && l.contains(QUEUE)
            && l.contains("\"completed\"")
            && l.ends_with(" 3")),
        "{text}"
    );
    fixture.stop().await;
}

on_every_backend!(metrics_count_what_each_queue_completed_retried_and_gave_up);
async fn metrics_count_what_each_queue_completed_retried_and_gave_up(kind: Kind) {
    // Installed before the workers start: they resolve their counters once.
    let render = crate::observability::metrics::install();
    let healed = Arc::new(AtomicBool::new(false));
    let (fixture, _bus, _seen) = three_ok_one_dead(kind, &healed).await;

    let text = render.render();
    let value = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(&format!("\"{QUEUE}\"")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} for {QUEUE} in:\n{text}"))
    };
    assert_eq!(value("queue_jobs_completed_total"), 3.0);
    assert_eq!(value("queue_job_attempts_failed_total"), 3.0);
    assert_eq!(value("queue_jobs_dead_total"), 1.0);
    assert_eq!(value("queue_job_duration_seconds_count"), 6.0);
    fixture.stop().await;
}

on_every_backend!(the_dead_jobs_of_a_queue_show_their_payload_and_last_error);
async fn the_dead_jobs_of_a_queue_show_their_payload_and_last_error(kind: Kind) {
    let healed = Arc::new(AtomicBool::new(false));
    let (fixture, bus, _seen) = three_ok_one_dead(kind, &healed).await;

    let dead = bus
        .jobs(QUEUE, JobState::Dead, 10)
        .await
        .expect("dead jobs");
    assert_eq!(dead.len(), 1, "{dead:?}");
    let job = &dead[0];
    assert_eq!(job.payload["orderId"], POISON, "{job:?}");
    assert_eq!(job.payload["eventType"], names::ORDER_CANCELLED);
    assert_eq!(job.attempts, 3, "{job:?}");
    let error = job.last_error.as_deref().unwrap_or_default();
    assert!(error.contains("poison pill"), "{job:?}");
    assert!(job.done_at.is_some(), "{job:?}");

    let completed = bus.jobs(QUEUE, JobState::Completed, 2).await.expect("jobs");
    assert_eq!(completed.len(), 2, "the limit is applied");
    assert!(
        completed.iter().all(|j| j.last_error.is_none()),
        "{completed:?}"
    );
    let json = serde_json::to_value(job).expect("JSON");
    assert!(json.get("lastError").is_some() && json.get("payload").is_some());
    assert!(bus.jobs("no.such:queue", JobState::Dead, 10).await.is_err());
    fixture.stop().await;
}

on_every_backend!(a_retried_dead_job_waits_again_and_a_healed_handler_completes_it);
async fn a_retried_dead_job_waits_again_and_a_healed_handler_completes_it(kind: Kind) {
    let healed = Arc::new(AtomicBool::new(false));
    let (fixture, bus, seen) = three_ok_one_dead(kind, &healed).await;
    let dead = bus
        .jobs(QUEUE, JobState::Dead, 10)
        .await
        .expect("dead jobs");
    let id = dead.first().expect("one dead job").id.clone();

    healed.store(true, Ordering::SeqCst);
    assert!(bus.retry_dead(QUEUE, &id).await.expect("retried"));
    let stats = until_stats(&bus, "the retried job completed", |s| s.completed == 4).await;
    assert_eq!((stats.dead, stats.waiting, stats.active), (0, 0, 0));
    assert_eq!(seen.lock().expect("lock").len(), 4);
    let completed = bus
        .jobs(QUEUE, JobState::Completed, 10)
        .await
        .expect("jobs");
    let job = completed
        .iter()
        .find(|j| j.id == id)
        .expect("the retried job");
    assert_eq!(job.attempts, 1, "attempts were reset: {job:?}");

    assert!(
        !bus.retry_dead(QUEUE, &id).await.expect("asked"),
        "no longer dead"
    );
    assert!(!bus.retry_dead(QUEUE, "no-such-job").await.expect("asked"));
    fixture.stop().await;
}

on_every_backend!(trimming_keeps_exactly_the_newest_completed_jobs);
async fn trimming_keeps_exactly_the_newest_completed_jobs(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let (bus, _seen) = fixture.print_recorder().await;
    bus.start(&fixture.workers).expect("workers start");

    let older: Vec<Event> = (0..3).map(cancelled).collect();
    bus.publish(&older).await.expect("published");
    until_stats(&bus, "3 completed", |s| s.completed == 3).await;
    // Newest is last pushed: the second batch.
    let newer: Vec<Event> = (3..8).map(cancelled).collect();
    bus.publish(&newer).await.expect("published");
    until_stats(&bus, "8 completed", |s| s.completed == 8).await;

    assert_eq!(bus.trim_to(5, 5000).await.expect("trimmed"), 3);
    assert_eq!(stats_of(&bus, QUEUE).await.completed, 5);
    let kept: BTreeSet<String> = bus
        .jobs(QUEUE, JobState::Completed, 100)
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.payload["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: BTreeSet<String> = newer.iter().map(|e| e.event_id.to_string()).collect();
    assert_eq!(kept, expected, "the newest 5 are kept");
    assert_eq!(
        bus.trim().await.expect("trimmed"),
        0,
        "1000 / 5000 by default"
    );

    if let Some(redis) = &fixture.redis {
        // Nothing of the trimmed jobs is left behind: payloads and meta hashes went with them.
        let mut conn = redis.connection().await.expect("Redis");
        let queue = redis.key(&format!("bus:{QUEUE}"));
        let payloads: u64 = ::redis::cmd("HLEN")
            .arg(format!("{queue}:data"))
            .query_async(&mut conn)
            .await
            .expect("HLEN");
        let metas: Vec<String> = ::redis::cmd("KEYS")
            .arg(format!("{queue}:meta:*"))
            .query_async(&mut conn)
            .await
            .expect("KEYS");
        assert_eq!((payloads, metas.len()), (5, 5));
    }
    fixture.stop().await;
}

on_every_backend!(trimming_keeps_the_newest_dead_jobs_and_leaves_completed_ones_alone);
async fn trimming_keeps_the_newest_dead_jobs_and_leaves_completed_ones_alone(kind: Kind) {
    let fixture = Fixture::new(kind).await;
    let bus = fixture.bus().await;
    let seen = Seen::default();
    let healed = Arc::new(AtomicBool::new(false));
    bus.subscribe(PRINT, names::ORDER_CANCELLED, poisoned(&seen, &healed))
        .expect("print subscribes");
    bus.start(&fixture.workers).expect("workers start");
    let poison = || {
        Event::new(
            "order-service",
            "tenant-1",
            EventPayload::OrderCancelled(OrderCancelled {
                order_id: POISON.to_owned(),
            }),
        )
    };
    let mut events: Vec<Event> = (0..3).map(|_| poison()).collect();
    events.extend((0..2).map(cancelled));
    bus.publish(&events).await.expect("published");
    until_stats(&bus, "3 dead, 2 completed", |s| {
        s.dead == 3 && s.completed == 2
    })
    .await;

    assert_eq!(bus.trim_to(1000, 1).await.expect("trimmed"), 2);
    let stats = stats_of(&bus, QUEUE).await;
    assert_eq!((stats.dead, stats.completed), (1, 2));
    fixture.stop().await;
}

on_every_backend!(trimming_a_large_queue_keeps_the_last_pushed_jobs);
async fn trimming_a_large_queue_keeps_the_last_pushed_jobs(kind: Kind) {
    const N: usize = 1300;
    const KEEP: usize = 120;
    let fixture = Fixture::new(kind).await;
    let (bus, _seen) = fixture.print_recorder().await;
    bus.start(&fixture.workers).expect("workers start");
    let events: Vec<Event> = (0..N).map(cancelled).collect();
    for batch in events.chunks(100) {
        bus.publish(batch).await.expect("published");
    }
    until_stats(&bus, "all completed", |s| s.completed == N as u64).await;

    // More than a page of ids to read and a chunk to delete on Redis.
    assert_eq!(
        bus.trim_to(KEEP, 5000).await.expect("trimmed"),
        (N - KEEP) as u64
    );
    let kept: BTreeSet<String> = bus
        .jobs(QUEUE, JobState::Completed, N)
        .await
        .expect("jobs")
        .into_iter()
        .map(|j| j.payload["eventId"].as_str().unwrap_or_default().to_owned())
        .collect();
    let expected: BTreeSet<String> = events[N - KEEP..]
        .iter()
        .map(|e| e.event_id.to_string())
        .collect();
    assert_eq!(kept, expected);
    fixture.stop().await;
}
