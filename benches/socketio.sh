#!/usr/bin/env bash
# SPEC §10: "Socket.IO: 10 000 concurrent websocket clients on one order replica; broadcast to 5 000
# clients with p99 delivery under 50 ms; memory per connection at most a third of the Node
# socket.io server's."
#
# In one run on this machine, the same load generator drives two servers, one after the other, each on
# the same Redis:
#   NODE   the `socket.io` 4.x server with `@socket.io/redis-adapter` (benches/socketio/server.mjs):
#          path /socket.io, namespace /events, a tenant room per session cookie; a broadcast is an
#          emit of an order to the room, triggered over HTTP
#   FLOOR  socketioxide alone (benches/socketio_floor.rs), shaped like the other two, on the same
#          Redis adapter: what the library forma's Socket.IO is built on costs by itself, so that
#          forma's figure above it is forma's own, and its ratio to Node the best this stack reaches
#   FORMA  `forma serve --role all` (gateway and order service in one process, one replica) with
#          Redis configured, so Socket.IO runs on the Redis adapter: the handshake is authenticated
#          by the session cookie, and a broadcast is a real event: a signed Shopify orders/create
#          webhook becomes an order, whose `order:created` goes to the tenant's room
# CLIENTS websocket clients connect (ROOM in the broadcasting tenant, the rest in another tenant, who
# must receive nothing); then BROADCASTS `order:created`, one every INTERVAL_MS. Printed:
#   - memory per connection: the server's RSS once every client is connected and SETTLE_MS passed,
#     minus its RSS before the first client, divided by the clients (the SPEC's figure); and the
#     marginal cost: the RSS growth from half to all the clients, per client of the second half;
#   - delivery delay: trigger sent → event received by a client, p50/p99/max over every receipt
#     (for forma it includes ingesting the webhook: the order is committed, then read and emitted);
#   - fan-out spread: first → each receipt of the same broadcast (the broadcast itself);
#   - the ratios and the SPEC's goals, and forma against the floor.
#
# The load generator (LOADGEN): `rust` (default), benches/socketio_load.rs, built by `cargo bench`;
# or `node`, benches/socketio/load.mjs. Both speak the same protocol and print the same RESULT line.
# The Node one spends about 20 µs of CPU per receipt, as much as the server spends sending it: on
# 2 cores its p99 measures the receiving side as much as the server.
#
#   benches/socketio.sh                          # builds the release binary if it is stale
#   CLIENTS=2000 ROOM=1000 BROADCASTS=20 benches/socketio.sh
#   MODE=dhat benches/socketio.sh                # the floor's heap per connection, by allocation site
#
# MODE=dhat runs only the floor, under valgrind's heap profiler (dhat), built with the system
# allocator and line tables (`cargo bench --profile dhat --features system-allocator`): CLIENTS
# (2000 there) connect and BROADCASTS (3) reach the room, and the heap at its peak (every client
# connected, at the latest as the floor closes its sockets on SIGTERM; what closes them is shown
# apart) is printed per connection by allocation site and by kind (tasks, channels, websocket,
# sockets). It shows where the library's memory per connection goes, which RSS cannot; its figures
# are the system allocator's, without mimalloc's own overhead. DHAT_SITES (25) sites are listed;
# DHAT_OUT=FILE keeps the profile.
#
# Settings (environment): MODE (measure, or dhat), LOADGEN (rust), CLIENTS (10000), ROOM (5000),
# PROCS (4, load generator processes for node, worker threads for rust),
# BROADCASTS (40), INTERVAL_MS (250), SETTLE_MS (3000), TIMEOUT (240 s per server), REDIS_URL
# (redis://127.0.0.1:6379, Redis >= 7), NODE_PORT (29301), FORMA_PORT (29302), FLOOR_PORT
# (29303), FLOOR (1; 0 skips the floor), BIN (the release build, under CARGO_TARGET_DIR when set;
# when given, it is used as it is, and the report names it by path and SHA-256).
# TOKIO_WORKER_THREADS is passed through.
#
# Needs node and npm (installs benches/socketio/node_modules with npm ci) and a running Redis.
# Raises the open-file limit for itself and its children (ulimit -n; root may raise the hard limit).
# Everything listens on and talks to 127.0.0.1 only, every phase is bounded by TIMEOUT, and every
# process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=${MODE:-measure}
case "$MODE" in
  measure)
    CLIENTS=${CLIENTS:-10000} ROOM=${ROOM:-5000} BROADCASTS=${BROADCASTS:-40} ;;
  dhat) # valgrind runs the server some 50 times slower: fewer clients, a few broadcasts
    CLIENTS=${CLIENTS:-2000} ROOM=${ROOM:-1000} BROADCASTS=${BROADCASTS:-3} ;;
  *) echo "MODE must be measure or dhat" >&2; exit 1 ;;
