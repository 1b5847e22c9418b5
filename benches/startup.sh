#!/usr/bin/env bash
# SPEC §10: `forma serve --role all` on an existing database is ready in < 200 ms and idles in
# < 30 MB. Measures time from exec to the first 200 from /health/ready, and VmRSS after 3 s idle,
# over RUNS runs (default 10) of the release binary on an embedded SQLite database.
#   cargo build --release && benches/startup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/forma}
RUNS=${RUNS:-10}
PORT=${PORT:-39123}
[ -x "$BIN" ] || { echo "build first: cargo build --release" >&2; exit 1; }
BIN=$(realpath "$BIN")
dir=$(mktemp -d); trap 'rm -rf "$dir"' EXIT
cd "$dir"

start() { "$BIN" serve --role all --port "$PORT" >/dev/null 2>"$dir/log" & echo $!; }
ready() { curl -fsS -o /dev/null "http://127.0.0.1:$PORT/health/ready" 2>/dev/null; }
stop() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }

# First start creates and migrates the database; it is not measured.
pid=$(start); until ready; do sleep 0.01; done; stop "$pid"

times=(); rss=()
for _ in $(seq "$RUNS"); do
  t0=$(date +%s%N)
  pid=$(start)
  until ready; do sleep 0.002; done
  t1=$(date +%s%N)
  times+=($(( (t1 - t0) / 1000000 )))
  sleep 3
  rss+=($(awk '/VmRSS/ {print int($2/1024)}' "/proc/$pid/status"))
  stop "$pid"
done
median() { printf '%s\n' "$@" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo "start to ready (ms): median $(median "${times[@]}"), all: ${times[*]}   (target < 200)"
echo "idle RSS (MB):       median $(median "${rss[@]}"), all: ${rss[*]}   (target < 30)"
