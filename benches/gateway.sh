#!/usr/bin/env bash
# SPEC §10: "Gateway: signed-in, rate-limited GET proxied to an upstream: req/s at least that of nginx
# plain reverse proxy to the same upstream; added p99 latency under 1 ms at half of peak load."
#
# In one run on this machine, wrk drives the same GET at these targets with the same settings:
#   DIRECT      the trivial upstream itself (an nginx server returning a fixed orders page, one
#               worker in a process of its own, which every proxy below forwards to)
#   NGINX       nginx as a plain reverse proxy to that upstream (keep-alive upstream connections),
#               WORKERS worker processes (1: on 2 cores wrk needs the other one), a process apart
#               from the upstream's as every proxy here is
#   NGINX_AUTO  the same proxy with one worker per core (`worker_processes auto`), measured when
#               WORKERS is not already auto
#   FLOOR       forma's transport alone (benches/proxy_floor.rs): the same hyper server on the same
#               connection threads, forwarding through the gateway's own connection pool, with
#               nothing of the gateway on top (no sign-in, limits, sessions, ids, metrics, logs): the
#               best this stack reaches against nginx, so that forma's figure below it is the cost
#               of the gateway's own work (FLOOR=0 skips it)
#   FORMA       `forma serve --role gateway`, signed in with a session cookie, both rate limits checked
#               on every request (limits set so high that none rejects), proxied to the same upstream
#   FORMA_X2    the distributed variant (DISTRIBUTED=1, the default when Redis answers): two gateway
#               processes sharing one database, sessions and rate limits in Redis (`redis.url`, a fresh
#               key prefix per run); the load generator splits its connections between them
#   FORMA_BASE  with BASE_BIN: another build of forma (the commit before a change, say), set up as
#               FORMA on a port of its own and measured next to it in every round (after it in odd
#               rounds, before it in even ones), so that a change is judged by forma/base within
#               each round rather than across two runs
#   FORMA_CACHED  the FORMA gateway with `/orders` marked cacheable (`cache_ttl_secs` in
#               `proxy.routes`): the same signed-in GET, answered from forma's response cache after the
#               first (peak load only)
# first at peak load, then at half load: a fixed request rate (half of forma's peak) held by a
# rate-limited load generator (oha -q, open loop, latency corrected), and prints req/s, p50, p99,
# CPU per request, the ratios and the added p99. DIRECT … FORMA are measured ROUNDS times (3), one
# after another in each round; each figure is the median of its rounds, and each ratio and added
# p99 the median of the rounds' own, every round's shown beside it.
#
#   benches/gateway.sh                               # builds the release binary if it is stale
#   DURATION=30s CONNECTIONS=128 benches/gateway.sh
#   HALF_RATE=6000 BIN=/path/to/forma benches/gateway.sh   # half load at a given rate, for A/B runs
#   BIN=/path/to/forma WORKERS=auto benches/gateway.sh
#   MODE=callgrind REQUESTS=2000 benches/gateway.sh  # instructions per request, not wall clock
#   BIN=/path/to/new BASE_BIN=/path/to/old benches/gateway.sh   # a change, A/B in the same rounds
#
# MODE=callgrind runs forma under valgrind's callgrind and sends REQUESTS (2000) signed-in GETs one
# after another on one keep-alive connection, after 200 not counted: it prints forma's instructions
# and heap allocations per request and the top functions (inclusive and self). Instruction counts barely move with
# other load on the machine, unlike req/s. CALLGRIND_OUT keeps the profile (default: a temp dir).
# With BASE_BIN, that build is profiled the same way after BIN, and both counts are compared; with
# FLOOR=1 (the default), the floor too, without a sign-in, and forma's count above the floor's is
# printed as the gateway's own work.
#
# Settings (environment): ROUNDS (3), DURATION (10s), CONNECTIONS (64), THREADS (2, wrk's), WARMUP (2s, per
# target, not measured), WORKERS (1, nginx worker_processes), DISTRIBUTED (auto: 1 when REDIS_URL
# answers), REDIS_URL (redis://127.0.0.1:6379), UPSTREAM_PORT (29201), NGINX_PROXY_PORT (29202),
# GATEWAY_PORT (29203), NGINX_AUTO_PORT (29204), GATEWAY2_PORT (29205), FLOOR_PORT (29206),
# BASE_PORT (29207), BASE_BIN (unset: no FORMA_BASE; used as it is, named by path and SHA-256), FLOOR
# (1; 0 skips the floor), FLOOR_LAYERS (none; `stack`: the floor inside the HTTP conventions every
# role shares, see benches/proxy_floor.rs), BIN (the release build, under CARGO_TARGET_DIR when
# set; when given, it is used as it is, and the report names it by path and SHA-256), OHA (the oha
# binary; installed with `cargo install oha` into target/bench-tools when missing).
# FORMA_SERVER__CONNECTION_THREADS (the threads that serve connections, default one per CPU; 0
# serves them on the shared work-stealing runtime) and TOKIO_WORKER_THREADS (that shared
# runtime's workers) are passed through to forma.
#
# Installs nginx, wrk (and valgrind for MODE=callgrind) from Debian packages when missing (needs
# root). Everything listens on and talks to 127.0.0.1 only, every run is bounded by DURATION, and
# every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
WARMUP=${WARMUP:-2s}
# One nginx worker by default: on a 2-core machine wrk needs the other core, and a second worker
# would only fight wrk for it. WORKERS=auto gives nginx one worker per core.
WORKERS=${WORKERS:-1}
MODE=${MODE:-throughput}
# The comparison is repeated ROUNDS times, every target once per round in turn, and each figure
# reported is the median of its rounds: on a shared machine one sequential pass can catch a slow
# spell on one target only, and move a ratio by a fifth.
ROUNDS=${ROUNDS:-3}
REQUESTS=${REQUESTS:-2000}
DISTRIBUTED=${DISTRIBUTED:-auto}
BENCH_REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}
# Below the kernel's ephemeral range (32768–60999 by default): a port in it can be held by any
# outgoing connection on the machine (a test suite running beside the benchmark, say), and a
# listener cannot bind it until that connection's TIME-WAIT is over.
UPSTREAM_PORT=${UPSTREAM_PORT:-29201}
NGINX_PROXY_PORT=${NGINX_PROXY_PORT:-29202}
GATEWAY_PORT=${GATEWAY_PORT:-29203}
NGINX_AUTO_PORT=${NGINX_AUTO_PORT:-29204}
GATEWAY2_PORT=${GATEWAY2_PORT:-29205}
FLOOR_PORT=${FLOOR_PORT:-29206}
BASE_PORT=${BASE_PORT:-29207}
BASE_BIN=${BASE_BIN:-}
FLOOR=${FLOOR:-1}
ADMIN_PASSWORD=bench-admin-password
# What the upstream answers: the shape of a real first page of orders, so bodies are realistic.
UPSTREAM_BODY='{"items":[],"total":0,"page":1,"pageSize":20}'

HALF_CONNECTIONS=$((CONNECTIONS / 2))
[ "$HALF_CONNECTIONS" -ge "$THREADS" ] ||
  { echo "CONNECTIONS/2 ($HALF_CONNECTIONS) must be at least THREADS ($THREADS)" >&2; exit 1; }
