//! The Rust load generator of `benches/socketio.sh` (`LOADGEN=rust`, the default): the same clients,
//! settings and `RESULT` line as `benches/socketio/load.mjs`, at a fraction of its CPU per receipt.
//!
//! Why a second one: on a 2-core machine, 5 000 receipts per broadcast cost the Node generator about
//! 20 µs each, as much CPU as the server spends sending them, so its p99 measured the receiving side
//! as much as the server. Here a receipt is one websocket frame read and one substring search.
//!
//! CLIENTS websocket clients connect to one server (ROOM of them with the broadcasting tenant's
//! cookie, the rest with another tenant's, who must receive nothing); then BROADCASTS
//! `order:created` events are triggered, one every INTERVAL_MS (open loop), and every client stamps
//! each event it receives. A client speaks Socket.IO protocol v5 over a bare websocket: the
//! Engine.IO open packet, the namespace connect `40/events,`, pong for ping, event packets
//! `42/events,[...]`.
//!
//! Settings (environment), as load.mjs reads them:
//!   BASE_URL, SERVER_PID (whose VmRSS is read), COOKIE_ROOM, COOKIE_OTHER, TARGET,
//!   CLIENTS (10000), ROOM (5000), PROCS (4: worker threads here), CONNECT_CONCURRENCY (200 per
//!   worker), BROADCASTS (40), INTERVAL_MS (250), SETTLE_MS (3000), DRAIN_MS (15000),
//!   TIMEOUT (180 s overall), TRIGGER (`webhook`: a signed Shopify orders/create to
//!   BASE_URL/api/v1/webhooks/shopify with SHOPIFY_SECRET and SHOP_DOMAIN; `emit`: POST
//!   BASE_URL/emit?room=ROOM_TENANT, the Node reference).
//!
//!   cargo bench --bench socketio_load     (benches/socketio.sh runs it, with `--bench`, and the
//!                                         settings above)

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use forma::simulators::shopify;
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

const EVENT_PREFIX: &str = "42/events,[\"order:created\",";
const KEY_FIELD: &str = "\"orderNumber\":\"#";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

struct Settings {
    base_url: String,
    server_pid: u32,
    cookie_room: HeaderValue,
    cookie_other: HeaderValue,
    target: String,
    clients: usize,
    room: usize,
    threads: usize,
    concurrency: usize,
    broadcasts: u64,
    interval: Duration,
    settle: Duration,
    drain: Duration,
    deadline: Instant,
    trigger: Trigger,
}

enum Trigger {
    Webhook { secret: String, shop_domain: String },
    Emit { room_tenant: String },
}

fn text(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| format!("{name} is required"))
}

fn number(name: &str, default: u64) -> Result<u64> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v} is not a valid value")),
        _ => Ok(default),
    }
}

fn cookie(name: &str) -> Result<HeaderValue> {
    HeaderValue::from_str(&text(name)?).with_context(|| format!("{name} is not a header value"))
}

impl Settings {
    fn from_env() -> Result<Self> {
        let clients = usize::try_from(number("CLIENTS", 10_000)?)?;
        let threads = usize::try_from(number("PROCS", 4)?.max(1))?;
        let trigger = match std::env::var("TRIGGER").as_deref() {
            Ok("webhook") => Trigger::Webhook {
                secret: text("SHOPIFY_SECRET")?,
                shop_domain: text("SHOP_DOMAIN")?,
            },
            _ => Trigger::Emit {
                room_tenant: text("ROOM_TENANT")?,
            },
        };
        Ok(Self {
            base_url: text("BASE_URL")?,
            server_pid: text("SERVER_PID")?
                .parse()
                .context("SERVER_PID is not a pid")?,
            cookie_room: cookie("COOKIE_ROOM")?,
            cookie_other: cookie("COOKIE_OTHER")?,
            target: std::env::var("TARGET").unwrap_or_else(|_| "server".to_owned()),
            clients,
            room: usize::try_from(number("ROOM", 5_000)?)?.min(clients),
            threads,
            concurrency: usize::try_from(number("CONNECT_CONCURRENCY", 200)?.max(1))? * threads,
            broadcasts: number("BROADCASTS", 40)?,
            interval: Duration::from_millis(number("INTERVAL_MS", 250)?),
            settle: Duration::from_millis(number("SETTLE_MS", 3_000)?),
            drain: Duration::from_millis(number("DRAIN_MS", 15_000)?),
            deadline: Instant::now() + Duration::from_secs(number("TIMEOUT", 180)?),
            trigger,
        })
    }
}

