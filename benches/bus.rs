//! SPEC §10 event bus benchmark: events/s end to end (publish → handled) and publish→handled
//! latency at a fixed rate, on the Redis bus and on the SQLite bus, with the §8.1 guarantees on
//! (3 attempts with backoff, 5 concurrent handlers per queue, retention upkeep running).
//!
//! Run by `benches/bus.sh` (beside BullMQ), or alone:
//!
//!   cargo bench --bench bus
//!   N=50000 RATE=2000 LATENCY_SECONDS=20 BACKENDS=redis cargo bench --bench bus
//!
//! Settings (environment): N (20000, events of the throughput run), BATCH (100, events per
//! `publish` call), RATE (1000 events/s) and LATENCY_SECONDS (10) of the latency run, REDIS_URL
//! (redis://127.0.0.1:6379), BACKENDS (redis,sqlite), TIMEOUT (120 s, per run, for the last event
//! to be handled). Everything talks to 127.0.0.1 (or REDIS_URL), every key written is under a
//! unique prefix that is deleted at the end, and the SQLite file lives in a temporary directory.
//!
//! Prints one line per backend, the format `benches/bullmq/bench.mjs` prints too:
//!   RESULT backend=forma-redis events_per_s=… p50_ms=… p99_ms=… n=… rate=… seconds=… …

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use forma::config::SecretUrl;
use forma::events::bus::subscriptions::consumers::ORDER;
use forma::events::bus::{EventBus, HandlerError};
use forma::events::catalog::{Event, EventPayload, PrintJobCompleted, names};
use forma::events::publish::EventPublisher;
use forma::infra::db::Db;
use forma::infra::redis::RedisHandle;
use forma::infra::workers::Workers;
use tokio::sync::Notify;
use uuid::Uuid;

/// The clock every publish stamp and receive time is read against.
fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

fn since_origin() -> u64 {
    u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v} is not a valid value")),
        _ => default,
    }
}

/// What the handler saw: every distinct event id once (delivery is at-least-once, so duplicates
/// are counted apart and not measured twice), with its publish→handled latency.
#[derive(Default)]
struct Recorder {
    inner: Mutex<Seen>,
    handled: AtomicUsize,
    notify: Notify,
}

#[derive(Default)]
struct Seen {
    ids: HashSet<Uuid>,
    latencies_ns: Vec<u64>,
    last_ns: u64,
    duplicates: usize,
}

impl Recorder {
    fn record(&self, event: &Event) {
        let now = since_origin();
        // The publish stamp travels in the event itself: nanoseconds since `origin()`.
        let published: u64 = event
            .correlation_id
            .as_deref()
            .and_then(|c| c.parse().ok())
            .unwrap_or(now);
        let mut seen = self.inner.lock().expect("recorder");
        if !seen.ids.insert(event.event_id) {
            seen.duplicates += 1;
            return;
        }
        seen.latencies_ns.push(now.saturating_sub(published));
        seen.last_ns = seen.last_ns.max(now);
        drop(seen);
        self.handled.fetch_add(1, Ordering::Release);
        self.notify.notify_waiters();
    }

    fn reset(&self) -> usize {
        let mut seen = self.inner.lock().expect("recorder");
        let duplicates = seen.duplicates;
        *seen = Seen::default();
        self.handled.store(0, Ordering::Release);
        duplicates
    }

    /// Waits until `n` distinct events were handled, at most `timeout`.
    async fn wait_for(&self, n: usize, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.notify.notified();
            if self.handled.load(Ordering::Acquire) >= n {
                return true;
            }
            // Also wake up now and then: `notify_waiters` only reaches already registered waiters.
            let wake = (tokio::time::Instant::now() + Duration::from_millis(50)).min(deadline);
            tokio::select! {
                () = notified => {}
                () = tokio::time::sleep_until(wake) => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return self.handled.load(Ordering::Acquire) >= n;
            }
        }
    }
}

/// A `print-job.completed` event stamped with `stamp_ns` (its publish time).
fn event(seq: usize, stamp_ns: u64) -> Event {
    Event::new(
        "bench",
        "bench-tenant",
        EventPayload::PrintJobCompleted(PrintJobCompleted {
            print_job_id: format!("pj-{seq}"),
            order_id: format!("order-{seq}"),
            line_item_id: format!("li-{seq}"),
        }),
    )
    .with_correlation_id(stamp_ns.to_string())
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1e6
}

