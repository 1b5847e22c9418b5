#!/usr/bin/env bash
# SPEC §10: "Event bus: events/s end to end with the §8.1 guarantees at least 3× BullMQ's on the same
# Redis."
#
# In one run on this machine, against the same Redis, with the same guarantees (3 attempts with
# exponential backoff from 1 s, 5 concurrent handlers per queue, completed jobs trimmed to 1000 and
# failed ones kept to 5000), one consumer of `print-job.completed`:
#   FORMA-REDIS   forma's bus on Redis (benches/bus.rs, `cargo bench --bench bus`)
#   FORMA-SQLITE  forma's bus on a SQLite file in a temporary directory (same binary)
#   BULLMQ        a BullMQ Queue and a Worker with concurrency 5 (benches/bullmq/bench.mjs)
# each measures (a) throughput: N events published in batches of BATCH as fast as they are accepted,
# events/s from the first publish to the last event handled, and (b) latency: RATE events/s for
# LATENCY_SECONDS, open loop, p50/p99 of due time → handled. Prints a table, the ratios and PASS/FAIL.
#
#   benches/bus.sh
#   N=50000 RATE=2000 LATENCY_SECONDS=20 benches/bus.sh
#   REDIS_URL=redis://127.0.0.1:6380 benches/bus.sh
#
# Settings (environment): N (20000), BATCH (100), RATE (1000 events/s), LATENCY_SECONDS (10),
# TIMEOUT (120 s per run, for the last event to be handled), REDIS_URL (redis://127.0.0.1:6379; it
# must be running, it is not started here).
#
# Needs node and npm; installs bullmq into benches/bullmq/node_modules when missing (npm registry).
# Everything talks to 127.0.0.1 (or REDIS_URL), every run is bounded by TIMEOUT, and each side deletes
# what it wrote to Redis when it ends normally (forma: its unique key prefix; BullMQ: obliterates its
# unique queue).
set -euo pipefail
cd "$(dirname "$0")/.."

export N=${N:-20000}
export BATCH=${BATCH:-100}
export RATE=${RATE:-1000}
# Not SECONDS: bash keeps a variable of that name (seconds since the shell started), always set.
export LATENCY_SECONDS=${LATENCY_SECONDS:-10}
export TIMEOUT=${TIMEOUT:-120}
export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

