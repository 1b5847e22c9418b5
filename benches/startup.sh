#!/usr/bin/env bash
# SPEC §10: `forma serve --role all` on an existing database is ready in < 200 ms and idles in
# < 30 MB, also once people have signed in (each argon2id hash needs 19 MiB of working memory, and
# memory an allocator keeps after a burst stays resident while the process idles). Over RUNS runs
# (default 10) of the release binary on an embedded SQLite database, each run measures: time from
# exec to the first 200 from /health/ready; VmRSS after 3 s idle; VmRSS 3 s after 3 sign-ins one
# after another; VmRSS 3 s after 20 more at once.
#   cargo build --release && benches/startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=benches/common.sh
source benches/common.sh
BIN=${BIN:-target/release/forma}
RUNS=${RUNS:-10}
# Below the kernel's ephemeral range, which outgoing connections may hold (see gateway.sh).
PORT=${PORT:-29123}
IDLE_SECS=3
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
BIN=$(realpath "$BIN")
dir=$(mktemp -d); pid=
# A failed sign-in ends the script: the server must not outlive it.
trap '[ -z "$pid" ] || kill -TERM "$pid" 2>/dev/null; rm -rf "$dir"' EXIT
cd "$dir"
# The first start creates the admin with this password; the sign-ins use it.
export FORMA_ADMIN_PASSWORD=startup-bench-password
# The burst is twenty people behind a proxy on loopback: each from its own address (X-Forwarded-For),
# as concurrent attempts for one address and account beyond the lockout's limit are answered 429.
export FORMA_RATE_LIMIT__TRUSTED_PROXIES=127.0.0.1
login_body="{\"email\":\"admin@localhost\",\"password\":\"$FORMA_ADMIN_PASSWORD\"}"

start() { "$BIN" serve --role all --port "$PORT" >/dev/null 2>"$dir/log" & echo $!; }
ready() { curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health/ready" 2>/dev/null; }
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }
# Signs in as the admin from client address $1.
sign_in() {
  curl -fsS -o /dev/null -H 'content-type: application/json' -H "x-forwarded-for: $1" \
    --data "$login_body" "http://127.0.0.1:$PORT/api/v1/auth/login"
}
# A burst of N sign-ins at once; fails unless every one of them succeeded.
sign_in_at_once() {
  local pids=() pid failed=0
  for i in $(seq "$1"); do sign_in "192.0.2.$i" & pids+=($!); done
  for pid in "${pids[@]}"; do wait "$pid" || failed=$((failed + 1)); done
  [ "$failed" -eq 0 ] || { echo "$failed of $1 concurrent sign-ins failed" >&2; return 1; }
}
rss_mb() { awk '/VmRSS/ {printf "%.1f\n", $2 / 1024}' "/proc/$1/status"; }

# First start creates and migrates the database and the admin; it is not measured.
pid=$(start); until ready; do sleep 0.01; done; stop "$pid"

times=(); rss=(); rss_seq=(); rss_burst=()
for _ in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  pid=$(start)
  until ready; do sleep 0.002; done
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000000 )))
  sleep "$IDLE_SECS"
  rss+=($(rss_mb "$pid"))
  for _ in 1 2 3; do sign_in 192.0.2.1; done
  sleep "$IDLE_SECS"
  rss_seq+=($(rss_mb "$pid"))
  sign_in_at_once 20
  sleep "$IDLE_SECS"
  rss_burst+=($(rss_mb "$pid"))
  stop "$pid"
done
echo "start to ready (ms):                 median $(median "${times[@]}"), all: ${times[*]}   (target < 200)"
echo "idle RSS (MB), fresh:                median $(median "${rss[@]}"), all: ${rss[*]}   (target < 30)"
echo "idle RSS (MB), after 3 sign-ins:     median $(median "${rss_seq[@]}"), all: ${rss_seq[*]}   (target < 30)"
echo "idle RSS (MB), after 20 more at once: median $(median "${rss_burst[@]}"), all: ${rss_burst[*]}   (target < 30)"