struct Settings {
    n: usize,
    batch: usize,
    rate: f64,
    seconds: f64,
    timeout: Duration,
}

struct Outcome {
    events_per_s: f64,
    throughput_handled: usize,
    p50_ms: f64,
    p99_ms: f64,
    latency_sent: usize,
    latency_handled: usize,
    achieved_rate: f64,
    duplicates: usize,
    dead: u64,
}

async fn measure(bus: Arc<EventBus>, recorder: Arc<Recorder>, s: &Settings) -> Outcome {
    // Warm-up, not measured: connections, the worker's first polls, SQLite's page cache.
    let warm: Vec<Event> = (0..s.batch).map(|i| event(i, since_origin())).collect();
    bus.publish(&warm).await.expect("publish (warm-up)");
    assert!(
        recorder.wait_for(warm.len(), s.timeout).await,
        "the warm-up events were not handled within {:?}",
        s.timeout
    );
    let mut duplicates = recorder.reset();

    // (a) Throughput: one producer, batches of BATCH, as fast as the bus accepts them.
    let started = since_origin();
    let mut seq = 0;
    while seq < s.n {
        let size = s.batch.min(s.n - seq);
        let stamp = since_origin();
        let batch: Vec<Event> = (seq..seq + size).map(|i| event(i, stamp)).collect();
        bus.publish(&batch).await.expect("publish");
        seq += size;
    }
    let published_in = (since_origin() - started) as f64 / 1e9;
    let all = recorder.wait_for(s.n, s.timeout).await;
    let (throughput_handled, last_ns) = {
        let seen = recorder.inner.lock().expect("recorder");
        (seen.ids.len(), seen.last_ns)
    };
    if !all {
        eprintln!(
            "· WARNING: only {throughput_handled} of {} events handled within {:?}",
            s.n, s.timeout
        );
    }
    let elapsed = last_ns.saturating_sub(started) as f64 / 1e9;
    let events_per_s = throughput_handled as f64 / elapsed.max(1e-9);
    eprintln!(
        "· throughput: {} events published in {published_in:.2} s, handled in {elapsed:.2} s",
        s.n
    );
    duplicates += recorder.reset();

    // (b) Latency at a fixed rate, open loop: event i is due at start + i / RATE and stamped with
    // that due time (so a late publisher counts against the bus, no coordinated omission); each
    // publish runs on its own task so a slow one does not hold back the next.
    let total = (s.rate * s.seconds).round() as usize;
    let start = tokio::time::Instant::now() + Duration::from_millis(10);
    let start_ns = since_origin() + 10_000_000;
    let mut publishes = tokio::task::JoinSet::new();
    for i in 0..total {
        let offset = Duration::from_secs_f64(i as f64 / s.rate);
        tokio::time::sleep_until(start + offset).await;
        let stamp = start_ns + u64::try_from(offset.as_nanos()).unwrap_or(u64::MAX);
        let bus = bus.clone();
        publishes.spawn(async move { bus.publish(&[event(i, stamp)]).await });
        while let Some(done) = publishes.try_join_next() {
            done.expect("publish task").expect("publish");
        }
    }
    let sent_in = (start.elapsed()).as_secs_f64();
    while let Some(done) = publishes.join_next().await {
        done.expect("publish task").expect("publish");
    }
    if !recorder.wait_for(total, s.timeout).await {
        eprintln!(
            "· WARNING: only {} of {total} events handled within {:?}",
            recorder.handled.load(Ordering::Acquire),
            s.timeout
        );
    }
    let mut latencies = {
        let seen = recorder.inner.lock().expect("recorder");
        seen.latencies_ns.clone()
    };
    latencies.sort_unstable();
    duplicates += recorder.reset();
    let queue = forma::events::bus::subscriptions::queue_name(names::PRINT_JOB_COMPLETED, ORDER);
    let dead = bus
        .queues()
        .await
        .ok()
        .and_then(|stats| stats.into_iter().find(|q| q.queue == queue))
        .map_or(0, |q| q.dead);

    Outcome {
        events_per_s,
        throughput_handled,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        latency_sent: total,
        latency_handled: latencies.len(),
        achieved_rate: total as f64 / sent_in.max(1e-9),
        duplicates,
        dead,
    }
}