esac
DHAT_SITES=${DHAT_SITES:-25}
LOADGEN=${LOADGEN:-rust}
PROCS=${PROCS:-4}
INTERVAL_MS=${INTERVAL_MS:-250}
SETTLE_MS=${SETTLE_MS:-3000}
TIMEOUT=${TIMEOUT:-240}
REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# Below the kernel's ephemeral range (32768-60999 by default): 10 000 client sockets take ports
# from it, and one of them could hold the port the next server wants to listen on.
NODE_PORT=${NODE_PORT:-29301}
FORMA_PORT=${FORMA_PORT:-29302}
FLOOR_PORT=${FLOOR_PORT:-29303}
FLOOR=${FLOOR:-1}
ADMIN_PASSWORD=bench-admin-password
OTHER_PASSWORD=bench-other-password
SHOPIFY_SECRET=bench-shopify-webhook-secret
SHOP_DOMAIN=forma-bench.myshopify.com
# Unique per run: the Redis adapters' channels and forma's keys never meet another run's.
RUN_PREFIX="bench-socketio-$$-"

progress() { echo "· $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

dir=$(mktemp -d)
# shellcheck source=benches/common.sh
source benches/common.sh
NODE_PID=""
FLOOR_PID=""
FORMA_PID=""

# Stops what is still running, then removes the temporary files.
cleanup() {
  stop_pid "$FORMA_PID"
  stop_pid "$NODE_PID"
  stop_pid "$FLOOR_PID"
  rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- tools, limits, binary ----------------------------------------------------------------------

ensure_tools() {
  command -v curl >/dev/null || die "curl is needed (Debian: apt-get install curl)"
  if [ "$MODE" = dhat ]; then
    [ "$LOADGEN" = rust ] || die "MODE=dhat drives the floor with LOADGEN=rust"
    command -v valgrind >/dev/null || die "valgrind is needed for MODE=dhat (Debian: apt-get install valgrind)"
    command -v python3 >/dev/null || die "python3 is needed for MODE=dhat (Debian: apt-get install python3)"
    return 0
  fi
  command -v node >/dev/null && command -v npm >/dev/null ||
    die "node and npm are needed (Debian: apt-get install nodejs npm)"
  if [ ! -d benches/socketio/node_modules ] ||
    [ benches/socketio/package-lock.json -nt benches/socketio/node_modules ]; then
    progress "installing the Node side (npm ci in benches/socketio)"
    (cd benches/socketio && npm ci --no-audit --no-fund --silent) || die "npm ci in benches/socketio failed"
    touch benches/socketio/node_modules
  fi
}

# Every client is a socket in the load generator and one in the server: both need the descriptors.
raise_fd_limit() {
  local need=$((CLIENTS + 4096))
  if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt "$need" ]; then
    ulimit -n "$need" 2>/dev/null ||
      die "cannot raise the open-file limit to $need (ulimit -n is $(ulimit -n), hard $(ulimit -Hn)); run as root or raise the hard limit"
  fi
}

# The Rust load generator, built once in the bench profile; LOADGEN_BIN is its executable.
ensure_loadgen() {
  case $LOADGEN in
    node) return 0 ;;
    rust) ;;
    *) die "LOADGEN=$LOADGEN: rust or node" ;;
  esac
  progress "building the load generator (cargo bench --bench socketio_load --no-run; minutes on 2 cores when stale)"
  LOADGEN_BIN=$(bench_executable socketio_load)
}

