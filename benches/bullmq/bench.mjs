// The BullMQ reference of benches/bus.sh (SPEC §10): the measurements of benches/bus.rs, on the same
// Redis, with the same delivery guarantees: a Worker with concurrency 5, jobs with 3 attempts and
// exponential backoff from 1 s, the last 1000 completed and 5000 failed jobs kept.
//
//   (a) throughput: N jobs added with addBulk in batches of BATCH, as fast as Redis accepts them;
//       events/s from the first add to the last job handled.
//   (b) latency: RATE jobs/s for LATENCY_SECONDS, open loop (job i is due at start + i / RATE and stamped
//       with that time), p50/p99 of due time → handled.
//
//   npm install --no-audit --no-fund && node bench.mjs      (benches/bus.sh does both)
//
// Settings (environment): N (20000), BATCH (100), RATE (1000), LATENCY_SECONDS (10), TIMEOUT (120 s per
// run), REDIS_URL (redis://127.0.0.1:6379). The queue has a unique name and is obliterated at the
// end. Prints the line format of benches/bus.rs:
//   RESULT backend=bullmq events_per_s=… p50_ms=… p99_ms=… n=… …
import { randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { createRequire } from 'node:module';
import { Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const num = (name, dflt) => {
  const v = process.env[name];
  if (v === undefined || v.trim() === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name}=${v} is not a valid value`);
  return n;
};
const N = num('N', 20000);
const BATCH = Math.max(1, Math.floor(num('BATCH', 100)));
const RATE = num('RATE', 1000);
const SECONDS = num('LATENCY_SECONDS', 10);
const TIMEOUT_MS = num('TIMEOUT', 120) * 1000;
const REDIS_URL = process.env.REDIS_URL || 'redis://127.0.0.1:6379';
const QUEUE = `forma-bench-${randomUUID().replaceAll('-', '')}`;
const EVENT_TYPE = 'print-job.completed';

// The guarantees of SPEC §8.1, as BullMQ spells them.
const JOB_OPTS = {
  attempts: 3,
  backoff: { type: 'exponential', delay: 1000 },
  removeOnComplete: 1000,
  removeOnFail: 5000,
};

const log = (msg) => process.stderr.write(`· ${msg}\n`);
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// The same document forma puts on the bus: the §8.1 envelope and the print-job.completed fields,
// the publish stamp (ms since this process's performance origin) in correlationId.
const event = (seq, stamp) => ({
  eventId: randomUUID(),
  eventType: EVENT_TYPE,
  source: 'bench',
  tenantId: 'bench-tenant',
  timestamp: new Date().toISOString(),
  correlationId: String(stamp),
  printJobId: `pj-${seq}`,
  orderId: `order-${seq}`,
  lineItemId: `li-${seq}`,
});

// What the worker saw: each distinct eventId once, with its stamp → handled latency.
let seen = new Set();
let latencies = [];
let lastAt = 0;
let duplicates = 0;
const reset = () => {
  seen = new Set();
  latencies = [];
  lastAt = 0;
};
const waitFor = async (n) => {
  const deadline = performance.now() + TIMEOUT_MS;
  while (seen.size < n && performance.now() < deadline) await sleep(2);
  return seen.size >= n;
};
const percentile = (sorted, p) => {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
};

// Producer and worker on their own connections, as two services would be.
const producerConn = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
const workerConn = new IORedis(REDIS_URL, { maxRetriesPerRequest: null });
const queue = new Queue(QUEUE, { connection: producerConn });
const worker = new Worker(
  QUEUE,
  async (job) => {
    const now = performance.now();
    const { eventId, correlationId } = job.data;
    if (seen.has(eventId)) {
      duplicates += 1;
      return;
    }
    seen.add(eventId);
    latencies.push(now - Number(correlationId));
    lastAt = Math.max(lastAt, now);
  },
  { connection: workerConn, concurrency: 5 },
);
worker.on('error', (err) => log(`worker error: ${err.message}`));

let exitCode = 0;
try {
  await queue.waitUntilReady();
  await worker.waitUntilReady();
  const bullmqVersion = createRequire(import.meta.url)('bullmq/package.json').version;
  log(`bullmq ${bullmqVersion}, node ${process.version}: N=${N} BATCH=${BATCH} RATE=${RATE} ` +
    `LATENCY_SECONDS=${SECONDS} REDIS_URL=${REDIS_URL} queue ${QUEUE}`);

  // Warm-up, not measured.
  const warm = Array.from({ length: BATCH }, (_, i) => event(i, performance.now()));
  await queue.addBulk(warm.map((data) => ({ name: EVENT_TYPE, data, opts: JOB_OPTS })));
  if (!(await waitFor(warm.length))) throw new Error('the warm-up jobs were not handled in time');
  reset();

  // (a) Throughput.
  log(`bullmq: throughput (${N} events), then latency (${RATE} events/s for ${SECONDS} s)`);
  const started = performance.now();
  for (let seq = 0; seq < N; seq += BATCH) {
    const stamp = performance.now();
    const size = Math.min(BATCH, N - seq);
    const jobs = Array.from({ length: size }, (_, i) => ({
      name: EVENT_TYPE,
      data: event(seq + i, stamp),
      opts: JOB_OPTS,
    }));
    await queue.addBulk(jobs);
  }
  const publishedIn = (performance.now() - started) / 1000;
  if (!(await waitFor(N))) log(`WARNING: only ${seen.size} of ${N} jobs handled within ${TIMEOUT_MS / 1000} s`);
  const handled = seen.size;
  const elapsed = (lastAt - started) / 1000;
  const eventsPerS = handled / Math.max(elapsed, 1e-9);
  log(`throughput: ${N} events published in ${publishedIn.toFixed(2)} s, handled in ${elapsed.toFixed(2)} s`);
  reset();

  // (b) Latency at a fixed rate, open loop: adds are not awaited one by one.
  const total = Math.round(RATE * SECONDS);
  const start = performance.now() + 10;
  const pending = [];
  let i = 0;
  while (i < total) {
    const now = performance.now();
    while (i < total && start + (i * 1000) / RATE <= now) {
      const due = start + (i * 1000) / RATE;
      pending.push(queue.add(EVENT_TYPE, event(i, due), JOB_OPTS));
      i += 1;
    }
    if (i < total) await sleep(Math.max(0, Math.min(1, start + (i * 1000) / RATE - performance.now())));
  }
  const sentIn = (performance.now() - start) / 1000;
  await Promise.all(pending);
  if (!(await waitFor(total))) log(`WARNING: only ${seen.size} of ${total} jobs handled within ${TIMEOUT_MS / 1000} s`);
  const sorted = Float64Array.from(latencies).sort();
  const counts = await queue.getJobCounts('failed');

  console.log(
    `RESULT backend=bullmq events_per_s=${eventsPerS.toFixed(0)} ` +
      `p50_ms=${percentile(sorted, 50).toFixed(2)} p99_ms=${percentile(sorted, 99).toFixed(2)} ` +
      `n=${N} handled=${handled} rate=${RATE} achieved_rate=${(total / Math.max(sentIn, 1e-9)).toFixed(0)} ` +
      `seconds=${SECONDS} latency_handled=${sorted.length}/${total} duplicates=${duplicates} dead=${counts.failed ?? 0}`,
  );
} catch (err) {
  log(`error: ${err.stack || err}`);
  exitCode = 1;
} finally {
  // Stops what this script started and leaves nothing in Redis.
  await worker.close().catch(() => {});
  await queue.obliterate({ force: true }).catch((err) => log(`WARNING: obliterate failed: ${err.message}`));
  await queue.close().catch(() => {});
  producerConn.disconnect();
  workerConn.disconnect();
}
process.exit(exitCode);