/// What every client adds to while the run goes on; its receipts stay with the client.
#[derive(Default)]
struct Tally {
    received: AtomicU64,
    cross_tenant: AtomicU64,
    dropped: AtomicU64,
    /// Every event packet a room client received, `order:created` or not.
    events: AtomicU64,
    payload_bytes: AtomicU64,
}

/// One receipt: the broadcast's order number and when its event arrived.
type Receipt = (u64, Instant);

type Socket = WebSocketStream<TcpStream>;

/// Connects and joins `/events`; the handshake is refused with `44/events,` or an HTTP status.
async fn open(addr: SocketAddr, url: &str, cookie: &HeaderValue) -> Result<Socket> {
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(header::COOKIE, cookie.clone());
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    // Clients read small frames: a 4 KiB buffer instead of 128 KiB in each of 10 000 sockets.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        if text.as_str() == "2" {
            ws.send(Message::text("3")).await?;
        } else if text.starts_with('0') {
            ws.send(Message::text("40/events,")).await?;
        } else if text.starts_with("40/events,") {
            return Ok(ws);
        } else if let Some(reason) = text.strip_prefix("44/events,") {
            bail!("refused: {reason}");
        }
    }
    bail!("closed before joining /events")
}

/// The order number an `order:created` packet carries (`"orderNumber":"#123"`).
fn order_number(packet: &str) -> Option<u64> {
    let start = packet.find(KEY_FIELD)? + KEY_FIELD.len();
    let digits = &packet[start..];
    let end = digits.find('"')?;
    digits[..end].parse().ok()
}

/// Reads until told to stop or the socket ends; returns what it received.
async fn listen(
    mut ws: Socket,
    in_room: bool,
    tally: &Tally,
    mut stop: watch::Receiver<bool>,
) -> Vec<Receipt> {
    let mut receipts = Vec::new();
    loop {
        let message = tokio::select! {
            _ = stop.changed() => return receipts,
            message = ws.next() => message,
        };
        let at = Instant::now();
        let text: Utf8Bytes = match message {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
            Some(Ok(_)) => continue,
        };
        if text.as_str() == "2" {
            if ws.send(Message::text("3")).await.is_err() {
                break;
            }
            continue;
        }
        if in_room && text.starts_with("42/events,") {
            tally.events.fetch_add(1, Ordering::Relaxed);
        }
        if text.starts_with(EVENT_PREFIX) {
            if !in_room {
                tally.cross_tenant.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            if let Some(number) = order_number(&text) {
                if receipts.is_empty() {
                    let payload = text.len() - EVENT_PREFIX.len() - 1;
                    tally.payload_bytes.store(payload as u64, Ordering::Relaxed);
                }
                receipts.push((number, at));
                tally.received.fetch_add(1, Ordering::Relaxed);
            }
        } else if text.starts_with("41/events,") {
            break;
        }
    }
    tally.dropped.fetch_add(1, Ordering::Relaxed);
    // A dropped socket keeps its receipts until the run collects them.
    let _ = stop.changed().await;
    receipts
}

fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("the server (pid {pid}) is gone"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// A process's CPU time so far (every thread, user and system), from /proc/`pid`/stat; `pid` is
/// a number or `self`.
fn cpu_of(pid: &str) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("the process {pid} is gone"))?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are the 14th and 15th fields, in clock ticks of 1/100 s on Linux.
    let ticks =
        |i: usize| -> Result<u64> { Ok(fields.get(i).context("a short /proc/…/stat")?.parse()?) };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.saturating_sub(1).min(sorted.len() - 1)]
}