case "$MODE" in throughput | callgrind) ;; *) echo "MODE must be throughput or callgrind" >&2; exit 1 ;; esac
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a whole number of at least 1" >&2; exit 1; }

progress() { echo "· $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }

dir=$(mktemp -d)
# shellcheck source=benches/common.sh
source benches/common.sh
UPSTREAM_PID=""
NGINX_PID=""
NGINX_AUTO_PID=""
FORMA_PID=""
FORMA2_PID=""
FLOOR_PID=""
BASE_PID=""
REDIS_PREFIX=""

# Stops what this script started (and only that), then removes the temporary files.
cleanup() {
  local pid
  for pid in $FLOOR_PID $BASE_PID $FORMA2_PID $FORMA_PID $NGINX_AUTO_PID $NGINX_PID $UPSTREAM_PID; do
    # Both shut down gracefully within a second or two; don't wait for forma's 30 s drain timeout.
    stop_pid "$pid" 5
  done
  # The distributed run's sessions and rate-limit keys, under this run's own prefix.
  if [ -n "$REDIS_PREFIX" ] && command -v redis-cli >/dev/null; then
    redis-cli -u "$BENCH_REDIS_URL" --scan --pattern "$REDIS_PREFIX*" 2>/dev/null |
      xargs -r -n 500 redis-cli -u "$BENCH_REDIS_URL" del >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT
# Ctrl-C also reaches a running wrk (same process group); exiting runs the cleanup above.
trap 'exit 130' INT TERM

# --- tools and binary -------------------------------------------------------------------------

ensure_tools() {
  local missing=()
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v wrk >/dev/null || missing+=(wrk)
  command -v curl >/dev/null || missing+=(curl)
  [ "$MODE" = callgrind ] && { command -v valgrind >/dev/null || missing+=(valgrind); }
  [ "${#missing[@]}" -eq 0 ] && return
  progress "installing ${missing[*]}"
  # The package lists may be stale or absent on a fresh machine; refresh them only when needed.
  apt-get install -y -qq "${missing[@]}" >"$dir/apt.log" 2>&1 ||
    { apt-get update -qq >>"$dir/apt.log" 2>&1 && apt-get install -y -qq "${missing[@]}" >>"$dir/apt.log" 2>&1; } ||
    { cat "$dir/apt.log" >&2; die "could not install ${missing[*]}"; }
  # nginx-light is only a transitional package on some releases; fall back to nginx itself.
  command -v nginx >/dev/null || apt-get install -y -qq nginx >>"$dir/apt.log" 2>&1 || die "could not install nginx"
}

# oha holds a fixed request rate (-q) with latency correction, which "latency at half load" needs;
# wrk cannot (its clients are closed loop). Not a Debian package: installed from crates.io into
# target/bench-tools (minutes of compiling, once). Prints the binary, or nothing when unavailable.
find_oha() {
  if [ -n "${OHA:-}" ]; then echo "$OHA"; return; fi
  command -v oha 2>/dev/null && return
  local local_oha=target/bench-tools/bin/oha
  if [ ! -x "$local_oha" ]; then
    progress "installing oha into target/bench-tools (cargo install --locked oha)"
    cargo install --locked --quiet oha --root target/bench-tools >"$dir/oha-install.log" 2>&1 ||
      { progress "could not install oha (see below); half load falls back to halved connections"; tail -n 5 "$dir/oha-install.log" >&2; return; }
  fi
  realpath "$local_oha"
}

# The floor proxy, built once in the bench profile; FLOOR_BIN is its executable.
ensure_floor() {
  [ "$FLOOR" = 1 ] || return 0
  progress "building the proxy floor (cargo bench --bench proxy_floor --no-run)"
  FLOOR_BIN=$(bench_executable proxy_floor)
}

# --- processes under test -----------------------------------------------------------------------

# True when something already accepts connections on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# run_nginx NAME WORKERS SERVERS PORT: an nginx of its own in $dir/NAME, with WORKERS worker
# processes and SERVERS (the servers and upstreams of its http block), access log off and
# effectively unlimited keep-alive, so that nothing measures logging or reconnects; started once
# PORT answers. Sets STARTED_PID.
run_nginx() {
  local name=$1 workers=$2 servers=$3 prefix=$dir/$1
  mkdir -p "$prefix"
  cat >"$prefix/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
pid $prefix/nginx.pid;
error_log $prefix/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $prefix/client_body;
  proxy_temp_path $prefix/proxy;
  fastcgi_temp_path $prefix/fastcgi;
  uwsgi_temp_path $prefix/uwsgi;
  scgi_temp_path $prefix/scgi;
  keepalive_requests 100000000;
  keepalive_timeout 120s;
$servers
}
EOF
  # -e: the error log before the configuration is read, else nginx tries /var/log/nginx.
  nginx -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" -t -q ||
    die "nginx rejected $prefix/nginx.conf"
  nginx -p "$prefix" -e "$prefix/error.log" -c "$prefix/nginx.conf" &
  STARTED_PID=$!
  wait_until_up "http://127.0.0.1:$4/api/v1/orders" 10 "$STARTED_PID" ||
    { cat "$prefix/error.log" >&2; die "nginx ($name) did not start"; }
}

# The trivial upstream, what the order service would answer to GET /api/v1/orders: one worker, in a
# process of its own. Every proxy measured here (nginx, the floor, forma) forwards to this one
# process and none of them serves it, as no proxy in front of a separate service does; so each
# row's proxy CPU time is its own, and the upstream's is shown apart.
start_upstream() {
  run_nginx upstream 1 "
  server {
    listen 127.0.0.1:$UPSTREAM_PORT;
    location / {
      default_type application/json;
      return 200 '$UPSTREAM_BODY';
    }
  }" "$UPSTREAM_PORT"
  UPSTREAM_PID=$STARTED_PID
}

# The reference, listening on PORT: a plain reverse proxy with pooled keep-alive connections to the
# upstream, as a production nginx would be configured.
nginx_proxy() {
  cat <<EOF
  upstream bench_upstream {
    server 127.0.0.1:$UPSTREAM_PORT;
    keepalive 64;
    keepalive_requests 100000000;
  }
  server {
    listen 127.0.0.1:$1;
    location / {
      proxy_pass http://bench_upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
EOF
}

# The reference with WORKERS worker processes.
start_nginx() {
  run_nginx nginx "$WORKERS" "$(nginx_proxy "$NGINX_PROXY_PORT")" "$NGINX_PROXY_PORT"
  NGINX_PID=$STARTED_PID
}

# The same plain reverse proxy to the same upstream, with one worker per core: what nginx does
# with the whole machine, as `WORKERS=auto` would configure the reference.
start_nginx_auto() {
  run_nginx nginx-auto auto "$(nginx_proxy "$NGINX_AUTO_PORT")" "$NGINX_AUTO_PORT"
  NGINX_AUTO_PID=$STARTED_PID
}

INTERNAL_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')

# launch_forma NAME PORT [ENV=VALUE...] [-- WRAPPER...]: one `forma serve --role gateway` in
# $dir/NAME (its SQLite database lives there) with the order service pointed at the trivial
# upstream. The rate limits are far above what the run sends, but not 0 (which would switch them
# off): both limiters still decide on every request. Runs LAUNCH_BIN when set (BASE_BIN), else BIN.
# Sets LAUNCHED_PID.
launch_forma() {
  local name=$1 port=$2 && shift 2
  local -a envs=() wrapper=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do envs+=("$1"); shift; done
  [ "${1:-}" = -- ] && { shift; wrapper=("$@"); }
  mkdir -p "$dir/$name"
  (
    cd "$dir/$name"
    # The caller's DATABASE_URL / REDIS_URL / RUST_LOG would change what is measured.
    exec env -u DATABASE_URL -u REDIS_URL -u RUST_LOG \
      FORMA_INTERNAL__KEY="$INTERNAL_KEY" \
      FORMA_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
      FORMA_SERVICES__ORDER_URL="http://127.0.0.1:$UPSTREAM_PORT" \
      FORMA_LOG__LEVEL=warn \
      FORMA_RATE_LIMIT__PER_IP=1000000000 \
      FORMA_RATE_LIMIT__PER_USER=1000000000 \
      "${envs[@]}" "${wrapper[@]}" "${LAUNCH_BIN:-$BIN}" serve --role gateway --port "$port"
  ) >>"$dir/$name.log" 2>&1 &
  LAUNCHED_PID=$!
  # The first start creates and migrates the database and hashes the admin password.
  wait_until_up "http://127.0.0.1:$port/health/live" "${START_SECONDS:-60}" "$LAUNCHED_PID" ||
    { tail -n 20 "$dir/$name.log" >&2; die "forma serve --role gateway ($name) did not start"; }
}

# The floor proxy to the same upstream, with as many connection threads as forma.
# FLOOR_LAUNCHER: a command the floor runs under (valgrind), which FLOOR_WAIT (10) seconds allow to
# start it.
start_floor() {
  # shellcheck disable=SC2086 # the launcher's words
  env PORT="$FLOOR_PORT" UPSTREAM="127.0.0.1:$UPSTREAM_PORT" \
    ${FORMA_SERVER__CONNECTION_THREADS:+THREADS="$FORMA_SERVER__CONNECTION_THREADS"} ${FLOOR_LAYERS:+LAYERS="$FLOOR_LAYERS"} \
    ${FLOOR_LAUNCHER:-} "$FLOOR_BIN" --bench >>"$dir/floor.log" 2>&1 &
  FLOOR_PID=$!
  wait_until_up "http://127.0.0.1:$FLOOR_PORT/api/v1/orders" "${FLOOR_WAIT:-10}" "$FLOOR_PID" ||
    { cat "$dir/floor.log" >&2; die "the proxy floor did not start"; }
}

# The gateway alone, on the embedded defaults (SQLite in its own directory, no Redis).
start_forma() {
  launch_forma forma "$GATEWAY_PORT"
  FORMA_PID=$LAUNCHED_PID
}

# BASE_BIN as FORMA is (its own database), on BASE_PORT, signed in with BASE_COOKIE.
start_forma_base() {
  LAUNCH_BIN=$BASE_BIN launch_forma forma-base "$BASE_PORT"
  BASE_PID=$LAUNCHED_PID
  BASE_COOKIE=$(sign_in "$BASE_PORT")
  [ -n "$BASE_COOKIE" ] || die "sign-in on the base build set no forma.sid cookie"
  verify_gateway "$BASE_PORT" "$BASE_COOKIE"
}

# Two gateways as replicas: one database (the same SQLite file, so a user signed in on one is
# known to the other), sessions and rate limits in Redis under a key prefix of this run only.
start_forma_pair() {
  REDIS_PREFIX="forma-bench-$$-$RANDOM:"
  local -a shared=(FORMA_REDIS__URL="$BENCH_REDIS_URL" FORMA_REDIS__KEY_PREFIX="$REDIS_PREFIX")
  launch_forma forma-x2 "$GATEWAY_PORT" "${shared[@]}"
  FORMA_PID=$LAUNCHED_PID
  launch_forma forma-x2 "$GATEWAY2_PORT" "${shared[@]}"
  FORMA2_PID=$LAUNCHED_PID
}

# The gateway alone with `/orders` cacheable for an hour: after the first GET, a signed-in GET is a
# cache hit (the cache key is the tenant, roles and permissions, path and query).
start_forma_cached() {
  cat >"$dir/forma-cached.toml" <<'TOML'
[proxy]
routes = [{ prefix = "/orders", service = "order", cache_ttl_secs = 3600 }]
TOML
  launch_forma forma-cached "$GATEWAY_PORT" FORMA_CONFIG="$dir/forma-cached.toml"
  FORMA_PID=$LAUNCHED_PID
}

# Aborts unless the cached gateway answers the upstream's body from its cache: MISS, then HIT.
verify_cached() {
  local url="http://127.0.0.1:$GATEWAY_PORT/api/v1/orders" expected got
  for expected in MISS HIT; do
    curl -sS -o "$dir/orders.json" -D "$dir/orders.headers" -H "Cookie: $COOKIE" "$url" >/dev/null
    got=$(tr -d '\r' <"$dir/orders.headers" | sed -n 's/^[Xx]-[Cc]ache: *//p')
    [ "$got" = "$expected" ] || die "cached GET /api/v1/orders: X-Cache '$got', expected $expected"
    [ "$(cat "$dir/orders.json")" = "$UPSTREAM_BODY" ] || die "cached GET /api/v1/orders answered another body"
  done
}

# Stops the gateway(s) started by start_forma / start_forma_pair / start_forma_cached.
stop_forma() {
  local pid
  for pid in $BASE_PID $FORMA2_PID $FORMA_PID; do stop_pid "$pid" 5; done
  FORMA_PID="" FORMA2_PID="" BASE_PID=""
}

# Signs in as admin@localhost on the gateway at port $1 (GATEWAY_PORT) and prints the session
# cookie ("forma.sid=…").
sign_in() {
  local port=${1:-$GATEWAY_PORT} status
  status=$(curl -sS -o "$dir/login.json" -D "$dir/login.headers" -w '%{http_code}' \
    -H 'content-type: application/json' \
    --data "{\"email\":\"admin@localhost\",\"password\":\"$ADMIN_PASSWORD\"}" \
    "http://127.0.0.1:$port/api/v1/auth/login")
  [ "$status" = 200 ] || die "sign-in answered $status: $(cat "$dir/login.json")"
  tr -d '\r' <"$dir/login.headers" | sed -n 's/^[Ss]et-[Cc]ookie: *\(forma\.sid=[^;]*\).*/\1/p' | tail -n 1
}

# Signs in on the gateway at GATEWAY_PORT and keeps the cookie the load generators send (COOKIE).
sign_in_for_load() {
  COOKIE=$(sign_in "$GATEWAY_PORT")
  [ -n "$COOKIE" ] || die "sign-in set no forma.sid cookie"
}

# Aborts unless the gateway really does what is measured: refuses without a session, and with one
# answers the upstream's body with the rate-limit headers (proof that the limiter ran). $1: the port,
# $2: the session cookie (COOKIE).
verify_gateway() {
  local url="http://127.0.0.1:${1:-$GATEWAY_PORT}/api/v1/orders" cookie=${2:-$COOKIE} status
  status=$(curl -sS -o /dev/null -w '%{http_code}' "$url")
  [ "$status" = 401 ] || die "GET /api/v1/orders without a session answered $status, expected 401"
  status=$(curl -sS -o "$dir/orders.json" -D "$dir/orders.headers" -w '%{http_code}' -H "Cookie: $cookie" "$url")
  [ "$status" = 200 ] || die "signed-in GET /api/v1/orders answered $status: $(cat "$dir/orders.json")"
  [ "$(cat "$dir/orders.json")" = "$UPSTREAM_BODY" ] ||
    die "signed-in GET /api/v1/orders did not answer the upstream's body: $(cat "$dir/orders.json")"
  grep -qi '^ratelimit-limit:' "$dir/orders.headers" ||
    die "signed-in GET /api/v1/orders carries no RateLimit-Limit header: is the limiter off?"
}

# --- measuring ----------------------------------------------------------------------------------

declare -A URL=(
  [DIRECT]="http://127.0.0.1:$UPSTREAM_PORT/api/v1/orders"
  [NGINX]="http://127.0.0.1:$NGINX_PROXY_PORT/api/v1/orders"
  [NGINX_AUTO]="http://127.0.0.1:$NGINX_AUTO_PORT/api/v1/orders"
  [FLOOR]="http://127.0.0.1:$FLOOR_PORT/api/v1/orders"
  [FORMA]="http://127.0.0.1:$GATEWAY_PORT/api/v1/orders"
  [FORMA_BASE]="http://127.0.0.1:$BASE_PORT/api/v1/orders"
  [FORMA_X2]="http://127.0.0.1:$GATEWAY_PORT/api/v1/orders http://127.0.0.1:$GATEWAY2_PORT/api/v1/orders"
)
URL[FORMA_CACHED]=${URL[FORMA]}
TARGETS=(DIRECT NGINX)
# Figures keyed "LOAD/TARGET" (LOAD: peak or half).
declare -A RPS P50 P99 NON2XX SOCKET_ERRORS CPU_PROXY USER_PROXY CPU_UPSTREAM CS_PROXY CS_UPSTREAM

CLK_TCK=$(getconf CLK_TCK)
# CPU time of the given processes, all their threads included, in clock ticks: "USER SYSTEM".
cpu_ticks() {
  local pid user=0 system=0 u s
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$pid/stat")
    user=$((user + u)) system=$((system + s))
  done
  echo "$user $system"
}
# per_request FORMAT COUNT REQUESTS [HZ]: COUNT per request, printed with FORMAT; with HZ, COUNT is
# in clock ticks of HZ per second and the answer in µs.
per_request() {
  awk -v f="$1" -v n="$2" -v r="$3" -v hz="${4:-}" 'BEGIN { printf f, (hz == "" ? n : n * 1e6 / hz) / r }'
}
# The given pids and their children: an nginx's master and workers.
with_children() {
  local pid
  for pid in "$@"; do echo "$pid" $(ps -o pid= --ppid "$pid"); done
}
# The processes of TARGET's proxy, whose CPU time and context switches its row shows: forma's (both
# gateways for FORMA_X2), the floor's, the base build's, or the nginx proxy's; none for DIRECT.
proxy_pids() {
  case $1 in
    FORMA | FORMA_X2 | FORMA_CACHED) echo "$FORMA_PID $FORMA2_PID" ;;
    FORMA_BASE) echo "$BASE_PID" ;;
    FLOOR) echo "$FLOOR_PID" ;;
    NGINX) with_children "$NGINX_PID" ;;
    NGINX_AUTO) with_children "$NGINX_AUTO_PID" ;;
  esac
}
# Context switches (voluntary and not) of every thread of the given pids: a thread that blocks in
# epoll or is preempted by another runnable thread on the same core pays a switch each time.
ctx_switches() {
  local pid total=0
  for pid in "$@"; do
    [ -d "/proc/$pid/task" ] || continue
    total=$((total + $(cat /proc/"$pid"/task/*/status 2>/dev/null |
      awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }')))
  done
  echo "$total"
}

# Reads wrk's report: "requests p50_ms p99_ms non2xx socket_errors rps".
parse_wrk() {
  awk '
    function ms(v,   n) {
      n = v + 0
      if (v ~ /us$/) return n / 1000
      if (v ~ /ms$/) return n
      if (v ~ /m$/) return n * 60000
      if (v ~ /s$/) return n * 1000
      return n
    }
    $1 ~ /^50(\.0+)?%$/ && p50 == "" { p50 = ms($2) }
    $1 ~ /^99(\.0+)?%$/ && p99 == "" { p99 = ms($2) }
    $2 == "requests" && $3 == "in" { requests = $1 }
    /^ *Non-2xx or 3xx responses:/ { non2xx = $NF }
    /^ *Socket errors:/ { gsub(",", ""); errors = $4 + $6 + $8 + $10 }
    /^Requests\/sec:/ { rps = $2 }
    END { printf "%d %.3f %.3f %d %d %.0f\n", requests, p50, p99, non2xx, errors, rps }
  ' "$1"
}

# Reads oha's JSON report into the same line as parse_wrk.
parse_oha() {
  python3 - "$1" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
codes = r.get("statusCodeDistribution", {})
ok = sum(n for c, n in codes.items() if c.startswith("2"))
requests = sum(codes.values())
# Requests still in flight when the run's time is up are cut off by oha itself: not errors.
errors = sum(n for e, n in r.get("errorDistribution", {}).items() if "deadline" not in e)
lat = r["metrics"]["latency_ms"]
print("%d %.3f %.3f %d %d %.0f" % (requests, lat["p50"], lat["p99"], requests - ok, errors,
                                   r["summary"]["requestsPerSec"]))
EOF
}

# Sums the reports of the load generators that ran side by side against the replicas: requests,
# non-2xx, errors and req/s add up; p50 is the mean and p99 the worst of theirs (an upper bound).
merge_reports() {
  awk '{ req += $1; p50 += $2; if ($3 > p99) p99 = $3; bad += $4; err += $5; rps += $6; n++ }
    END { printf "%d %.3f %.3f %d %d %.0f\n", req, p50 / n, p99, bad, err, rps }'
}

# load_generator OUT CONNECTIONS SECONDS_SPEC RATE URL: one run of wrk (RATE empty: closed loop, as
# fast as the connections go) or oha (RATE: that many requests per second in all, open loop, each
# latency counted from when its request was due), printing the parse_wrk line.
load_generator() {
  local out=$1 connections=$2 duration=$3 rate=$4 url=$5 threads
  local -a cookie=()
  [ -n "${LOAD_COOKIE:-}" ] && cookie=(-H "Cookie: $LOAD_COOKIE")
  threads=$(( THREADS < connections ? THREADS : connections ))
  if [ -z "$rate" ]; then
    wrk -t "$threads" -c "$connections" -d "$duration" --latency "${cookie[@]}" "$url" >"$out"
    parse_wrk "$out"
  else
    "$OHA_BIN" -z "$duration" -c "$connections" -q "$rate" --latency-correction --no-tui \
      --output-format json "${cookie[@]}" "$url" >"$out" 2>"$out.err"
    parse_oha "$out"
  fi
}

# measure LOAD TARGET CONNECTIONS [RATE]: warms TARGET up, then measures it once; with RATE, at that
# fixed request rate (oha), else as fast as CONNECTIONS closed-loop connections go (wrk). A target
# with two URLs (the replicas) gets half the connections and half the rate on each, side by side.
measure() {
  local load=$1 target=$2 connections=$3 rate=${4:-}
  local -a urls
  read -r -a urls <<<"${URL[$target]}"
  local n=${#urls[@]} share_c share_r
  share_c=$((connections / n)); share_r=${rate:+$((rate / n))}
  LOAD_COOKIE=""
  [[ $target == FORMA* ]] && LOAD_COOKIE=$COOKIE
  [ "$target" = FORMA_BASE ] && LOAD_COOKIE=$BASE_COOKIE
  local -a cookie=()
  [ -n "$LOAD_COOKIE" ] && cookie=(-H "Cookie: $LOAD_COOKIE")
  progress "$load load, $target: ${WARMUP} warm-up, $DURATION measured, $connections connections${rate:+, $rate req/s}"
  # Waits for these load generators only: nginx and forma are children of this shell too.
  local i pids=()
  for i in "${!urls[@]}"; do
    wrk -t 1 -c "$share_c" -d "$WARMUP" "${cookie[@]}" "${urls[$i]}" >/dev/null &
    pids+=($!)
  done
  wait "${pids[@]}"
  local proxy upstream proxy_user proxy_system upstream_user upstream_system
  proxy=$(proxy_pids "$target"); upstream=$(with_children "$UPSTREAM_PID")
  local proxy_cs_before upstream_cs_before proxy_cs_after upstream_cs_after u s
  read -r proxy_user proxy_system < <(cpu_ticks $proxy)
  read -r upstream_user upstream_system < <(cpu_ticks $upstream)
  proxy_cs_before=$(ctx_switches $proxy); upstream_cs_before=$(ctx_switches $upstream)
  pids=()
  for i in "${!urls[@]}"; do
    load_generator "$dir/load-$load-$target-$i.txt" "$share_c" "$DURATION" "$share_r" "${urls[$i]}" >"$dir/line-$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  read -r u s < <(cpu_ticks $proxy)
  proxy_user=$((u - proxy_user)) proxy_system=$((s - proxy_system))
  read -r u s < <(cpu_ticks $upstream)
  upstream_user=$((u - upstream_user)) upstream_system=$((s - upstream_system))
  proxy_cs_after=$(ctx_switches $proxy); upstream_cs_after=$(ctx_switches $upstream)

  local key="$load/$target" requests
  read -r requests "P50[$key]" "P99[$key]" "NON2XX[$key]" "SOCKET_ERRORS[$key]" "RPS[$key]" < <(cat "$dir"/line-* | merge_reports)
  rm -f "$dir"/line-*
  [ "$requests" -gt 0 ] || { cat "$dir/load-$load-$target-"* >&2; die "the load generator made no request to $target"; }
  # CPU µs and context switches per request: where the time goes, the proxy's and the upstream's
  # apart (DIRECT has no proxy).
  CPU_PROXY[$key]=$(per_request "%.1f" $((proxy_user + proxy_system)) "$requests" "$CLK_TCK")
  USER_PROXY[$key]=$(per_request "%.1f" "$proxy_user" "$requests" "$CLK_TCK")
  CPU_UPSTREAM[$key]=$(per_request "%.1f" $((upstream_user + upstream_system)) "$requests" "$CLK_TCK")
  CS_PROXY[$key]=$(per_request "%.2f" $((proxy_cs_after - proxy_cs_before)) "$requests")
  CS_UPSTREAM[$key]=$(per_request "%.2f" $((upstream_cs_after - upstream_cs_before)) "$requests")
  [ -n "$proxy" ] || CPU_PROXY[$key]=- USER_PROXY[$key]=- CS_PROXY[$key]=-
  if [ "${NON2XX[$key]}" -gt 0 ] || [ "${SOCKET_ERRORS[$key]}" -gt 0 ]; then
    progress "WARNING: $target answered ${NON2XX[$key]} non-2xx responses and had ${SOCKET_ERRORS[$key]} socket errors"
  fi
}

# What `measure` records per "LOAD/TARGET", and each one's rounds (ROUND_<figure>), in the order of
# the rounds, space-separated.
FIGURES=(RPS P50 P99 NON2XX SOCKET_ERRORS CPU_PROXY USER_PROXY CPU_UPSTREAM CS_PROXY CS_UPSTREAM)
declare -A ROUND_RPS ROUND_P50 ROUND_P99 ROUND_NON2XX ROUND_SOCKET_ERRORS ROUND_CPU_PROXY ROUND_USER_PROXY \
  ROUND_CPU_UPSTREAM ROUND_CS_PROXY ROUND_CS_UPSTREAM

# measure_rounds LOAD CONNECTIONS [RATE]: every target of TARGETS measured once per round, in turn,
# for ROUNDS rounds; then each figure is the median of the rounds (errors are summed). FORMA and
# FORMA_BASE swap places every other round, so that neither is always the one measured later.
measure_rounds() {
  local load=$1 connections=$2 rate=${3:-} round target key figure i
  local -a order
  for round in $(seq "$ROUNDS"); do
    [ "$ROUNDS" -gt 1 ] && progress "$load load, round $round of $ROUNDS"
    order=("${TARGETS[@]}")
    if [ -n "$BASE_BIN" ] && [ $((round % 2)) = 0 ]; then
      for i in "${!order[@]}"; do
        case ${order[$i]} in
          FORMA) order[$i]=FORMA_BASE ;;
          FORMA_BASE) order[$i]=FORMA ;;
        esac
      done
    fi
    for target in "${order[@]}"; do
      measure "$load" "$target" "$connections" "$rate"
      key="$load/$target"
      for figure in "${FIGURES[@]}"; do
        local -n value=$figure rounds=ROUND_$figure
        rounds[$key]+="${value[$key]} "
        unset -n value rounds
      done
    done
  done
  for target in "${TARGETS[@]}"; do
    key="$load/$target"
    for figure in "${FIGURES[@]}"; do
      local -n value=$figure rounds=ROUND_$figure
      case $figure in
        NON2XX | SOCKET_ERRORS) value[$key]=$(sum ${rounds[$key]}) ;;
        *) value[$key]=$(median ${rounds[$key]}) ;;
      esac
      unset -n value rounds
    done
  done
}

sum() { printf '%s\n' "$@" | awk '{ n += $1 } END { print n + 0 }'; }

# paired RPS|CPU_PROXY|USER_PROXY|P99 KEY_A KEY_B: A/B req/s (RPS) or the proxy's CPU per request
# (CPU_PROXY, or its user part USER_PROXY), or A−B p99 ms (P99), within each round when both were
# measured in the same rounds, else of their medians: "MEDIAN" alone for one round, else
# "MEDIAN (rounds: R1 R2 …)". Pairs measured minutes apart on a shared machine differ by its drift
# too; a pair measured one after the other in the same round does not.
paired() {
  local kind=$1 a=$2 b=$3
  local -n rounds=ROUND_$kind median_of=$kind
  local -a ra rb values=()
  read -r -a ra <<<"${rounds[$a]:-}"
  read -r -a rb <<<"${rounds[$b]:-}"
  if [ "${#ra[@]}" -le 1 ] || [ "${#ra[@]}" != "${#rb[@]}" ]; then
    pair "$kind" "${median_of[$a]}" "${median_of[$b]}"
    return
  fi
  local i
  for i in "${!ra[@]}"; do values+=("$(pair "$kind" "${ra[$i]}" "${rb[$i]}")"); done
  echo "$(median "${values[@]}") (rounds: ${values[*]})"
}
pair() { if [ "$1" = P99 ]; then added "$2" "$3"; else ratio "$2" "$3"; fi; }
# The median of `paired`'s answer, for a verdict.
first() { echo "${1%% *}"; }

# --- report -------------------------------------------------------------------------------------

added() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; }

print_table() {
  local load=$1 target key
  printf '%-12s %10s %9s %9s %8s %11s %9s %11s %10s %10s\n' target 'req/s' 'p50 ms' 'p99 ms' non-2xx 'proxy µs/r' 'of user' \
    'upstr µs/r' 'proxy cs/r' 'upstr cs/r'
  for target in "${TARGETS[@]}"; do
    key="$load/$target"
    [ -n "${RPS[$key]:-}" ] || continue
    printf '%-12s %10s %9s %9s %8s %11s %9s %11s %10s %10s\n' "$target" "${RPS[$key]}" "${P50[$key]}" "${P99[$key]}" \
      "${NON2XX[$key]}" "${CPU_PROXY[$key]}" "${USER_PROXY[$key]}" "${CPU_UPSTREAM[$key]}" "${CS_PROXY[$key]}" \
      "${CS_UPSTREAM[$key]}"
  done
}

report() {
  local half_how=$1
  echo
  echo "== forma gateway benchmark (SPEC §10) =="
  echo "machine:  $(machine_label)"
  echo "forma:    $(binary_label)"
  [ -n "$BASE_BIN" ] && echo "base:     $(base_label)"
  echo "tools:    $(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | head -n 1 | awk '{print $1, $2}')${OHA_BIN:+, $("$OHA_BIN" --version 2>/dev/null | head -n 1)}"
  echo "settings: ROUNDS=$ROUNDS DURATION=$DURATION CONNECTIONS=$CONNECTIONS THREADS=$THREADS WARMUP=$WARMUP" \
    "nginx WORKERS=$WORKERS forma FORMA_SERVER__CONNECTION_THREADS=${FORMA_SERVER__CONNECTION_THREADS:-default}" \
    "TOKIO_WORKER_THREADS=${TOKIO_WORKER_THREADS:-default}" \
    "GET /api/v1/orders; FORMA: session store sql (SQLite), local rate limiter" \
    "${RPS[peak/FORMA_X2]:+; FORMA_X2: 2 gateways, sessions and rate limits in Redis ($BENCH_REDIS_URL)}"
  echo "upstream: one nginx worker in a process of its own, shared by every target; no proxy serves it"
  echo "µs/r: CPU time per request of the row's proxy (forma, the floor, or the nginx proxy), of which user (the rest is the kernel's), and of the upstream"
  echo "cs/r: context switches per request of the proxy's threads and of the upstream's (read from /proc, no tracing)"
  [ "$ROUNDS" -gt 1 ] &&
    echo "rounds: every figure of DIRECT … FORMA is the median of $ROUNDS rounds, each target measured once per round in turn; a ratio or an added p99 is the median of the rounds' own (each round's listed)"
  echo
  echo "-- peak load: $CONNECTIONS connections, closed loop (wrk) --"
  print_table peak
  echo
  echo "-- half load: $half_how --"
  print_table half
  echo
  local p=peak h=half main added_half
  main=$(paired RPS "$p/FORMA" "$p/NGINX")
  echo "forma/nginx  req/s: $main   (SPEC: >= 1.00 -> $(verdict "$(awk -v r="$(first "$main")" 'BEGIN { print r >= 1 }')"))"
  echo "forma/nginx  CPU per request: peak $(paired CPU_PROXY "$p/FORMA" "$p/NGINX"), half $(paired CPU_PROXY "$h/FORMA" "$h/NGINX");" \
    "of it user: peak $(paired USER_PROXY "$p/FORMA" "$p/NGINX")"
  [ -n "${RPS[$p/NGINX_AUTO]:-}" ] &&
    echo "forma/nginx (worker per core) req/s: $(paired RPS "$p/FORMA" "$p/NGINX_AUTO")"
  [ -n "${RPS[$p/FORMA_X2]:-}" ] &&
    echo "forma x2 (Redis)/nginx req/s: $(ratio "${RPS[$p/FORMA_X2]}" "${RPS[$p/NGINX]}"), forma x2/forma: $(ratio "${RPS[$p/FORMA_X2]}" "${RPS[$p/FORMA]}")"
  [ -n "${RPS[$p/FORMA_CACHED]:-}" ] &&
    echo "forma cached GET/nginx req/s: $(ratio "${RPS[$p/FORMA_CACHED]}" "${RPS[$p/NGINX]}"), cached/proxied: $(ratio "${RPS[$p/FORMA_CACHED]}" "${RPS[$p/FORMA]}")"
  if [ -n "${RPS[$p/FORMA_BASE]:-}" ]; then
    echo "forma/base req/s: $(paired RPS "$p/FORMA" "$p/FORMA_BASE")   (BASE_BIN, measured next to forma in every round)"
    echo "forma/base CPU per request: peak $(paired CPU_PROXY "$p/FORMA" "$p/FORMA_BASE"), half $(paired CPU_PROXY "$h/FORMA" "$h/FORMA_BASE")"
    echo "added p99 over direct, half, base: $(paired P99 "$h/FORMA_BASE" "$h/DIRECT") ms"
  fi
  if [ -n "${RPS[$p/FLOOR]:-}" ]; then
    echo "floor/nginx req/s: $(paired RPS "$p/FLOOR" "$p/NGINX")   (forma's transport alone: the best this stack reaches)"
    echo "forma/floor req/s: $(paired RPS "$p/FORMA" "$p/FLOOR")   (what the gateway's own work leaves of it)"
    echo "added p99 over direct, half, floor: $(paired P99 "$h/FLOOR" "$h/DIRECT") ms"
  fi
  echo "forma/direct req/s: $(paired RPS "$p/FORMA" "$p/DIRECT")"
  echo "nginx/direct req/s: $(paired RPS "$p/NGINX" "$p/DIRECT")"
  echo "added p99 over direct, peak: forma $(paired P99 "$p/FORMA" "$p/DIRECT") ms, nginx $(paired P99 "$p/NGINX" "$p/DIRECT") ms"
  added_half=$(paired P99 "$h/FORMA" "$h/DIRECT")
  echo "added p99 over direct, half: forma $added_half ms, nginx $(paired P99 "$h/NGINX" "$h/DIRECT") ms" \
    "  (SPEC: forma < 1 ms -> $(verdict "$(awk -v a="$(first "$added_half")" 'BEGIN { print a < 1 }')")$HALF_NOTE)"
  [ -n "${P99[$h/FORMA_X2]:-}" ] &&
    echo "added p99 over direct, half, forma x2 (Redis): $(added "${P99[$h/FORMA_X2]}" "${P99[$h/DIRECT]}") ms"
  local key bad=0
  for key in "${!NON2XX[@]}"; do
    if [ "${NON2XX[$key]}" -gt 0 ] || [ "${SOCKET_ERRORS[$key]}" -gt 0 ]; then
      echo "!! $key: ${NON2XX[$key]} non-2xx responses, ${SOCKET_ERRORS[$key]} socket errors"
      [[ $key == */FORMA* ]] && bad=1
    fi
  done
  if [ "$bad" = 1 ]; then
    echo "!! INVALID RUN: forma rejected requests (rate limiter, session or upstream); see the forma log above"
    return 1
  fi
}

# --- instructions per request (MODE=callgrind) -------------------------------------------------------

# forma under callgrind, REQUESTS signed-in GETs in sequence on one keep-alive connection (curl), the
# counters zeroed after 200 warm-up requests and dumped after the last: instructions per request and
# where they go. The identity cache is kept for the whole run (session.cache_ms), so a request that
# valgrind slows 50-fold is the same cache hit it is at full speed.
# $1: the name the profile is reported under (forma, base); LAUNCH_BIN as for launch_forma. Sets
# CG_INSTRUCTIONS and CG_ALLOCATIONS (per request).
profile_callgrind() {
  local name=$1 out=${CALLGRIND_OUT:-$dir/callgrind}/$1
  mkdir -p "$out"
  rm -f "$out"/callgrind.out*
  # The first start (database, password hash) and the sign-in at full speed, not under valgrind.
  launch_forma "$name" "$GATEWAY_PORT" FORMA_SESSION__CACHE_MS=3600000
  FORMA_PID=$LAUNCHED_PID
  COOKIE=$(sign_in)
  [ -n "$COOKIE" ] || die "sign-in set no forma.sid cookie"
  stop_forma
  START_SECONDS=300 launch_forma "$name" "$GATEWAY_PORT" FORMA_SESSION__CACHE_MS=3600000 -- \
    valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out" --dump-instr=no
  FORMA_PID=$LAUNCHED_PID
  verify_gateway
  callgrind_requests "$FORMA_PID" "http://127.0.0.1:$GATEWAY_PORT/api/v1/orders" "Cookie: $COOKIE"
  stop_forma
  local label
  if [ -n "${LAUNCH_BIN:-}" ]; then label="$name:     $(base_label)"; else label="forma:    $(binary_label)"; fi
  callgrind_report "$out" "forma gateway under callgrind (instructions, not time): $name" "$label" \
    "$REQUESTS signed-in GET /api/v1/orders, one connection, after 200 not counted"
}

# The floor (forma's transport alone) under callgrind as profile_callgrind runs forma, without a
# sign-in (the floor has none): what the stack costs per request, so that forma's count above it is
# the gateway's own work. Sets CG_INSTRUCTIONS and CG_ALLOCATIONS.
profile_callgrind_floor() {
  local out=${CALLGRIND_OUT:-$dir/callgrind}/floor
  mkdir -p "$out"
  rm -f "$out"/callgrind.out*
  FLOOR_LAUNCHER="valgrind --tool=callgrind --callgrind-out-file=$out/callgrind.out --dump-instr=no" \
    FLOOR_WAIT=300 start_floor
  callgrind_requests "$FLOOR_PID" "http://127.0.0.1:$FLOOR_PORT/api/v1/orders"
  # Slow to stop under valgrind.
  stop_pid "$FLOOR_PID" 60
  FLOOR_PID=""
  callgrind_report "$out" "the proxy floor under callgrind (instructions, not time)" \
    "floor:    $FLOOR_BIN" "$REQUESTS GET /api/v1/orders, one connection, after 200 not counted"
}

# callgrind_requests PID URL [HEADER]: 200 GETs of URL not counted, then the counters of the
# callgrind run PID zeroed, REQUESTS GETs in sequence on one keep-alive connection, and a dump.
callgrind_requests() {
  local pid=$1 url=$2
  local -a header=()
  [ -n "${3:-}" ] && header=(-H "$3")
  requests_config() { local _; for _ in $(seq "$1"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done; }
  requests_config 200 >"$dir/warm.curl"
  requests_config "$REQUESTS" >"$dir/run.curl"
  curl -sS "${header[@]}" -K "$dir/warm.curl" -w '%{http_code}\n' >"$dir/warm.codes"
  callgrind_control -z "$pid" >/dev/null
  curl -sS "${header[@]}" -K "$dir/run.curl" -w '%{http_code}\n' >"$dir/run.codes"
  callgrind_control -d "$pid" >/dev/null
  local ok
  ok=$(grep -c '^200$' "$dir/run.codes" || true)
  [ "$ok" = "$REQUESTS" ] || die "$((REQUESTS - ok)) of $REQUESTS requests were not answered 200"
}

# callgrind_report OUT TITLE LABEL WHAT: the counts per request of the dump callgrind_requests made
# in OUT, and where they go. Sets CG_INSTRUCTIONS and CG_ALLOCATIONS.
callgrind_report() {
  local out=$1 title=$2 label=$3 what=$4
  # The dump made on request is the one with a part number (.1 …): the counts since zeroing.
  local dump=$out/callgrind.out.1
  [ -s "$dump" ] || die "callgrind wrote no dump at $dump"
  local total
  total=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p; s/^totals: *\([0-9]*\).*/\1/p' "$dump" | head -n 1)
  echo
  echo "== $title =="
  echo "$label"
  echo "requests: $what"
  CG_INSTRUCTIONS=$(awk -v t="$total" -v n="$REQUESTS" 'BEGIN { printf "%.0f", t / n }')
  echo "instructions: $total in all, $CG_INSTRUCTIONS per request"
  local allocations reallocations
  read -r allocations reallocations < <(allocator_calls "$dump")
  # None at all means the allocator's entry points have other names (another global allocator),
  # not a request that allocates nothing.
  [ "$allocations" -gt 0 ] || die "no call into mimalloc in the profile: is the binary still built with it (src/main.rs)?"
  CG_ALLOCATIONS=$(awk -v a="$allocations" -v n="$REQUESTS" 'BEGIN { printf "%.1f", a / n }')
  echo "allocations: $CG_ALLOCATIONS per request, reallocations $(awk -v a="$reallocations" -v n="$REQUESTS" 'BEGIN { printf "%.1f", a / n }')"
  echo "profile:  $dump"
  echo
  echo "-- top inclusive (the runtime's frames and recursion cycles left out) --"
  top_functions "$dump" yes 30
  echo
  echo "-- top self --"
  top_functions "$dump" no 30
}

# allocator_calls DUMP: "ALLOCATIONS REALLOCATIONS", the calls into mimalloc's entry points (forma's
# global allocator) in a callgrind dump, counted from its call records. Each allocation costs its
# free too, and a count, unlike a time, is the same in every run of the same binary. The dump
# names a function in full once and by "(id)" after that.
allocator_calls() {
  awk '
    /^c?fn=\(/ {
      match($0, /\([0-9]+\)/); id = substr($0, RSTART, RLENGTH)
      rest = substr($0, RSTART + RLENGTH + 1)
      if (rest != "") name[id] = rest
      if ($0 ~ /^cfn=/) callee = name[id]
      next
    }
    /^calls=/ {
      split(substr($0, 7), f, " ")
      if (callee == "mi_malloc_aligned" || callee == "mi_zalloc_aligned") allocations += f[1]
      else if (callee == "mi_realloc_aligned") reallocations += f[1]
      callee = ""
    }
    END { printf "%d %d\n", allocations, reallocations }
  ' "$1"
}

# top_functions DUMP INCLUSIVE(yes|no) N: the N costliest functions with their share, names cut
# to 150 characters. Entries at 100 % or more are the thread's own frames and cycle artefacts.
# The list is cut by awk, which reads to the end: `head` would leave the pipeline to die of
# SIGPIPE, and the script with it (pipefail), before the second list.
top_functions() {
  callgrind_annotate --threshold=100 --auto=no --inclusive="$2" "$1" 2>/dev/null |
    sed -n '/file:function/,$p' | sed '1,2d' |
    awk '/\(([ 0-9.]+)%\)/ { match($0, /\(([ 0-9.]+)%\)/); pct = substr($0, RSTART + 1, RLENGTH - 3) + 0; if (pct < 100) print }' |
    sed 's/ \[[^]]*\]$//; s/???://' | cut -c1-150 | awk -v n="$3" 'NR <= n'
}

# --- main ---------------------------------------------------------------------------------------

ensure_tools
ensure_binary
ensure_floor
if [ -n "$BASE_BIN" ]; then
  [ -x "$BASE_BIN" ] || die "BASE_BIN=$BASE_BIN is not an executable"
  BASE_BIN=$(realpath "$BASE_BIN")
fi
for port in "$UPSTREAM_PORT" "$NGINX_PROXY_PORT" "$GATEWAY_PORT" "$NGINX_AUTO_PORT" "$GATEWAY2_PORT" "$FLOOR_PORT" "$BASE_PORT"; do
  port_in_use "$port" && die "port $port is in use; set UPSTREAM_PORT / NGINX_PROXY_PORT / GATEWAY_PORT / NGINX_AUTO_PORT / GATEWAY2_PORT / FLOOR_PORT / BASE_PORT"
done
progress "starting the upstream (nginx, :$UPSTREAM_PORT)"
start_upstream
if [ "$MODE" = callgrind ]; then
  profile_callgrind forma
  forma_instructions=$CG_INSTRUCTIONS forma_allocations=$CG_ALLOCATIONS
  summary=()
  if [ -n "$BASE_BIN" ]; then
    LAUNCH_BIN=$BASE_BIN profile_callgrind base
    summary+=("forma/base instructions per request: $forma_instructions / $CG_INSTRUCTIONS = $(
      awk -v a="$forma_instructions" -v b="$CG_INSTRUCTIONS" 'BEGIN { printf "%.3f (%+d)", a / b, a - b }'
    ); allocations per request: $forma_allocations / $CG_ALLOCATIONS")
  fi
  if [ "$FLOOR" = 1 ]; then
    profile_callgrind_floor
    summary+=("forma/floor instructions per request: $forma_instructions / $CG_INSTRUCTIONS = $(
      awk -v a="$forma_instructions" -v b="$CG_INSTRUCTIONS" 'BEGIN { printf "%.2f (%+d: the gateway'"'"'s own work)", a / b, a - b }'
    ); allocations per request: $forma_allocations / $CG_ALLOCATIONS")
  fi
  if [ "${#summary[@]}" -gt 0 ]; then
    echo
    printf '%s\n' "${summary[@]}"
  fi
  exit 0
fi
progress "starting nginx (proxy :$NGINX_PROXY_PORT)"
start_nginx
if [ "$WORKERS" != auto ]; then
  start_nginx_auto
  TARGETS+=(NGINX_AUTO)
fi
if [ "$DISTRIBUTED" = auto ]; then
  DISTRIBUTED=0
  command -v redis-cli >/dev/null && [ "$(redis-cli -u "$BENCH_REDIS_URL" ping 2>/dev/null)" = PONG ] && DISTRIBUTED=1
fi
OHA_BIN=$(find_oha)

if [ "$FLOOR" = 1 ]; then
  progress "starting the proxy floor (:$FLOOR_PORT)"
  start_floor
  TARGETS+=(FLOOR)
fi
progress "starting forma (gateway :$GATEWAY_PORT)"
start_forma
sign_in_for_load
verify_gateway
TARGETS+=(FORMA)
if [ -n "$BASE_BIN" ]; then
  progress "starting the base build (gateway :$BASE_PORT)"
  start_forma_base
  TARGETS+=(FORMA_BASE)
fi
measure_rounds peak "$CONNECTIONS"

# "Added p99 at half of peak load" needs a fixed request rate: oha holds one (open loop, latency
# counted from when each request was due). Without oha the fallback halves the connections, which
# lowers queueing but not necessarily the rate: the report shows the rate each target ran at.
# HALF_RATE fixes it instead, so two builds can be compared at one rate.
half_rate=${HALF_RATE:-$(awk -v r="${RPS[peak/FORMA]}" 'BEGIN { printf "%d", r / 2 }')}
if [ -n "$OHA_BIN" ]; then
  measure_rounds half "$CONNECTIONS" "$half_rate"
  half_how="oha at a fixed $half_rate req/s ($([ -n "${HALF_RATE:-}" ] && echo HALF_RATE || echo "half of forma's peak")), $CONNECTIONS connections, latency corrected"
  HALF_NOTE=""
else
  measure_rounds half "$HALF_CONNECTIONS"
  HALF_NOTE=", approximate"
  half_how="APPROXIMATION (no oha): $HALF_CONNECTIONS connections, closed loop, so each target runs"
  half_how+=" as fast as those allow: forma at $(ratio "${RPS[half/FORMA]}" "${RPS[peak/FORMA]}") of its peak rate"
fi

stop_forma
progress "starting forma with /orders cacheable (gateway :$GATEWAY_PORT)"
start_forma_cached
sign_in_for_load
verify_cached
TARGETS+=(FORMA_CACHED)
measure peak FORMA_CACHED "$CONNECTIONS"

if [ "$DISTRIBUTED" = 1 ]; then
  stop_forma
  progress "starting two forma gateways (:$GATEWAY_PORT, :$GATEWAY2_PORT) on Redis $BENCH_REDIS_URL"
  start_forma_pair
  sign_in_for_load
  verify_gateway "$GATEWAY_PORT"
  verify_gateway "$GATEWAY2_PORT"
  TARGETS+=(FORMA_X2)
  measure peak FORMA_X2 "$CONNECTIONS"
  if [ -n "$OHA_BIN" ]; then measure half FORMA_X2 "$CONNECTIONS" "$half_rate"; else measure half FORMA_X2 "$HALF_CONNECTIONS"; fi
fi

for log in "$dir"/forma*.log; do
  [ -s "$log" ] || continue
  echo >&2; echo "$(basename "$log" .log)'s log (warnings and errors):" >&2; tail -n 20 "$log" >&2
done
report "$half_how"
