// The load generator of benches/socketio.sh (SPEC §10), the same for forma and for the Node
// reference: CLIENTS websocket clients on one server, ROOM of them in the tenant that broadcasts
// reach and the rest in another tenant; then BROADCASTS `order:created` events to the room, one
// every INTERVAL_MS (open loop), and when each client received each one.
//
//   node load.mjs             (benches/socketio.sh runs it with the settings below)
//
// The clients speak Socket.IO protocol v5 over a bare websocket (`ws`): the Engine.IO open packet,
// the namespace connect `40/events,`, pong for ping, and event packets `42/events,[...]`, whose
// timestamp is taken before anything else. A client does no more than that (no JSON parse, no
// event emitter), so that with 5000 receivers on a 2-core machine the figures measure the server,
// not the clients. PROCS child processes share the clients so receiving runs on every core.
//
// Settings (environment):
//   BASE_URL            the server, http://127.0.0.1:PORT
//   SERVER_PID          whose VmRSS is read: before connecting, once half and once all the clients
//                       are connected (each after SETTLE_MS), and at the end
//   COOKIE_ROOM         Cookie header of the ROOM clients (the broadcasting tenant)
//   COOKIE_OTHER        Cookie header of the other clients (another tenant: must receive nothing)
//   CLIENTS (10000), ROOM (5000), PROCS (4), CONNECT_CONCURRENCY (200 per process),
//   BROADCASTS (40), INTERVAL_MS (250), SETTLE_MS (3000), DRAIN_MS (15000), TIMEOUT (180 s overall)
//   TRIGGER             `webhook`: a signed Shopify orders/create per broadcast to
//                       BASE_URL/api/v1/webhooks/shopify (SHOPIFY_SECRET, SHOP_DOMAIN), so forma
//                       emits a real `order:created`; `emit`: POST BASE_URL/emit?room=ROOM_TENANT
//                       with an order of the same shape (the Node reference)
// Prints one line:  RESULT target=… key=value …
import { fork } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import WebSocket from 'ws';

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const num = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`${name}=${v} is not a valid value`);
  return n;
};

const EVENT_PREFIX = '42/events,["order:created",';
const KEY_FIELD = '"orderNumber":"';

// --- worker: holds a share of the clients ----------------------------------------------------------

async function worker() {
  const sockets = [];
  const receipts = new Map(); // order number -> [receive time, ...]
  let crossTenant = 0;
  let received = 0;
  let events = 0; // every event packet a room client received, order:created or not
  let dropped = 0;
  let payloadBytes = 0;

  function open(wsUrl, cookie, inRoom) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(wsUrl, { headers: { cookie }, perMessageDeflate: false });
      let joined = false;
      const timer = setTimeout(() => { ws.terminate(); reject(new Error('connect timed out')); }, 30000);
      ws.on('message', (data, isBinary) => {
        const t = now();
        if (isBinary) return;
        const text = data.toString('utf8');
        if (text === '2') { ws.send('3'); return; }
        if (inRoom && text.startsWith('42/events,')) events++;
        if (text.startsWith(EVENT_PREFIX)) {
          if (!inRoom) { crossTenant++; return; }
          const at = text.indexOf(KEY_FIELD);
          if (at < 0) return;
          const start = at + KEY_FIELD.length;
          const key = text.slice(start, text.indexOf('"', start));
          let list = receipts.get(key);
          if (!list) { list = []; receipts.set(key, list); payloadBytes = text.length - EVENT_PREFIX.length - 1; }
          list.push(t);
          received++;
          return;
        }
        if (text.startsWith('0')) { ws.send('40/events,'); return; }
        if (text.startsWith('40/events,')) { joined = true; clearTimeout(timer); resolve(ws); return; }
        if (text.startsWith('44/events,')) { clearTimeout(timer); ws.terminate(); reject(new Error(`refused: ${text.slice(10)}`)); return; }
        if (text.startsWith('41/events,')) { dropped++; }
      });
      ws.on('error', (e) => { if (!joined) { clearTimeout(timer); reject(e); } });
      ws.on('close', () => { if (joined) dropped++; });
      ws.on('unexpected-response', (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`handshake answered ${res.statusCode}`));
      });
    });
  }

  process.on('message', async (msg) => {
    if (msg.type === 'connect') {
      // Clients [from, to) of this worker's share; the first `inRoom` of the share are in the room.
      const { wsUrl, from, to, inRoom, cookieRoom, cookieOther, concurrency } = msg;
      let next = from, failed = 0, firstError = null;
      const before = sockets.length;
      async function lane() {
        while (next < to) {
          const i = next++;
          try {
            sockets.push(await open(wsUrl, i < inRoom ? cookieRoom : cookieOther, i < inRoom));
          } catch (e) {
            failed++;
            firstError ??= e.message;
          }
        }
      }
      await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, to - from)) }, lane));
      process.send({ type: 'connected', connected: sockets.length - before, failed, firstError });
    } else if (msg.type === 'count') {
      process.send({ type: 'count', received, crossTenant, dropped });
    } else if (msg.type === 'collect') {
      process.send({ type: 'receipts', receipts: Object.fromEntries(receipts), crossTenant, dropped, payloadBytes, events });
    } else if (msg.type === 'close') {
      for (const ws of sockets) ws.terminate();
      process.exit(0);
    }
  });
}