/// An order as forma's API shows it: the Node reference's payload, of the same shape and size
/// (forma's own broadcasts are orders made from `shopify::order_document`, as load.mjs sends it).
fn api_order(number: u64) -> serde_json::Value {
    let at = chrono::Utc::now().to_rfc3339();
    serde_json::json!({
        "id": uuid::Uuid::new_v4(), "tenantId": uuid::Uuid::new_v4(),
        "shopifyOrderId": (7_000_000_000 + number).to_string(), "orderNumber": format!("#{number}"),
        "customerName": format!("Ada Customer {number}"),
        "customerEmail": format!("customer{number}@example.com"),
        "shippingAddress": { "name": format!("Ada Customer {number}"), "address1": "Veldstraat 1",
            "address2": null, "city": "Gent", "zip": "9000", "province": null, "country": "Belgium",
            "countryCode": "BE", "phone": "+32 9 000 00 00" },
        "status": "PENDING", "totalPrice": "12.50", "currency": "EUR",
        "lineItems": [{ "id": uuid::Uuid::new_v4(), "shopifyLineItemId": "1", "sku": "BENCH-CUBE",
            "productName": "Bench cube", "quantity": 1, "unitPrice": "12.50", "status": "PENDING",
            "productMappingId": null }],
        "trackingNumber": null, "trackingUrl": null, "carrier": null, "createdAt": at, "updatedAt": at,
    })
}

async fn trigger(http: &reqwest::Client, settings: &Settings, number: u64) -> Result<()> {
    let base = &settings.base_url;
    let response = match &settings.trigger {
        Trigger::Webhook {
            secret,
            shop_domain,
        } => {
            let line = shopify::Line {
                id: 1,
                sku: "BENCH-CUBE".to_owned(),
                name: "Bench cube".to_owned(),
                quantity: 1,
                price: "12.50".to_owned(),
            };
            let document = shopify::order_document(7_000_000_000 + number, number, &[line]);
            let delivery = shopify::Delivery::new("orders/create", shop_domain, &document);
            let url = format!("{base}/api/v1/webhooks/shopify");
            delivery.send(http, &url, secret.as_bytes()).await?
        }
        Trigger::Emit { room_tenant } => {
            http.post(url::Url::parse_with_params(
                &format!("{base}/emit"),
                [("room", room_tenant.as_str()), ("event", "order:created")],
            )?)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&api_order(number))?)
            .send()
            .await?
        }
    };
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    if !status.is_success() {
        bail!("trigger {number} answered {status}: {body}");
    }
    Ok(())
}

struct Clients {
    addr: SocketAddr,
    url: String,
    tally: Arc<Tally>,
    gate: Arc<Semaphore>,
    stop: watch::Receiver<bool>,
    handles: Vec<JoinHandle<Vec<Receipt>>>,
}

impl Clients {
    /// Connects clients `range` (those below `room` in the broadcasting tenant) and waits for each
    /// to join or fail.
    async fn connect(&mut self, range: std::ops::Range<usize>, settings: &Settings) -> Connected {
        // Ok(in the room) or why it could not join.
        let (done, mut results) = mpsc::unbounded_channel::<Result<bool, String>>();
        let count = range.len();
        for i in range {
            let in_room = i < settings.room;
            let cookie = if in_room {
                settings.cookie_room.clone()
            } else {
                settings.cookie_other.clone()
            };
            let (addr, url, tally, gate) = (
                self.addr,
                self.url.clone(),
                self.tally.clone(),
                self.gate.clone(),
            );
            let (stop, done) = (self.stop.clone(), done.clone());
            self.handles.push(tokio::spawn(async move {
                let opened = {
                    let Ok(_permit) = gate.acquire().await else {
                        return Vec::new();
                    };
                    tokio::time::timeout(CONNECT_TIMEOUT, open(addr, &url, &cookie)).await
                };
                match opened {
                    Ok(Ok(ws)) => {
                        let _ = done.send(Ok(in_room));
                        listen(ws, in_room, &tally, stop).await
                    }
                    Ok(Err(e)) => {
                        let _ = done.send(Err(format!("{e:#}")));
                        Vec::new()
                    }
                    Err(_) => {
                        let _ = done.send(Err("connect timed out".to_owned()));
                        Vec::new()
                    }
                }
            }));
        }
        let mut connected = Connected::default();
        for _ in 0..count {
            match results.recv().await {
                Some(Ok(in_room)) => {
                    connected.joined += 1;
                    connected.in_room += usize::from(in_room);
                }
                Some(Err(e)) => {
                    connected.failed += 1;
                    connected.first_error.get_or_insert(e);
                }
                None => break,
            }
        }
        connected
    }
}