/// Builds the bus on `backend`, subscribes the recorder, starts the workers and measures.
async fn run(backend: &str, s: &Settings, redis: &RedisHandle, dir: &std::path::Path) -> Outcome {
    let bus = match backend {
        "redis" => EventBus::redis(redis).await.expect("the Redis bus"),
        "sqlite" => {
            let url = format!("sqlite://{}", dir.join("bench.db").display());
            let db = Db::connect(&url, 5).await.expect("SQLite");
            db.migrate().await.expect("migrations");
            let Db::Sqlite(pool) = db else {
                unreachable!("a sqlite:// URL")
            };
            EventBus::sqlite(pool).await.expect("the SQLite bus")
        }
        other => panic!("unknown backend {other} (redis, sqlite)"),
    };
    let recorder = Arc::new(Recorder::default());
    let seen = recorder.clone();
    bus.subscribe(ORDER, names::PRINT_JOB_COMPLETED, move |event: Event| {
        let seen = seen.clone();
        async move {
            seen.record(&event);
            Ok::<(), HandlerError>(())
        }
    })
    .expect("subscribe");
    let workers = Workers::new();
    bus.start(&workers).expect("start the workers");
    bus.spawn_upkeep(&workers);
    let outcome = measure(Arc::new(bus), recorder, s).await;
    if !workers.shutdown(Duration::from_secs(15)).await {
        eprintln!("· WARNING: the {backend} workers did not stop within 15 s");
    }
    outcome
}

/// Deletes every key under `prefix` (SCAN + DEL); returns how many.
async fn delete_keys(redis: &RedisHandle, prefix: &str) -> usize {
    let Ok(mut conn) = redis.connection().await else {
        return 0;
    };
    let mut cursor: u64 = 0;
    let mut deleted = 0;
    loop {
        let (next, keys): (u64, Vec<String>) = match redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
        {
            Ok(page) => page,
            Err(e) => {
                eprintln!("· WARNING: SCAN failed, keys {prefix}* left in Redis: {e}");
                return deleted;
            }
        };
        if !keys.is_empty() {
            deleted += keys.len();
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query_async(&mut conn).await;
        }
        if next == 0 {
            return deleted;
        }
        cursor = next;
    }
}

fn main() {
    // `cargo bench` passes `--bench`. Test runners that list or run every target (`cargo nextest
    // run --all-targets` asks with `--list`) must not start a minutes-long benchmark against the
    // shared Redis: without `--bench`, there is nothing to run.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let s = Settings {
        n: env_or("N", 20_000),
        batch: env_or::<usize>("BATCH", 100).max(1),
        rate: env_or("RATE", 1000.0),
        seconds: env_or("LATENCY_SECONDS", 10.0),
        timeout: Duration::from_secs(env_or("TIMEOUT", 120)),
    };
    let redis_url = env_or("REDIS_URL", "redis://127.0.0.1:6379".to_owned());
    let backends = env_or("BACKENDS", "redis,sqlite".to_owned());
    origin();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    runtime.block_on(async {
        let prefix = format!("forma-bench-{}:", Uuid::new_v4().simple());
        let redis =
            RedisHandle::open(&SecretUrl::new(redis_url.clone()), &prefix).expect("a Redis URL");
        let dir = tempfile::tempdir().expect("a temporary directory");
        eprintln!(
            "· forma bus bench: N={} BATCH={} RATE={} LATENCY_SECONDS={} REDIS_URL={redis_url} \
             key prefix {prefix} SQLite in {}",
            s.n,
            s.batch,
            s.rate,
            s.seconds,
            dir.path().display()
        );
        for backend in backends.split(',').map(str::trim).filter(|b| !b.is_empty()) {
            eprintln!(
                "· forma-{backend}: throughput ({} events), then latency ({} events/s for {} s)",
                s.n, s.rate, s.seconds
            );
            let o = run(backend, &s, &redis, dir.path()).await;
            println!(
                "RESULT backend=forma-{backend} events_per_s={:.0} p50_ms={:.2} p99_ms={:.2} \
                 n={} handled={} rate={} achieved_rate={:.0} seconds={} latency_handled={}/{} \
                 duplicates={} dead={}",
                o.events_per_s,
                o.p50_ms,
                o.p99_ms,
                s.n,
                o.throughput_handled,
                s.rate,
                o.achieved_rate,
                s.seconds,
                o.latency_handled,
                o.latency_sent,
                o.duplicates,
                o.dead
            );
        }
        let deleted = delete_keys(&redis, &prefix).await;
        eprintln!("· deleted {deleted} Redis keys under {prefix}");
        drop(dir);
    });
}