// --- parent: connects, triggers, measures ----------------------------------------------------------

function rssKb(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = status.match(/^VmRSS:\s+(\d+) kB/m);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

function percentile(sorted, p) {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)];
}

// An order as forma's API shows it, for the Node reference's payload (same shape and size).
function apiOrder(number) {
  const at = new Date().toISOString();
  return {
    id: randomUUID(), tenantId: randomUUID(), shopifyOrderId: String(7_000_000_000 + number),
    orderNumber: `#${number}`, customerName: `Ada Customer ${number}`, customerEmail: `customer${number}@example.com`,
    shippingAddress: { name: `Ada Customer ${number}`, address1: 'Veldstraat 1', address2: null, city: 'Gent', zip: '9000',
      province: null, country: 'Belgium', countryCode: 'BE', phone: '+32 9 000 00 00' },
    status: 'PENDING', totalPrice: '12.50', currency: 'EUR',
    lineItems: [{ id: randomUUID(), shopifyLineItemId: '1', sku: 'BENCH-CUBE', productName: 'Bench cube', quantity: 1,
      unitPrice: '12.50', status: 'PENDING', productMappingId: null }],
    trackingNumber: null, trackingUrl: null, carrier: null, createdAt: at, updatedAt: at,
  };
}

// The body of Shopify's orders/create, as src/simulators/shopify.rs sends it.
function shopifyOrder(id, number) {
  return {
    id, admin_graphql_api_id: `gid://shopify/Order/${id}`, name: `#${number}`, order_number: number,
    email: `customer${number}@example.com`, created_at: new Date().toISOString(), currency: 'EUR',
    total_price: '12.50', financial_status: 'paid', fulfillment_status: null,
    customer: { id: id + 1, first_name: 'Ada', last_name: `Customer ${number}`, email: `customer${number}@example.com` },
    shipping_address: { first_name: 'Ada', last_name: `Customer ${number}`, address1: 'Veldstraat 1', city: 'Gent',
      zip: '9000', country: 'Belgium', country_code: 'BE', phone: '+32 9 000 00 00' },
    line_items: [{ id: 1, sku: 'BENCH-CUBE', name: 'Bench cube', title: 'Bench cube', quantity: 1, current_quantity: 1,
      price: '12.50', requires_shipping: true }],
  };
}

