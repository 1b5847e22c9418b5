# Shell helpers the bench scripts share; sourced after they define `die` and `dir` (their
# temporary directory).

# bench_executable NAME: builds `cargo bench --bench NAME` without running it (minutes on 2 cores
# when stale) and prints the path of its executable; dies with the build's log when it fails.
bench_executable() {
  local name=$1 log="$dir/build-$1.log" executable
  executable=$(cargo bench --bench "$name" --no-run --message-format=json 2>"$log" |
    sed -n "s/.*\"executable\":\"\([^\"]*$name[^\"]*\)\".*/\1/p" | tail -n 1) || true
  [ -n "$executable" ] && [ -x "$executable" ] ||
    { cat "$log" >&2; die "cargo bench --bench $name --no-run failed"; }
  echo "$executable"
}
