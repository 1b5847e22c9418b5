#!/usr/bin/env bash
# SPEC §10: "Ingestion: Shopify webhooks/s sustained, each producing an order, print jobs and
# events, on both SQLite and PostgreSQL, nothing lost: at least half of the same rows written by a
# plain SQL loop (one transaction per order) on the same database in the same run."
#
# In one run on this machine, per database:
#   FLOOR  the rows one order makes (the delivery's record, the order, two lines, three print jobs,
#          the order.created event, a log entry) written by a plain loop, one transaction per order
#   FORMA  `forma serve --role all` receiving N signed `orders/create` webhooks, CONCURRENCY at a
#          time, timed from the first webhook until every order's print jobs exist (planned by the
#          print side from order.created on the bus); then the final counts: nothing lost or doubled
# and prints orders/s of both, the ratio and PASS/FAIL (FORMA ≥ 0.5 × FLOOR).
#
#   benches/ingest.sh
#   N=10000 CONCURRENCY=32 BACKENDS=sqlite benches/ingest.sh
#
# Settings (environment): N (4000), CONCURRENCY (16), BACKENDS (sqlite,postgres), POSTGRES_URL
# (postgres://postgres@127.0.0.1:5432/postgres; a database of the run's own is created and
# dropped), REDIS_URL (redis://127.0.0.1:6379; the PostgreSQL run's bus, under a key prefix of its
# own), TIMEOUT (300 s per run). PostgreSQL and Redis must be running for the PostgreSQL run.
# Everything talks to 127.0.0.1; the SQLite files live in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

export N=${N:-4000}
export CONCURRENCY=${CONCURRENCY:-16}
export BACKENDS=${BACKENDS:-sqlite,postgres}
export TIMEOUT=${TIMEOUT:-300}

echo "# ingest: N=$N CONCURRENCY=$CONCURRENCY BACKENDS=$BACKENDS on $(nproc) cores, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
out=$(mktemp); trap 'rm -f "$out"' EXIT
cargo bench --quiet --bench ingest 2>&2 | tee "$out" | grep -v '^RESULT' || true

printf '\n%-10s %-6s %8s %10s %10s\n' backend side orders seconds orders/s
status=0
for backend in ${BACKENDS//,/ }; do
  floor=$(grep "^RESULT backend=$backend side=floor" "$out" || true)
  forma=$(grep "^RESULT backend=$backend side=forma" "$out" || true)
  [ -n "$floor" ] && [ -n "$forma" ] || { echo "$backend: no result"; status=1; continue; }
  field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }
  for line in "$floor" "$forma"; do
    printf '%-10s %-6s %8s %10s %10s\n' "$backend" "$(field "$line" side)" "$(field "$line" orders)" \
      "$(field "$line" seconds)" "$(field "$line" orders_per_s)"
  done
  ratio=$(awk -v a="$(field "$forma" orders_per_s)" -v b="$(field "$floor" orders_per_s)" 'BEGIN { printf "%.2f", a / b }')
  lost="jobs $(field "$forma" jobs)/$(field "$forma" expected_jobs), order.created $(field "$forma" events)/$N"
  if awk -v r="$ratio" 'BEGIN { exit !(r >= 0.5) }' &&
     [ "$(field "$forma" jobs)" = "$(field "$forma" expected_jobs)" ] &&
     [ "$(field "$forma" events)" = "$N" ] && [ "$(field "$forma" orders)" = "$N" ]; then
    echo "$backend: forma/floor = $ratio ($lost): PASS"
  else
    echo "$backend: forma/floor = $ratio ($lost): FAIL (goal ≥ 0.50, nothing lost)"
    status=1
  fi
done
exit $status
