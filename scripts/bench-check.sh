#!/usr/bin/env bash
# The in-process cost of a check, as ratios to baselines measured in the
# same run: runs the criterion bench limiter/benches/check.rs, then reads
# criterion's estimates and prints each benchmark's time per iteration,
# its throughput, and its ratio to the two baselines.
#
# Arguments are passed to the bench (a criterion filter, for example); the
# table then shows the latest figures criterion holds for the others.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
cargo bench -p sluice-limiter --bench check -- "$@"
results="${CARGO_TARGET_DIR:-$root/target}/criterion"

# The time of one iteration of benchmark $1 in ns: criterion's slope
# estimate (the time it prints), or the mean where it fitted no slope.
nanos() {
  local estimates="$results/$1/new/estimates.json" kind value
  for kind in slope mean; do
    value="$(grep -oE "\"$kind\":\\{\"confidence_interval\":\\{[^}]*\\},\"point_estimate\":[0-9.e+-]+" \
      "$estimates" | grep -oE '[0-9.e+-]+$' || true)"
    if [[ -n "$value" ]]; then
      echo "$value"
      return 0
    fi
  done
  echo "no estimate in $estimates" >&2
  return 1
}

# How many checks (or updates) one iteration of benchmark $1 makes.
elements() {
  grep -oE '"Elements":[0-9]+' "$results/$1/new/benchmark.json" | cut -d: -f2
}

keys="$(nanos baseline/three_counter_keys)"
update="$(nanos baseline/mutex_map_update)"
echo
echo "machine: $(nproc) cores, $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
printf '%-40s %10s %12s %10s %10s\n' benchmark 'ns/iter' 'per second' '/ keys' '/ update'
for bench in baseline/three_counter_keys baseline/mutex_map_update check/limiter_three_limits \
  check/limiter_three_limits_2_threads parts/store_three_counters \
  parts/rate_limit_headers router/bare_axum router/limiter_three_limits; do
  [[ -f "$results/$bench/new/estimates.json" ]] || continue
  awk -v name="$bench" -v t="$(nanos "$bench")" -v n="$(elements "$bench")" \
    -v keys="$keys" -v update="$update" \
    'BEGIN { printf "%-40s %10.1f %12.0f %10.2f %10.2f\n", name, t, n * 1e9 / t, t / keys, t / update }'
done

bare="$(nanos router/bare_axum)"
whole="$(nanos router/limiter_three_limits)"
single="$(nanos check/limiter_three_limits)"
pair="$(nanos check/limiter_three_limits_2_threads)"
awk -v bare="$bare" -v whole="$whole" -v single="$single" -v pair="$pair" 'BEGIN {
  printf "\nwhole request through the router: %.2f x the bare axum handler\n", whole / bare
  printf "two threads: %.2f x the checks per second of one\n", 2 * single / pair
}'
