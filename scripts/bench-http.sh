#!/usr/bin/env bash
# HTTP throughput and latency of `sluice-limiter`, as ratios to a bare axum
# server measured in the same run.
#
# Builds both in release, starts them on free loopback ports, and drives
# each with wrk (same threads, connections, duration and POST bodies, from
# scripts/wrk-check.lua): a warm-up each, then rounds that alternate
# baseline and limiter so that drift on a shared machine shows. The limiter
# serves limiter/benches/policy.yaml on the memory store: three limits that
# all apply to every check, with quotas so large that every check passes.
#
# Prints, per run, requests/s, p50 and p99 latency (as wrk measures them)
# and the server's CPU time per request (from /proc, the figure least moved
# by other load on the machine); then each round's limiter/baseline ratios
# and their median. Servers are stopped on exit, however the script ends.
#
# Settings (environment): BENCH_SECONDS (10), BENCH_WARMUP_SECONDS (3),
# BENCH_ROUNDS (3), BENCH_THREADS (1), BENCH_CONNECTIONS (32),
# BENCH_USERS (10000 per wrk thread). Needs wrk (Debian package `wrk`).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${BENCH_SECONDS:-10}"
warmup="${BENCH_WARMUP_SECONDS:-3}"
rounds="${BENCH_ROUNDS:-3}"
threads="${BENCH_THREADS:-1}"
connections="${BENCH_CONNECTIONS:-32}"
export BENCH_USERS="${BENCH_USERS:-10000}"

if ! command -v wrk >/dev/null; then
  echo "wrk is not installed; on Debian: apt-get install -y wrk" >&2
  exit 1
fi

cd "$root"
cargo build --release -p sluice-limiter --bin sluice-limiter --example bare_axum
release="${CARGO_TARGET_DIR:-$root/target}/release"

work="$(mktemp -d)"
pids=()
stop_servers() {
  for pid in "${pids[@]}"; do
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap stop_servers EXIT
trap 'exit 130' INT TERM

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# Each server by name: its process and its address.
declare -A pid address
NO_COLOR=1 "$release/sluice-limiter" --listen 127.0.0.1:0 \
  --policy limiter/benches/policy.yaml 2>"$work/limiter.log" &
pids+=($!)
pid[limiter]=$!
"$release/examples/bare_axum" 127.0.0.1:0 >"$work/baseline.log" &
pids+=($!)
pid[baseline]=$!
for server in baseline limiter; do
  address[$server]="$(address_in "$work/$server.log")"
done

body='{"user":"probe","endpoint":"GET /search"}'
for server in baseline limiter; do
  if ! curl -sf --max-time 2 -d "$body" "http://${address[$server]}/v1/check" >/dev/null; then
    echo "the $server server does not admit a check" >&2
    exit 1
  fi
done

# CPU time the process $1 has used, in clock ticks (user + system).
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# Runs wrk for $2 seconds against server $1; prints its RESULT line with
# the server's CPU ticks during the run appended.
drive() {
  local before after line
  before="$(cpu_ticks "${pid[$1]}")"
  line="$(timeout $(($2 + 30)) wrk -t "$threads" -c "$connections" -d "${2}s" --timeout 2s \
    -s scripts/wrk-check.lua "http://${address[$1]}/v1/check" | grep '^RESULT')"
  after="$(cpu_ticks "${pid[$1]}")"
  echo "$line cpu_ticks=$((after - before))"
}

# Prints "req/s p50_ms p99_ms cpu_us_per_request non2xx errors" from a
# RESULT line.
figures() {
  local field value
  local -A f
  for field in $1; do
    value="${field#*=}"
    f[${field%%=*}]="$value"
  done
  awk -v n="${f[requests]}" -v d="${f[duration_us]}" -v p50="${f[p50_us]}" \
    -v p99="${f[p99_us]}" -v cpu="${f[cpu_ticks]}" -v hz="$(getconf CLK_TCK)" \
    -v e="${f[errors]}" -v s="${f[non2xx]}" \
    'BEGIN {
      printf "%.0f %.3f %.3f %.2f %d %d\n",
        n * 1e6 / d, p50 / 1e3, p99 / 1e3, cpu * 1e6 / hz / n, s, e
    }'
}

echo "machine: $(nproc) cores, $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "wrk: $threads threads, $connections connections, ${seconds}s per run," \
  "${warmup}s warm-up, $BENCH_USERS users per thread"
echo "baseline: bare axum on ${address[baseline]};" \
  "limiter: sluice-limiter on ${address[limiter]}"

drive baseline "$warmup" >/dev/null
drive limiter "$warmup" >/dev/null

printf '\n%-6s %-9s %9s %8s %8s %11s %8s %7s\n' \
  round server 'req/s' 'p50 ms' 'p99 ms' 'cpu us/req' non-2xx errors
results="$work/results"
for round in $(seq 1 "$rounds"); do
  for server in baseline limiter; do
    read -r rps p50 p99 cpu non2xx errors <<<"$(figures "$(drive "$server" "$seconds")")"
    printf '%-6s %-9s %9s %8s %8s %11s %8s %7s\n' \
      "$round" "$server" "$rps" "$p50" "$p99" "$cpu" "$non2xx" "$errors"
    echo "$round $server $rps $p99 $cpu" >>"$results"
  done
done

# Per round, limiter over the baseline just before it; then the median of
# those ratios, which one disturbed round does not move.
echo
awk '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++)
      for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  $2 == "baseline" { rps = $3; p99 = $4; cpu = $5 }
  $2 == "limiter" {
    n++
    throughput[n] = $3 / rps; latency[n] = $4 / p99; work[n] = $5 / cpu
    printf "round %d: throughput ratio %.2f, p99 ratio %.2f, cpu/request ratio %.2f\n",
      n, throughput[n], latency[n], work[n]
  }
  END {
    printf "median: throughput ratio %.2f (target >= 0.70),", median(throughput, n)
    printf " p99 ratio %.2f (target <= 1.50),", median(latency, n)
    printf " cpu/request ratio %.2f\n", median(work, n)
  }' "$results"