#[derive(Default)]
struct Connected {
    joined: usize,
    in_room: usize,
    failed: usize,
    first_error: Option<String>,
}

fn millis_between(start: Instant, at: Instant) -> f64 {
    at.saturating_duration_since(start).as_secs_f64() * 1000.0
}

async fn run(settings: Settings) -> Result<String> {
    let url = url::Url::parse(&settings.base_url).context("BASE_URL is not a URL")?;
    let addr = url
        .socket_addrs(|| Some(80))?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("BASE_URL has no address"))?;
    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        settings.base_url.replacen("http", "ws", 1)
    );
    // reqwest is built without a default TLS provider; the one forma installs serves here too.
    forma::infra::tls::install_crypto_provider();
    let http = reqwest::Client::builder().build()?;
    let (stop_all, stop) = watch::channel(false);
    let mut clients = Clients {
        addr,
        url: ws_url,
        tally: Arc::new(Tally::default()),
        gate: Arc::new(Semaphore::new(settings.concurrency)),
        stop,
        handles: Vec::with_capacity(settings.clients),
    };

    let rss_base = rss_kb(settings.server_pid)?;
    let started = Instant::now();
    // Two halves, the server's RSS read after each settles: the second half's growth per client
    // is the marginal cost of a connection, free of one-time costs.
    let middle = settings.clients / 2;
    let first_half = clients.connect(0..middle, &settings).await;
    tokio::time::sleep(settings.settle).await;
    let rss_half = rss_kb(settings.server_pid)?;
    let second_half = clients.connect(middle..settings.clients, &settings).await;
    let connect_s = started.elapsed().as_secs_f64() - settings.settle.as_secs_f64();
    let total = first_half.joined + second_half.joined;
    let in_room = first_half.in_room + second_half.in_room;
    let failed = first_half.failed + second_half.failed;
    if failed > 0 {
        eprintln!(
            "{failed} of {} clients could not connect; first error: {}",
            settings.clients,
            first_half
                .first_error
                .or(second_half.first_error)
                .unwrap_or_default()
        );
    }
    if total == 0 {
        bail!("no client connected");
    }
    tokio::time::sleep(settings.settle).await;
    let rss_connected = rss_kb(settings.server_pid)?;

    // Open loop: broadcast i is due at start + i × INTERVAL_MS, however long the previous took.
    let first = 100_000 + rand::random_range(0..800_000u64) * 1000;
    let server = settings.server_pid.to_string();
    let cpu_before = (cpu_of("self")?, cpu_of(&server)?);
    let mut sent = HashMap::new();
    let t0 = tokio::time::Instant::now();
    for i in 0..settings.broadcasts {
        tokio::time::sleep_until(t0 + settings.interval * u32::try_from(i)?).await;
        sent.insert(first + i, Instant::now());
        trigger(&http, &settings, first + i).await?;
        if Instant::now() > settings.deadline {
            bail!("TIMEOUT reached while broadcasting");
        }
    }
    let expected = settings.broadcasts * in_room as u64;
    let drain_until = (Instant::now() + settings.drain).min(settings.deadline);
    while clients.tally.received.load(Ordering::Relaxed) < expected && Instant::now() < drain_until
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss_end = rss_kb(settings.server_pid)?;
    let cpu = (
        cpu_of("self")?.saturating_sub(cpu_before.0),
        cpu_of(&server)?.saturating_sub(cpu_before.1),
    );
    let _ = stop_all.send(true);
    let mut receipts = Vec::new();
    for handle in clients.handles {
        receipts.extend(handle.await.unwrap_or_default());
    }

    let mut first_at: HashMap<u64, Instant> = HashMap::new();
    for &(number, at) in &receipts {
        first_at
            .entry(number)
            .and_modify(|first| *first = (*first).min(at))
            .or_insert(at);
    }
    let (mut delays, mut spreads) = (Vec::new(), Vec::new());
    for &(number, at) in &receipts {
        // Not ours: another run's order.
        let Some(&sent_at) = sent.get(&number) else {
            continue;
        };
        delays.push(millis_between(sent_at, at));
        spreads.push(millis_between(first_at[&number], at));
    }
    delays.sort_by(f64::total_cmp);
    spreads.sort_by(f64::total_cmp);
    let tally = &clients.tally;
    let fmt = |v: f64| {
        if v.is_finite() {
            format!("{v:.2}")
        } else {
            "nan".to_owned()
        }
    };
    let marginal = if total > first_half.joined {
        (rss_connected as f64 - rss_half as f64) / (total - first_half.joined) as f64
    } else {
        f64::NAN
    };
    let events = tally.events.load(Ordering::Relaxed);
    Ok([
        "RESULT".to_owned(),
        format!("target={}", settings.target),
        format!("clients={}", settings.clients),
        format!("connected={total}"),
        format!("room={in_room}"),
        format!("connect_s={connect_s:.1}"),
        format!("rss_base_kb={rss_base}"),
        format!("rss_connected_kb={rss_connected}"),
        format!("rss_end_kb={rss_end}"),
        format!(
            "kb_per_conn={:.2}",
            (rss_connected as f64 - rss_base as f64) / total as f64
        ),
        format!("rss_half_kb={rss_half}"),
        format!("kb_per_conn_marginal={}", fmt(marginal)),
        format!("broadcasts={}", settings.broadcasts),
        format!("expected={expected}"),
        format!("received={}", delays.len()),
        format!("p50_ms={}", fmt(percentile(&delays, 50.0))),
        format!("p99_ms={}", fmt(percentile(&delays, 99.0))),
        format!("max_ms={}", fmt(delays.last().copied().unwrap_or(f64::NAN))),
        format!("spread_p99_ms={}", fmt(percentile(&spreads, 99.0))),
        format!(
            "cross_tenant={}",
            tally.cross_tenant.load(Ordering::Relaxed)
        ),
        format!("dropped={}", tally.dropped.load(Ordering::Relaxed)),
        // CPU per receipt while broadcasts ran: the server's (its trigger included), and the
        // generator's own (its triggers included).
        format!(
            "server_us_per_receipt={}",
            fmt(cpu.1.as_secs_f64() * 1e6 / delays.len() as f64)
        ),
        format!(
            "loadgen_us_per_receipt={}",
            fmt(cpu.0.as_secs_f64() * 1e6 / delays.len() as f64)
        ),
        format!(
            "payload_bytes={}",
            tally.payload_bytes.load(Ordering::Relaxed)
        ),
        format!(
            "events_per_broadcast={}",
            if expected > 0 {
                format!("{:.2}", events as f64 / expected as f64)
            } else {
                "nan".to_owned()
            }
        ),
    ]
    .join(" "))
}

fn main() -> ExitCode {
    // `cargo bench` passes `--bench` (benches/socketio.sh too). Test runners that list every
    // target (`cargo nextest run --all-targets` asks with `--list`) find nothing to run.
    if !std::env::args().any(|arg| arg == "--bench") {
        return ExitCode::SUCCESS;
    }
    let outcome = Settings::from_env().and_then(|settings| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.threads)
            .enable_all()
            .build()?;
        let deadline = settings.deadline;
        runtime.block_on(async move {
            tokio::time::timeout_at(deadline.into(), run(settings))
                .await
                .map_err(|_| anyhow!("TIMEOUT reached"))?
        })
    });
    match outcome {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("socketio_load: {e:#}");
            ExitCode::FAILURE
        }
    }
}
