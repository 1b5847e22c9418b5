# Shell helpers the bench scripts share; sourced after they define `die`, `progress` and `dir`
# (their temporary directory).

# bench_executable NAME [CARGO ARGS…]: builds `cargo bench --bench NAME` without running it
# (minutes on 2 cores when stale), with CARGO ARGS (a profile, features) when given, and prints the
# path of its executable; dies with the build's log when it fails.
bench_executable() {
  local name=$1 log="$dir/build-$1.log" executable
  shift
  executable=$(cargo bench --bench "$name" "$@" --no-run --message-format=json 2>"$log" |
    sed -n "s/.*\"executable\":\"\([^\"]*$name[^\"]*\)\".*/\1/p" | tail -n 1) || true
  [ -n "$executable" ] && [ -x "$executable" ] ||
    { cat "$log" >&2; die "cargo bench --bench $name --no-run failed"; }
  echo "$executable"
}

# ensure_binary: sets BIN to the absolute path of the forma executable a run measures: BIN as
# given, else the checkout's release build (under CARGO_TARGET_DIR when set), built first when it
# is missing or older than anything it is built from.
ensure_binary() {
  if [ -n "${BIN:-}" ]; then
    [ -x "$BIN" ] || die "BIN=$BIN is not an executable"
    BIN_GIVEN=1
  else
    BIN=${CARGO_TARGET_DIR:-target}/release/forma
    BIN_GIVEN=0
    if [ ! -x "$BIN" ] ||
      [ -n "$(find src migrations build.rs Cargo.toml Cargo.lock -type f -newer "$BIN" -print -quit 2>/dev/null)" ]; then
      progress "building the release binary (cargo build --release; minutes on 2 cores)"
      cargo build --release --quiet || die "cargo build --release failed"
    fi
  fi
  BIN=$(realpath "$BIN")
}

# checkout_label: the checkout's commit, marked when the work tree has changes.
checkout_label() {
  echo "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo ' (work tree modified)')"
}

# binary_label: names what ensure_binary chose for the report. The checkout's own build is named by
# the commit; a BIN given from elsewhere may be of any commit, so it is named by its path and the
# start of its SHA-256, which tells the two binaries of an A/B run apart.
binary_label() {
  if [ "${BIN_GIVEN:-0}" = 1 ]; then
    echo "$(given_label "$BIN"); checkout at $(checkout_label)"
  else
    echo "$(checkout_label), $BIN"
  fi
}

# base_label: names BASE_BIN (gateway.sh's A/B reference) as a given BIN is named.
base_label() { given_label "$BASE_BIN"; }

# given_label PATH: a binary from elsewhere, by its path and the start of its SHA-256.
given_label() { echo "$1 (sha256 $(sha256sum "$1" | cut -c1-12))"; }

# Waits up to $2 seconds for $1 to answer 200; $3 is the pid that must stay alive meanwhile.
wait_until_up() {
  local url=$1 seconds=$2 pid=$3
  for _ in $(seq $((seconds * 20))); do
    curl -fsS -o /dev/null "$url" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# machine_label: the CPUs and kernel a report was measured on.
machine_label() {
  echo "$(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), kernel $(uname -r)"
}

# median VALUE…: the middle value (the lower of the two middle ones for an even count), as written.
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $0 } END { print v[int((NR + 1) / 2)] }'; }

# ratio A B: A/B to two decimals (0 when B is 0); verdict OK: PASS when OK is 1, else FAIL.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }'; }
verdict() { awk -v ok="$1" 'BEGIN { print (ok ? "PASS" : "FAIL") }'; }

# stop_pid PID [SECONDS]: stops a process the calling script started (and only that), killing it after
# SECONDS (10) of SIGTERM.
stop_pid() {
  local pid=$1 seconds=${2:-10}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq $((seconds * 10))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