# The floor server, built once in the bench profile; FLOOR_BIN is its executable.
ensure_floor() {
  [ "$FLOOR" = 1 ] || return 0
  progress "building the socketioxide floor (cargo bench --bench socketio_floor --no-run)"
  FLOOR_BIN=$(bench_executable socketio_floor)
}

redis_host_port() { local rest="${REDIS_URL#*://}"; rest="${rest#*@}"; rest="${rest%%/*}"; rest="${rest%%\?*}"; echo "${rest%%:*} $([[ $rest == *:* ]] && echo "${rest##*:}" || echo 6379)"; }
port_in_use() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

ensure_redis() {
  local host port
  read -r host port < <(redis_host_port)
  case $host in 127.*|localhost) ;; *) die "REDIS_URL must point at this machine (127.0.0.1), not $host" ;; esac
  port_in_use "$host" "$port" || die "Redis does not answer on $host:$port (REDIS_URL); start it (scripts/test does)"
}

# --- the servers --------------------------------------------------------------------------------

start_node() {
  (cd benches/socketio && exec env PORT="$NODE_PORT" REDIS_URL="$REDIS_URL" KEY_PREFIX="${RUN_PREFIX}socket.io" \
    node server.mjs) >"$dir/node.log" 2>&1 &
  NODE_PID=$!
  wait_until_up "http://127.0.0.1:$NODE_PORT/health" 30 "$NODE_PID" ||
    { cat "$dir/node.log" >&2; die "the Node socket.io server did not start"; }
}