async function trigger(base, number) {
  let response;
  if (process.env.TRIGGER === 'webhook') {
    const body = JSON.stringify(shopifyOrder(7_000_000_000 + number, number));
    const hmac = createHmac('sha256', process.env.SHOPIFY_SECRET).update(body).digest('base64');
    response = await fetch(`${base}/api/v1/webhooks/shopify`, {
      method: 'POST', body,
      headers: {
        'content-type': 'application/json', 'x-shopify-topic': 'orders/create',
        'x-shopify-shop-domain': process.env.SHOP_DOMAIN, 'x-shopify-webhook-id': randomUUID(),
        'x-shopify-event-id': randomUUID(), 'x-shopify-api-version': '2025-10', 'x-shopify-hmac-sha256': hmac,
      },
    });
  } else {
    response = await fetch(`${base}/emit?room=${encodeURIComponent(process.env.ROOM_TENANT)}&event=order:created`, {
      method: 'POST', body: JSON.stringify(apiOrder(number)), headers: { 'content-type': 'application/json' },
    });
  }
  if (!response.ok) throw new Error(`trigger ${number} answered ${response.status}: ${await response.text()}`);
  await response.arrayBuffer();
}

async function main() {
  const BASE_URL = process.env.BASE_URL;
  const SERVER_PID = process.env.SERVER_PID;
  if (!BASE_URL || !SERVER_PID) throw new Error('BASE_URL and SERVER_PID are required');
  const CLIENTS = num('CLIENTS', 10000);
  const ROOM = Math.min(num('ROOM', 5000), CLIENTS);
  const PROCS = Math.max(1, num('PROCS', 4));
  const CONCURRENCY = Math.max(1, num('CONNECT_CONCURRENCY', 200));
  const BROADCASTS = num('BROADCASTS', 40);
  const INTERVAL_MS = num('INTERVAL_MS', 250);
  const SETTLE_MS = num('SETTLE_MS', 3000);
  const DRAIN_MS = num('DRAIN_MS', 15000);
  const deadline = Date.now() + num('TIMEOUT', 180) * 1000;
  const wsUrl = `${BASE_URL.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;

  const self = fileURLToPath(import.meta.url);
  const workers = Array.from({ length: PROCS }, () => fork(self, ['worker'], { stdio: 'inherit' }));
  const ask = (w, msg, type) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} from a worker in time`)), Math.max(1, deadline - Date.now()));
    const on = (reply) => { if (reply.type === type) { clearTimeout(timer); w.off('message', on); resolve(reply); } };
    w.on('message', on);
    w.send(msg);
  });
  const all = (msg, type) => Promise.all(workers.map((w) => ask(w, msg, type)));

  try {
    const rssBase = rssKb(SERVER_PID);
    const started = now();
    const shares = workers.map((_, i) => {
      const count = Math.floor(CLIENTS / PROCS) + (i < CLIENTS % PROCS ? 1 : 0);
      const inRoom = Math.floor(ROOM / PROCS) + (i < ROOM % PROCS ? 1 : 0);
      return { count, inRoom };
    });
    // Two halves, the server's RSS read after each settles: the second half's growth per client
    // is the marginal cost of a connection, free of one-time costs (code first run, pools and
    // caches filled by the first clients) that the whole delta spreads over every client.
    const connectHalf = (half) => Promise.all(workers.map((w, i) => {
      const middle = Math.floor(shares[i].count / 2);
      const [from, to] = half === 0 ? [0, middle] : [middle, shares[i].count];
      return ask(w, {
        type: 'connect', wsUrl, from, to, inRoom: shares[i].inRoom, concurrency: CONCURRENCY,
        cookieRoom: process.env.COOKIE_ROOM, cookieOther: process.env.COOKIE_OTHER,
      }, 'connected');
    }));
    const firstHalf = await connectHalf(0);
    await sleep(SETTLE_MS);
    const rssHalf = rssKb(SERVER_PID);
    const secondHalf = await connectHalf(1);
    const connected = firstHalf.map((c, i) => ({
      connected: c.connected + secondHalf[i].connected,
      failed: c.failed + secondHalf[i].failed,
      firstError: c.firstError ?? secondHalf[i].firstError,
    }));
    const connectSeconds = (now() - started) / 1000 - SETTLE_MS / 1000;
    const total = connected.reduce((s, c) => s + c.connected, 0);
    const halfTotal = firstHalf.reduce((s, c) => s + c.connected, 0);
    const failed = connected.reduce((s, c) => s + c.failed, 0);
    if (failed > 0) {
      console.error(`${failed} of ${CLIENTS} clients could not connect; first error: ${connected.find((c) => c.firstError)?.firstError}`);
    }
    if (total === 0) throw new Error('no client connected');
    await sleep(SETTLE_MS);
    const rssConnected = rssKb(SERVER_PID);
    const inRoomConnected = shares.reduce((s, sh, i) => s + Math.min(sh.inRoom, connected[i].connected), 0);

    // Open loop: broadcast i is due at start + i * INTERVAL_MS, however long the previous took.
    const first = 100000 + Math.floor(Math.random() * 800000) * 1000;
    const sent = new Map();
    const t0 = now();
    for (let i = 0; i < BROADCASTS; i++) {
      const due = t0 + i * INTERVAL_MS;
      if (due > now()) await sleep(due - now());
      const number = first + i;
      sent.set(`#${number}`, now());
      await trigger(BASE_URL, number);
      if (Date.now() > deadline) throw new Error('TIMEOUT reached while broadcasting');
    }
    const expected = BROADCASTS * inRoomConnected;
    const drainUntil = Math.min(Date.now() + DRAIN_MS, deadline);
    for (;;) {
      const counts = await all({ type: 'count' }, 'count');
      if (counts.reduce((s, c) => s + c.received, 0) >= expected || Date.now() > drainUntil) break;
      await sleep(100);
    }
    const rssEnd = rssKb(SERVER_PID);
    const collected = await all({ type: 'collect' }, 'receipts');

    const delays = [];
    const spreads = [];
    const firstAt = new Map();
    for (const c of collected) {
      for (const [key, times] of Object.entries(c.receipts)) {
        for (const t of times) if (!firstAt.has(key) || t < firstAt.get(key)) firstAt.set(key, t);
      }
    }
    for (const c of collected) {
      for (const [key, times] of Object.entries(c.receipts)) {
        const at = sent.get(key);
        if (at === undefined) continue; // not ours (another run's order)
        for (const t of times) { delays.push(t - at); spreads.push(t - firstAt.get(key)); }
      }
    }
    delays.sort((a, b) => a - b);
    spreads.sort((a, b) => a - b);
    const crossTenant = collected.reduce((s, c) => s + c.crossTenant, 0);
    const dropped = collected.reduce((s, c) => s + c.dropped, 0);
    const payloadBytes = Math.max(...collected.map((c) => c.payloadBytes));
    const events = collected.reduce((s, c) => s + c.events, 0);
    const fmt = (v) => (Number.isFinite(v) ? v.toFixed(2) : 'nan');
    console.log(['RESULT',
      `target=${process.env.TARGET || 'server'}`, `clients=${CLIENTS}`, `connected=${total}`, `room=${inRoomConnected}`,
      `connect_s=${connectSeconds.toFixed(1)}`, `rss_base_kb=${rssBase}`, `rss_connected_kb=${rssConnected}`,
      `rss_end_kb=${rssEnd}`, `kb_per_conn=${((rssConnected - rssBase) / total).toFixed(2)}`,
      `rss_half_kb=${rssHalf}`,
      `kb_per_conn_marginal=${(total > halfTotal ? (rssConnected - rssHalf) / (total - halfTotal) : NaN).toFixed(2)}`,
      `broadcasts=${BROADCASTS}`, `expected=${expected}`, `received=${delays.length}`,
      `p50_ms=${fmt(percentile(delays, 50))}`, `p99_ms=${fmt(percentile(delays, 99))}`, `max_ms=${fmt(delays.at(-1))}`,
      `spread_p99_ms=${fmt(percentile(spreads, 99))}`, `cross_tenant=${crossTenant}`, `dropped=${dropped}`,
      `payload_bytes=${payloadBytes}`,
      `events_per_broadcast=${expected > 0 ? (events / expected).toFixed(2) : 'nan'}`].join(' '));
  } finally {
    for (const w of workers) { try { w.send({ type: 'close' }); } catch (_) { /* gone already */ } }
  }
}

if (process.argv[2] === 'worker') {
  worker();
} else {
  main().then(() => process.exit(0), (e) => { console.error(`load.mjs: ${e.message}`); process.exit(1); });
}