progress() { echo "· $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

dir=$(mktemp -d)
# shellcheck source=benches/common.sh
source benches/common.sh
CHILD_PID=""
cleanup() {
  if [ -n "$CHILD_PID" ]; then
    # A side stopped half-way may leave its keys (forma-bench-*, bull:forma-bench-*) in Redis.
    kill -INT "$CHILD_PID" 2>/dev/null && for _ in $(seq 100); do kill -0 "$CHILD_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$CHILD_PID" 2>/dev/null || true
    wait "$CHILD_PID" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Runs "$@" in the background (so the cleanup can stop it), its stdout into $1's file.
run_child() {
  local out=$1; shift
  "$@" >"$out" &
  CHILD_PID=$!
  wait "$CHILD_PID" || { local rc=$?; CHILD_PID=""; return "$rc"; }
  CHILD_PID=""
}

# --- tools ------------------------------------------------------------------------------------

command -v node >/dev/null || die "node is missing (install Node.js 20 or later)"
command -v npm >/dev/null || die "npm is missing (install it with Node.js)"
# Redis must answer before anything is built or installed.
redis_host_port=$(echo "$REDIS_URL" | sed -E 's#^redis://([^@/]*@)?##; s#/.*$##')
redis_host=${redis_host_port%%:*}; redis_port=${redis_host_port##*:}
[ "$redis_port" = "$redis_host_port" ] && redis_port=6379
(exec 3<>"/dev/tcp/$redis_host/$redis_port") 2>/dev/null || die "no Redis at $REDIS_URL (start one, or set REDIS_URL)"

if ! (cd benches/bullmq && node -e 'require.resolve("bullmq"); require.resolve("ioredis")') 2>/dev/null; then
  progress "installing bullmq into benches/bullmq/node_modules (npm install)"
  (cd benches/bullmq && npm install --no-audit --no-fund --loglevel=error >"$dir/npm.log" 2>&1) ||
    { cat "$dir/npm.log" >&2; die "npm install failed in benches/bullmq"; }
fi
BULLMQ_VERSION=$(cd benches/bullmq && node -p 'require("bullmq/package.json").version')

progress "building the bench (cargo bench --bench bus --no-run; minutes on 2 cores when stale)"
cargo bench --bench bus --no-run --quiet 2>"$dir/build.log" || { cat "$dir/build.log" >&2; die "cargo bench --no-run failed"; }

# --- measuring ----------------------------------------------------------------------------------

progress "forma (Redis, then SQLite): N=$N BATCH=$BATCH RATE=$RATE LATENCY_SECONDS=$LATENCY_SECONDS"
run_child "$dir/forma.txt" cargo bench --quiet --bench bus ||
  die "the forma bench failed"
progress "BullMQ $BULLMQ_VERSION: same settings, same Redis"
run_child "$dir/bullmq.txt" node benches/bullmq/bench.mjs || die "the BullMQ bench failed"

# RESULT lines: "RESULT backend=NAME key=value …"; field NAME KEY prints the value.
field() { sed -n "s/^RESULT backend=$1 .*\b$2=\([^ ]*\).*/\1/p" "$dir"/forma.txt "$dir"/bullmq.txt | head -n 1; }
for backend in forma-redis forma-sqlite bullmq; do
  [ -n "$(field "$backend" events_per_s)" ] || die "no result for $backend: $(cat "$dir"/*.txt)"
done

# --- report -------------------------------------------------------------------------------------

echo
echo "== forma event bus benchmark (SPEC §10) =="
echo "machine:  $(machine_label)"
echo "forma:    $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' (work tree modified)'), cargo bench (release profile)"
echo "tools:    redis $(redis-cli -u "$REDIS_URL" INFO server 2>/dev/null | sed -n 's/^redis_version:\(.*\)\r$/\1/p' || true), node $(node -v), bullmq $BULLMQ_VERSION"
echo "settings: N=$N BATCH=$BATCH RATE=$RATE LATENCY_SECONDS=$LATENCY_SECONDS TIMEOUT=$TIMEOUT REDIS_URL=$REDIS_URL" \
  "one queue (print-job.completed → order), 5 concurrent handlers, 3 attempts, exponential backoff 1 s"
echo
printf '%-13s %10s %10s %10s %9s %14s %12s %5s\n' backend 'events/s' 'p50 ms' 'p99 ms' 'at rate' 'handled (a/b)' duplicates dead
for backend in forma-redis forma-sqlite bullmq; do
  printf '%-13s %10s %10s %10s %9s %14s %12s %5s\n' "$backend" "$(field "$backend" events_per_s)" \
    "$(field "$backend" p50_ms)" "$(field "$backend" p99_ms)" "$(field "$backend" achieved_rate)" \
    "$(field "$backend" handled)/$N $(field "$backend" latency_handled | cut -d/ -f1)" \
    "$(field "$backend" duplicates)" "$(field "$backend" dead)"
done
echo
redis_ratio=$(ratio "$(field forma-redis events_per_s)" "$(field bullmq events_per_s)")
echo "forma-redis/bullmq  events/s: $redis_ratio   (SPEC: >= 3.00 -> $(awk -v r="$redis_ratio" 'BEGIN { print (r >= 3 ? "PASS" : "FAIL") }'))"
echo "forma-sqlite/bullmq events/s: $(ratio "$(field forma-sqlite events_per_s)" "$(field bullmq events_per_s)")"
echo "latency at $RATE/s, p50 / p99 ms: forma-redis $(field forma-redis p50_ms) / $(field forma-redis p99_ms)," \
  "forma-sqlite $(field forma-sqlite p50_ms) / $(field forma-sqlite p99_ms), bullmq $(field bullmq p50_ms) / $(field bullmq p99_ms)"