# start_floor [SECONDS [LAUNCHER…]]: starts FLOOR_BIN, under LAUNCHER when given (valgrind), and
# waits up to SECONDS (30) for it to answer.
start_floor() {
  local seconds=${1:-30}
  shift $(($# > 0 ? 1 : 0))
  env PORT="$FLOOR_PORT" REDIS_URL="$REDIS_URL" KEY_PREFIX="${RUN_PREFIX}floor-socket.io" \
    "$@" "$FLOOR_BIN" --bench >"$dir/floor.log" 2>&1 &
  FLOOR_PID=$!
  wait_until_up "http://127.0.0.1:$FLOOR_PORT/health" "$seconds" "$FLOOR_PID" ||
    { cat "$dir/floor.log" >&2; die "the socketioxide floor did not start"; }
}

# The socketioxide version the floor and forma are built with.
socketioxide_version() { sed -n '/^name = "socketioxide"$/{n;s/^version = "\(.*\)"/\1/p}' Cargo.lock; }

# forma's settings for every command of the run: its own SQLite directory, the run's Redis prefix,
# a Shopify shop mapped to tenant `default`, and limits far above what the run sends. It execs:
# call it in a subshell, `(forma …)`, or in the background, whose pid is then forma's own.
forma() {
  cd "$dir/forma" || exit 1
  exec env -u DATABASE_URL -u RUST_LOG \
    REDIS_URL="$REDIS_URL" \
    FORMA_REDIS__KEY_PREFIX="$RUN_PREFIX" \
    FORMA_INTERNAL__KEY="$INTERNAL_KEY" \
    FORMA_SESSION__SECRET="$SESSION_SECRET" \
    FORMA_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    FORMA_SHOPIFY__WEBHOOK_SECRET="$SHOPIFY_SECRET" \
    FORMA_SHOPIFY__SHOP_DOMAIN="$SHOP_DOMAIN" \
    FORMA_LOG__LEVEL=warn \
    FORMA_RATE_LIMIT__PER_IP=1000000000 \
    FORMA_RATE_LIMIT__PER_USER=1000000000 \
    FORMA_RATE_LIMIT__WEBHOOKS=1000000000 \
    "$BIN" "$@"
}

start_forma() {
  mkdir -p "$dir/forma"
  INTERNAL_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
  SESSION_SECRET=$(head -c 64 /dev/urandom | od -An -tx1 | tr -d ' \n')
  # The clients outside the broadcasting tenant sign in to a tenant of their own.
  (forma migrate) >"$dir/forma-cli.log" 2>&1 || { cat "$dir/forma-cli.log" >&2; die "forma migrate failed"; }
  (forma tenants create bench-other) >>"$dir/forma-cli.log" 2>&1 ||
    { cat "$dir/forma-cli.log" >&2; die "forma tenants create failed"; }
  echo "$OTHER_PASSWORD" | (forma users create --email other@bench.invalid --role viewer --tenant bench-other) \
    >>"$dir/forma-cli.log" 2>&1 || { cat "$dir/forma-cli.log" >&2; die "forma users create failed"; }
  forma serve --role all --port "$FORMA_PORT" >"$dir/forma.log" 2>&1 &
  FORMA_PID=$!
  wait_until_up "http://127.0.0.1:$FORMA_PORT/health/ready" 60 "$FORMA_PID" ||
    { tail -n 20 "$dir/forma.log" >&2; die "forma serve --role all did not start"; }
}

# Signs in as $1 and prints the session cookie ("forma.sid=…").
sign_in() {
  local status
  status=$(curl -sS -o "$dir/login.json" -D "$dir/login.headers" -w '%{http_code}' \
    -H 'content-type: application/json' --data "{\"email\":\"$1\",\"password\":\"$2\"}" \
    "http://127.0.0.1:$FORMA_PORT/api/v1/auth/login")
  [ "$status" = 200 ] || die "sign-in of $1 answered $status: $(cat "$dir/login.json")"
  tr -d '\r' <"$dir/login.headers" | sed -n 's/^[Ss]et-[Cc]ookie: *\(forma\.sid=[^;]*\).*/\1/p' | tail -n 1
}

# Aborts unless forma's Socket.IO is what is measured: it admits a signed-in handshake, refuses one
# without a session, and runs on the Redis adapter.
verify_forma() {
  local url="http://127.0.0.1:$FORMA_PORT/socket.io/?EIO=4&transport=polling" status
  for _ in $(seq 100); do
    status=$(curl -sS -o "$dir/handshake.txt" -w '%{http_code}' -H "Cookie: $COOKIE_ROOM" "$url")
    [ "$status" = 503 ] || break # the Redis adapter is starting
    sleep 0.1
  done
  [ "$status" = 200 ] || die "a signed-in Socket.IO handshake answered $status: $(cat "$dir/handshake.txt")"
  status=$(curl -sS -o /dev/null -w '%{http_code}' "$url")
  [ "$status" = 401 ] || die "a Socket.IO handshake without a session answered $status, expected 401"
  # The Redis adapter subscribes to its request channel of the namespace, under the run's prefix.
  if command -v redis-cli >/dev/null; then
    redis-cli -u "$REDIS_URL" PUBSUB CHANNELS "${RUN_PREFIX}socket.io-request#/events#*" | grep -q . ||
      die "forma's Socket.IO is not on the Redis adapter (no ${RUN_PREFIX}socket.io-request#/events# channel)"
  else
    progress "WARNING: no redis-cli: cannot check that forma's Socket.IO runs on the Redis adapter"
  fi
}

# --- measuring ----------------------------------------------------------------------------------

declare -A R # "TARGET/key" -> value, from the load generator's RESULT line

run_load() { # TARGET PORT PID TRIGGER COOKIE_ROOM COOKIE_OTHER ROOM_TENANT
  local target=$1 out="$dir/load-$1.txt" loadgen=(node benches/socketio/load.mjs)
  [ "$LOADGEN" = node ] || loadgen=("$LOADGEN_BIN" --bench)
  progress "$target: $CLIENTS clients ($ROOM in the room), $BROADCASTS broadcasts every ${INTERVAL_MS} ms"
  env TARGET="$target" BASE_URL="http://127.0.0.1:$2" SERVER_PID="$3" TRIGGER="$4" \
    COOKIE_ROOM="$5" COOKIE_OTHER="$6" ROOM_TENANT="$7" \
    SHOPIFY_SECRET="$SHOPIFY_SECRET" SHOP_DOMAIN="$SHOP_DOMAIN" \
    CLIENTS="$CLIENTS" ROOM="$ROOM" PROCS="$PROCS" BROADCASTS="$BROADCASTS" INTERVAL_MS="$INTERVAL_MS" \
    SETTLE_MS="$SETTLE_MS" TIMEOUT="$TIMEOUT" \
    timeout --kill-after=10 "$((TIMEOUT + 30))" "${loadgen[@]}" >"$out" ||
    { cat "$out" >&2; die "the load generator failed against $target"; }
  local line field
  line=$(grep '^RESULT ' "$out") || die "no RESULT from the load generator against $target"
  for field in ${line#RESULT }; do R["$target/${field%%=*}"]=${field#*=}; done
}

report() {
  local t targets=(node forma)
  [ "$FLOOR" = 1 ] && targets=(node floor forma)
  echo
  echo "== forma Socket.IO benchmark (SPEC §10) =="
  echo "machine:  $(machine_label)"
  echo "forma:    $(binary_label), serve --role all, Redis adapter"
  echo "node:     $(node --version), socket.io $(node -p "require('./benches/socketio/node_modules/socket.io/package.json').version"), @socket.io/redis-adapter $(node -p "require('./benches/socketio/node_modules/@socket.io/redis-adapter/package.json').version")"
  [ "$FLOOR" = 1 ] && echo "floor:    socketioxide $(socketioxide_version) alone (benches/socketio_floor.rs), Redis adapter"
  echo "redis:    $REDIS_URL"
  echo "settings: LOADGEN=$LOADGEN CLIENTS=$CLIENTS ROOM=$ROOM PROCS=$PROCS BROADCASTS=$BROADCASTS INTERVAL_MS=$INTERVAL_MS SETTLE_MS=$SETTLE_MS" \
    "forma TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-default}"
  echo "delay: trigger sent -> received (forma: a Shopify webhook ingested, committed, emitted; node: an HTTP-triggered emit)"
  echo "spread: first receipt -> each receipt of the same broadcast"
  echo
  printf '%-6s %9s %9s %9s %9s %9s %8s %8s %8s %10s %9s %7s\n' target connected 'RSS0 MB' 'RSS MB' 'KB/conn' \
    'KB/conn+' 'p50 ms' 'p99 ms' 'max ms' 'spread99' received 'x-tnt'
  for t in "${targets[@]}"; do
    printf '%-6s %9s %9s %9s %9s %9s %8s %8s %8s %10s %9s %7s\n' "$t" "${R[$t/connected]}" \
      "$(awk -v k="${R[$t/rss_base_kb]}" 'BEGIN { printf "%.1f", k / 1024 }')" \
      "$(awk -v k="${R[$t/rss_connected_kb]}" 'BEGIN { printf "%.1f", k / 1024 }')" \
      "${R[$t/kb_per_conn]}" "${R[$t/kb_per_conn_marginal]}" "${R[$t/p50_ms]}" "${R[$t/p99_ms]}" \
      "${R[$t/max_ms]}" "${R[$t/spread_p99_ms]}" "${R[$t/received]}/${R[$t/expected]}" "${R[$t/cross_tenant]}"
  done
  echo "KB/conn: (RSS with every client - RSS before the first) / clients; KB/conn+: the second half's" \
    "growth per client (what one more connection costs, without one-time costs)"
  echo
  local mem_ratio p99_ratio
  mem_ratio=$(ratio "${R[forma/kb_per_conn]}" "${R[node/kb_per_conn]}")
  p99_ratio=$(ratio "${R[forma/p99_ms]}" "${R[node/p99_ms]}")
  echo "forma/node memory per connection: $mem_ratio  (SPEC: <= 0.33 -> $(verdict "$(awk -v r="$mem_ratio" 'BEGIN { print r <= 0.3334 }')"))"
  echo "forma/node p99 delivery delay:    $p99_ratio"
  if [ "$FLOOR" = 1 ]; then
    echo "floor/node memory per connection: $(ratio "${R[floor/kb_per_conn]}" "${R[node/kb_per_conn]}")  (the best this stack reaches)"
    echo "forma/floor memory per connection: $(ratio "${R[forma/kb_per_conn]}" "${R[floor/kb_per_conn]}")  (forma's own: $(awk -v a="${R[forma/kb_per_conn]}" -v b="${R[floor/kb_per_conn]}" 'BEGIN { printf "%.2f", a - b }') KB per connection above the floor)"
  fi
  echo "forma p99 delivery delay:         ${R[forma/p99_ms]} ms  (SPEC: < 50 ms -> $(verdict "$(awk -v p="${R[forma/p99_ms]}" 'BEGIN { print p < 50 }')"))"
  echo "order:created payload bytes: node ${R[node/payload_bytes]}, forma ${R[forma/payload_bytes]};" \
    "events per broadcast per room client: node ${R[node/events_per_broadcast]}, forma ${R[forma/events_per_broadcast]}"
  echo "server CPU per receipt while broadcasting: node ${R[node/server_us_per_receipt]:-n/a} µs," \
    "floor ${R[floor/server_us_per_receipt]:-n/a} µs," \
    "forma ${R[forma/server_us_per_receipt]:-n/a} µs (forma's includes ingesting the webhook)"
  echo "load generator ($LOADGEN) CPU per receipt while broadcasting: node ${R[node/loadgen_us_per_receipt]:-n/a} µs," \
    "forma ${R[forma/loadgen_us_per_receipt]:-n/a} µs"
  local bad=0
  for t in "${targets[@]}"; do
    if [ "${R[$t/connected]}" != "$CLIENTS" ] || [ "${R[$t/received]}" != "${R[$t/expected]}" ] ||
      [ "${R[$t/cross_tenant]}" != 0 ] || [ "${R[$t/dropped]}" != 0 ]; then
      echo "!! $t: ${R[$t/connected]}/$CLIENTS connected, ${R[$t/received]}/${R[$t/expected]} receipts," \
        "${R[$t/cross_tenant]} crossed tenants, ${R[$t/dropped]} sockets dropped"
      bad=1
    fi
  done
  [ "$bad" = 0 ] || { echo "!! INVALID RUN: see above"; return 1; }
}

# --- the floor's heap by allocation site (MODE=dhat) ---------------------------------------------

# The floor under dhat: clients connect, broadcasts reach the room, then the floor is stopped and
# dhat writes its profile. Its peak (t-gmax) is with every client connected, at the latest as the
# floor starts closing the sockets; the tasks that close them are counted apart.
profile_dhat() {
  progress "building the floor for heap profiling (cargo bench --bench socketio_floor --profile dhat --features system-allocator)"
  local out=${DHAT_OUT:-$dir/dhat.out}
  FLOOR_BIN=$(bench_executable socketio_floor --profile dhat --features system-allocator)
  progress "floor under valgrind's dhat on :$FLOOR_PORT"
  start_floor 120 valgrind --tool=dhat --dhat-out-file="$out"
  run_load floor "$FLOOR_PORT" "$FLOOR_PID" emit "forma.sid=bench-room" "forma.sid=bench-other" bench-room
  # dhat writes its profile as the process exits; under valgrind, closing every socket takes a
  # while, and a floor killed before it is done leaves no profile.
  stop_pid "$FLOOR_PID" 120
  FLOOR_PID=""
  [ -s "$out" ] || { cat "$dir/floor.log" >&2; die "dhat wrote no profile (the floor did not stop within 120 s of SIGTERM?)"; }
  [ "${R[floor/connected]}" = "$CLIENTS" ] ||
    die "only ${R[floor/connected]} of $CLIENTS clients connected: the peak is not the connected heap"
  echo
  echo "== socketioxide floor: heap per connection by allocation site (valgrind dhat) =="
  echo "machine:  $(machine_label)"
  echo "checkout: $(checkout_label)"
  echo "floor:    socketioxide $(socketioxide_version) alone (benches/socketio_floor.rs), Redis adapter, system allocator"
  echo "settings: CLIENTS=$CLIENTS ROOM=$ROOM BROADCASTS=$BROADCASTS (received ${R[floor/received]}/${R[floor/expected]})"
  echo "profile:  ${DHAT_OUT:-removed on exit (DHAT_OUT=FILE keeps it, for dh_view.html)}"
  python3 - "$out" "$CLIENTS" "$DHAT_SITES" <<'EOF'
import json, re, sys

path, clients, shown = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
profile = json.load(open(path))
frames, points = profile["ftbl"], profile["pps"]

# A frame is "0x…: function (file:line)" or "0x…: function (in object)"; an inlined function
# valgrind cannot name is "UnknownInlinedFun (file:line)".
def function_and_place(frame):
    text = re.sub(r"^0x[0-9A-Fa-f]+: ", "", frame)
    found = re.match(r"(.*) \((.*)\)$", text)
    return (found.group(1), found.group(2)) if found else (text, "")

def without_generics(name):
    shorter = re.sub(r"<[^<>]*>", "", name)
    return name if shorter == name else without_generics(shorter)

# The allocator and the allocating insides of std and hashbrown: every site passes through them,
# and they say nothing of what is allocated.
MACHINERY = {
    "[root]", "malloc", "calloc", "realloc", "memalign", "posix_memalign", "aligned_malloc",
    "alloc", "allocate", "alloc_impl", "alloc_impl_runtime", "__rdl_alloc", "__rdl_alloc_zeroed",
    "__rdl_realloc", "box_new_uninit", "exchange_malloc", "try_allocate_in", "finish_grow",
    "grow_amortized", "grow_one", "grow_exact", "reserve", "reserve_for_push",
    "do_reserve_and_handle", "with_capacity", "with_capacity_in", "to_vec", "to_vec_in",
    "new_uninit", "new_uninit_in", "do_alloc", "new_uninitialized", "fallible_with_capacity",
    "reserve_rehash", "resize", "reserve_inner", "prepare_resize", "resize_inner",
    "reserve_rehash_inner",
}

def own_frames(frames_of_site):
    for frame in frames_of_site:
        name, place = function_and_place(frame)
        if name == "UnknownInlinedFun":
            if not place.startswith(("library/", "in ")):
                yield "(inlined) " + place
        elif without_generics(name).split("::")[-1] not in MACHINERY:
            yield name

# The peak may come as the floor closes its sockets on SIGTERM: the tasks that close them are then
# in it, and are no connection's cost.
CLOSING = ("closing at shutdown (not a connection's cost)",
           re.compile(r"close_session|close_underlying_transport"))

# What a connection's memory is made of, by the first rule a site's frames match.
KINDS = [
    CLOSING,
    ("tokio tasks (a future and its header)", re.compile(r"runtime::task::core::Cell")),
    ("channels (mpsc blocks and state, watch, oneshot)", re.compile(r"tokio::sync::(mpsc|watch|oneshot)")),
    ("websocket (tungstenite buffers, split lock)", re.compile(r"tungstenite|bilock")),
    ("engine.io socket", re.compile(r"engineioxide::")),
    ("socket.io socket, rooms, adapter", re.compile(r"socketioxide")),
    ("I/O registration, TCP, HTTP", re.compile(r"tokio::runtime::io|hyper|http::")),
]

total = sum(p["gb"] for p in points)
blocks = sum(p["gbk"] for p in points)
by_kind = {}
for p in points:
    text = "\n".join(frames[i] for i in p["fs"])
    kind = next((name for name, rule in KINDS if rule.search(text)), "other")
    by_kind[kind] = by_kind.get(kind, 0) + p["gb"]
closing = by_kind.get(CLOSING[0], 0)
print("heap at its peak: %.2f KB and %.1f blocks per connection; without what closes the sockets,"
      " %.2f KB per connection" % (total / clients / 1000, blocks / clients,
                                   (total - closing) / clients / 1000))
print()
print("%9s  %s" % ("KB/conn", "kind"))
for kind, size in sorted(by_kind.items(), key=lambda item: -item[1]):
    print("%9.2f  %s" % (size / clients / 1000, kind))

print()
print("%9s %9s  %s" % ("KB/conn", "blk/conn", "allocated at (the allocator's own frames left out)"))
for p in sorted(points, key=lambda p: -p["gb"])[:shown]:
    if p["gb"] == 0:
        break
    own = list(own_frames(frames[i] for i in p["fs"]))
    print("%9.2f %9.2f  %s" % (p["gb"] / clients / 1000, p["gbk"] / clients,
                               "\n                     <- ".join(f[:130] for f in own[:3])))
EOF
}

# --- main ---------------------------------------------------------------------------------------

ensure_tools
raise_fd_limit
if [ "$MODE" = dhat ]; then
  ensure_loadgen
  ensure_redis
  port_in_use 127.0.0.1 "$FLOOR_PORT" && die "port $FLOOR_PORT is in use; set FLOOR_PORT"
  profile_dhat
  exit 0
fi
ensure_binary
ensure_loadgen
ensure_floor
ensure_redis
for port in "$NODE_PORT" "$FORMA_PORT" "$FLOOR_PORT"; do
  port_in_use 127.0.0.1 "$port" && die "port $port is in use; set NODE_PORT / FORMA_PORT / FLOOR_PORT"
done

progress "Node reference: socket.io on :$NODE_PORT"
start_node
run_load node "$NODE_PORT" "$NODE_PID" emit "forma.sid=bench-room" "forma.sid=bench-other" bench-room
stop_pid "$NODE_PID"; NODE_PID=""

if [ "$FLOOR" = 1 ]; then
  progress "floor: socketioxide alone on :$FLOOR_PORT"
  start_floor
  run_load floor "$FLOOR_PORT" "$FLOOR_PID" emit "forma.sid=bench-room" "forma.sid=bench-other" bench-room
  stop_pid "$FLOOR_PID"; FLOOR_PID=""
fi

progress "forma: serve --role all on :$FORMA_PORT"
start_forma
COOKIE_ROOM=$(sign_in admin@localhost "$ADMIN_PASSWORD")
COOKIE_OTHER=$(sign_in other@bench.invalid "$OTHER_PASSWORD")
[ -n "$COOKIE_ROOM" ] && [ -n "$COOKIE_OTHER" ] || die "sign-in set no forma.sid cookie"
verify_forma
run_load forma "$FORMA_PORT" "$FORMA_PID" webhook "$COOKIE_ROOM" "$COOKIE_OTHER" default

# The bench's SKU is deliberately unmapped (no print jobs, so one order is one broadcast's worth of
# events): its warning is expected, every other one is shown.
if grep -iE 'warn|error' "$dir/forma.log" | grep -qv 'has no product mapping'; then
  echo >&2; echo "forma's log (warnings and errors):" >&2
  grep -iE 'warn|error' "$dir/forma.log" | grep -v 'has no product mapping' | tail -n 20 >&2
fi
report
