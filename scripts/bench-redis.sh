#!/usr/bin/env bash
# Throughput and latency of `sluice-limiter` on Redis, as a ratio to the
# raw check script run by `redis-benchmark` on the same server in the same
# run; and the memory a counter takes in Redis.
#
# Starts its own redis-server (loopback, a free port, no persistence) and
# loads into it the limiter's own check script, printed by the
# `check_script` example from the constant the limiter compiles in. Then,
# in rounds, so that drift on a shared machine shows:
#
# 1. ceiling: redis-benchmark runs that script with EVALSHA, as a check of
#    the three limits of limiter/benches/policy.yaml does (one shared
#    `global` counter, a `per-user` and a `search-per-user` counter of a
#    random one of BENCH_USERS users), 50 clients, 16 commands pipelined;
# 2. limiter: sluice-limiter --store redis on that policy, driven over HTTP
#    by wrk with scripts/wrk-check.lua, as scripts/bench-http.sh does;
#    every check is one EVALSHA of the same script, so checks/s over
#    scripts/s is like for like;
# 3. half load: the limiter again, at half the checks/s it reached in step
#    2, from the open-loop generator `paced-load` (e2e/src/bin), which
#    sends on a schedule whatever the answers and counts each check's
#    latency from when it fell due. wrk cannot hold a rate, and its
#    latency leaves out the requests a slow answer held back. The same
#    rate goes first to a second limiter on the memory store: the latency
#    of the same HTTP path on the same machine, without Redis.
#
# Each limiter phase is checked for honesty: Redis must have run one
# script per check (none decided by the local fallback), and after a
# SCRIPT FLUSH the limiter must have loaded the very script the ceiling
# ran (same SHA1). Then, with the limiter stopped, BENCH_MEMORY_CHECKS
# checks of three fresh counters each go through the script, and
# `used_memory` before and after gives the bytes per counter.
#
# Settings (environment): BENCH_SECONDS (10), BENCH_WARMUP_SECONDS (3),
# BENCH_ROUNDS (3), BENCH_CONNECTIONS (32, wrk), BENCH_USERS (10000),
# BENCH_MEMORY_CHECKS (100000); BENCH_KEEP=1 keeps the working directory
# (logs, the script text). Needs redis-server, redis-cli, redis-benchmark
# (Debian package `redis`), wrk and curl. docs/benchmarks.md, section 4,
# reads the output.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
seconds="${BENCH_SECONDS:-10}"
warmup="${BENCH_WARMUP_SECONDS:-3}"
rounds="${BENCH_ROUNDS:-3}"
connections="${BENCH_CONNECTIONS:-32}"
memory_checks="${BENCH_MEMORY_CHECKS:-100000}"
export BENCH_USERS="${BENCH_USERS:-10000}"
clients=50
pipeline=16

for tool in redis-server redis-cli redis-benchmark wrk curl; do
  if ! command -v "$tool" >/dev/null; then
    echo "$tool is not installed; on Debian: apt-get install -y redis wrk curl" >&2
    exit 1
  fi
done

cd "$root"
cargo build --release -p sluice-limiter -p sluice-e2e \
  --bin sluice-limiter --bin paced-load --example check_script
release="${CARGO_TARGET_DIR:-$root/target}/release"

work="$(mktemp -d)"
pids=()
stop_all() {
  local p
  for p in "${pids[@]}"; do
    kill "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [[ -n "${BENCH_KEEP:-}" ]]; then
    echo "kept $work" >&2
  else
    rm -rf "$work"
  fi
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Starts redis-server on a free loopback port; sets redis_pid, redis_port.
start_redis() {
  local port deadline
  for _ in 1 2 3 4 5; do
    port=$((20000 + RANDOM % 20000))
    if (: <"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
      --dir "$work" >"$work/redis.log" 2>&1 &
    redis_pid=$!
    pids+=("$redis_pid")
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)) && kill -0 "$redis_pid" 2>/dev/null; do
      if [[ "$(redis-cli -p "$port" PING 2>/dev/null)" == PONG ]]; then
        redis_port=$port
        return 0
      fi
      sleep 0.05
    done
  done
  echo "no redis-server started; its last log:" >&2
  cat "$work/redis.log" >&2
  return 1
}

# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

rcli() {
  redis-cli -p "$redis_port" "$@"
}

# A field of INFO memory, such as `used_memory`.
memory_field() {
  rcli INFO memory | tr -d '\r' | awk -F: -v f="$1" '$1 == f { print $2 }'
}

# Calls of EVALSHA so far (both the check and the limiter's once-a-second
# sync script; the latter adds about one per second).
evalsha_calls() {
  rcli INFO commandstats | tr -d '\r' |
    awk -F'[=,:]' '$1 == "cmdstat_evalsha" { print $3 }' | grep . || echo 0
}

# CPU time process $1 has used, in clock ticks.
cpu_ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}

start_redis
"$release/examples/check_script" >"$work/check.lua"
sha="$(rcli -x SCRIPT LOAD <"$work/check.lua")"
if [[ "$sha" != "$(sha1sum "$work/check.lua" | cut -d' ' -f1)" ]]; then
  echo "redis-cli did not load the script byte for byte" >&2
  exit 1
fi

# Keys shaped as the limiter names them (limiter/src/store/redis/keys.rs):
# the shared `global` counter, and a user's two counters with a random
# user number in place of the digest's last 12 hex digits.
prefix='sluice:{default/bench'
digits=00000000000000000000
ceiling_command=(EVALSHA "$sha" 3
  "$prefix/global/1000/${digits}000000000000}"
  "$prefix/per-user/60000/${digits}__rand_int__}"
  "$prefix/search-per-user/10000/${digits}__rand_int__}"
  '' 1 1000 1000000000 60000 1000000000 10000 1000000000)

# Runs redis-benchmark with $1 requests; prints scripts/s and the redis
# server's CPU µs per script.
ceiling() {
  local before after rps
  before="$(cpu_ticks "$redis_pid")"
  rps="$(redis-benchmark -h 127.0.0.1 -p "$redis_port" -c "$clients" -P "$pipeline" \
    -n "$1" -r "$BENCH_USERS" --csv "${ceiling_command[@]}" |
    awk -F'","' 'NR == 2 { print $2 }')"
  after="$(cpu_ticks "$redis_pid")"
  awk -v rps="$rps" -v n="$1" -v t="$((after - before))" -v hz="$(getconf CLK_TCK)" \
    'BEGIN { printf "%.0f %.2f\n", rps, t * 1e6 / hz / n }'
}

# Each limiter by name: its process and its address. `redis` counts in the
# Redis above; `memory`, on its own memory store, is the latency baseline
# at half load: the same HTTP path and machine, without Redis.
declare -A pid address
start_limiter() {
  local name=$1 probe
  shift
  NO_COLOR=1 "$release/sluice-limiter" --listen 127.0.0.1:0 \
    --policy limiter/benches/policy.yaml "$@" 2>"$work/$name.log" &
  pid[$name]=$!
  pids+=("$!")
  address[$name]="$(address_in "$work/$name.log" address=)"
  probe="$(curl -sf --max-time 2 -d '{"user":"probe","endpoint":"GET /search"}' \
    "http://${address[$name]}/v1/check" || true)"
  if [[ "$probe" != *'"allowed":true'* || "$probe" != *'"degraded":false'* ]]; then
    echo "the $name limiter does not admit a check: $probe" >&2
    exit 1
  fi
}
start_limiter redis --store redis --redis-url "redis://127.0.0.1:$redis_port"
start_limiter memory --store memory

# Checks the redis limiter decided without Redis, so far.
degraded_checks() {
  curl -sf "http://${address[redis]}/metrics" |
    awk '/^sluice_degraded_checks_total/ { n += $NF } END { print n + 0 }'
}

# Picks key=value fields of a line: `fields "$line" a b` prints "A B".
fields() {
  awk -v line="$1" -v names="${*:2}" 'BEGIN {
    n = split(line, parts, " ")
    for (i = 1; i <= n; i++) if (split(parts[i], kv, "=") == 2) f[kv[1]] = kv[2]
    k = split(names, want, " ")
    for (i = 1; i <= k; i++) printf "%s%s", f[want[i]], (i < k ? " " : "\n")
  }'
}

# Drives the redis limiter with wrk for $1 s; prints checks/s, p50 and p99
# ms, scripts Redis ran per check, checks decided without Redis, failed
# requests, and the CPU µs per check of the limiter and of redis-server.
closed_loop() {
  local calls ticks_l ticks_r degraded line
  calls="$(evalsha_calls)"
  degraded="$(degraded_checks)"
  ticks_l="$(cpu_ticks "${pid[redis]}")"
  ticks_r="$(cpu_ticks "$redis_pid")"
  line="$(timeout $(($1 + 30)) wrk -t 1 -c "$connections" -d "${1}s" --timeout 2s \
    -s scripts/wrk-check.lua "http://${address[redis]}/v1/check" | grep '^RESULT')"
  line="$line calls=$(($(evalsha_calls) - calls)) degraded=$(($(degraded_checks) - degraded))"
  line="$line cpu_l=$(($(cpu_ticks "${pid[redis]}") - ticks_l))"
  line="$line cpu_r=$(($(cpu_ticks "$redis_pid") - ticks_r))"
  fields "$line" requests duration_us p50_us p99_us calls degraded non2xx errors cpu_l cpu_r |
    awk -v hz="$(getconf CLK_TCK)" '{
      printf "%.0f %.3f %.3f %.3f %d %d %.2f %.2f\n", $1 * 1e6 / $2, $3 / 1e3, $4 / 1e3,
        $5 / $1, $6, $7 + $8, $9 * 1e6 / hz / $1, $10 * 1e6 / hz / $1
    }'
}

# Time the threads of processes $@ have spent ready to run but waiting
# for a CPU, in ns (the second field of each thread's schedstat).
cpu_wait_ns() {
  local p
  for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done |
    awk '{ n += $2 } END { printf "%.0f\n", n }'
}

# Sends $2 checks/s for $3 s to limiter $1 with paced-load; prints the
# rate reached, p50 and p99 latency from when each check fell due, p99
# from when it was sent (ms), failed requests, and how long the threads of
# the limiter and (for the redis limiter) redis-server waited for a CPU,
# in ms per second.
half_load() {
  local line waited watched=("${pid[$1]}")
  [[ $1 == redis ]] && watched+=("$redis_pid")
  waited="$(cpu_wait_ns "${watched[@]}")"
  line="$("$release/paced-load" "http://${address[$1]}/v1/check" --rate "$2" \
    --seconds "$3" --warmup-seconds 2 --users "$BENCH_USERS" | grep '^PACED')"
  line="$line waited=$(($(cpu_wait_ns "${watched[@]}") - waited)) wall=$(($3 + 2))"
  fields "$line" achieved_rps p50_us p99_us sent_p99_us non2xx errors waited wall |
    awk '{
      printf "%.0f %.3f %.3f %.3f %d %.0f\n", $1, $2 / 1e3, $3 / 1e3, $4 / 1e3, $5 + $6,
        $7 / 1e6 / $8
    }'
}

echo "machine: $(nproc) cores, $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)," \
  "load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "redis $(redis-server --version | cut -d' ' -f3) on 127.0.0.1:$redis_port," \
  "check script $sha"
echo "ceiling: redis-benchmark -c $clients -P $pipeline -r $BENCH_USERS, EVALSHA of 3 counters;" \
  "limiter: wrk -t 1 -c $connections, ${seconds}s; half load: paced-load, ${seconds}s"

# Warm-ups; the ceiling's also sizes its runs to about $seconds each.
read -r warm_rps _ <<<"$(ceiling 50000)"
requests=$((warm_rps * seconds))
closed_loop "$warmup" >/dev/null

throughput="$work/throughput"
latency="$work/latency"
for round in $(seq 1 "$rounds"); do
  rcli FLUSHALL >/dev/null
  read -r ceiling_rps redis_cpu <<<"$(ceiling "$requests")"
  rcli FLUSHALL >/dev/null
  rcli SCRIPT FLUSH >/dev/null
  read -r rps p50 p99 per_check degraded failed cpu_l cpu_r <<<"$(closed_loop "$seconds")"
  if [[ "$(rcli SCRIPT EXISTS "$sha")" != 1 ]]; then
    echo "the limiter did not run the script the ceiling ran ($sha)" >&2
    exit 1
  fi
  echo "$round $ceiling_rps $rps $p50 $p99 $redis_cpu $cpu_r $cpu_l $per_check $degraded $failed" \
    >>"$throughput"
  read -r base_rps b50 b99 b99_sent base_failed base_wait \
    <<<"$(half_load memory $((rps / 2)) "$seconds")"
  degraded="$(degraded_checks)"
  read -r half_rps h50 h99 h99_sent half_failed half_wait \
    <<<"$(half_load redis $((rps / 2)) "$seconds")"
  degraded=$(($(degraded_checks) - degraded))
  echo "$round $((rps / 2)) $base_rps $b50 $b99 $b99_sent $half_rps $h50 $h99 $h99_sent" \
    "$degraded $((base_failed + half_failed)) $base_wait $half_wait" >>"$latency"
done

echo
echo "throughput: the ceiling (redis-benchmark, scripts/s) and the limiter (wrk, checks/s);"
echo "CPU µs per script or check: redis-server in each, and the limiter."
awk 'BEGIN {
    printf "%-5s %9s %9s %6s %8s %8s %9s %9s %9s %8s %8s %6s\n", "round", "script/s", "check/s",
      "ratio", "p50 ms", "p99 ms", "redis ceil", "redis chk", "limiter", "scr/chk", "degraded", "failed"
  }
  { printf "%-5s %9s %9s %6.2f %8s %8s %9s %9s %9s %8s %8s %6s\n", $1, $2, $3, $3 / $2, $4, $5,
      $6, $7, $8, $9, $10, $11 }' "$throughput"
echo
echo "half load (paced-load at half the round's checks/s), memory store then Redis;"
echo "latency (ms) from when each check fell due, and p99 from when it was sent; and"
echo "how long the limiter's threads (with Redis, and redis-server's) waited for a CPU, ms/s:"
awk 'BEGIN {
    printf "%-5s %6s | %6s %6s %6s %8s %6s | %6s %6s %6s %8s %6s | %8s %6s\n", "round", "rate",
      "mem/s", "p50", "p99", "p99 sent", "wait", "redis/s", "p50", "p99", "p99 sent", "wait",
      "degraded", "failed"
  }
  { printf "%-5s %6s | %6s %6s %6s %8s %6s | %6s %6s %6s %8s %6s | %8s %6s\n", $1, $2, $3, $4,
      $5, $6, $13, $7, $8, $9, $10, $14, $11, $12 }' "$latency"
echo
join "$throughput" "$latency" | awk '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++)
      for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
    return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  { n++; ratio[n] = $3 / $2; p99[n] = $19; base[n] = $15; rel[n] = $19 / $15 }
  END {
    printf "median of %d rounds: throughput ratio %.2f (target >= 0.50);", n, median(ratio, n)
    printf " p99 at half load %.3f ms (target < 2 ms),", median(p99, n)
    printf " %.3f ms on the memory store at the same rate, ratio %.2f\n", median(base, n),
      median(rel, n)
  }'

# Memory: the limiter stopped (its heartbeat key would count), the
# database empty, then $memory_checks checks of three fresh counters each
# through the check script, sent as raw protocol. Windows of one minute,
# so that no counter expires while this runs.
for name in redis memory; do
  kill "${pid[$name]}"
  wait "${pid[$name]}" 2>/dev/null || true
done
rcli FLUSHALL >/dev/null
memory_before="$(memory_field used_memory)"
awk -v n="$memory_checks" -v sha="$sha" -v prefix="$prefix" 'BEGIN {
  split("global/1000 per-user/60000 search-per-user/10000", limits, " ")
  for (i = 0; i < n; i++) {
    printf "*14\r\n$7\r\nEVALSHA\r\n$40\r\n%s\r\n$1\r\n3\r\n", sha
    for (l = 1; l <= 3; l++) {
      key = sprintf("%s/%s/%032x}", prefix, limits[l], i)
      printf "$%d\r\n%s\r\n", length(key), key
    }
    printf "$0\r\n\r\n$1\r\n1\r\n"
    for (l = 1; l <= 3; l++) printf "$5\r\n60000\r\n$10\r\n1000000000\r\n"
  }
}' >"$work/memory.resp"
rcli --pipe <"$work/memory.resp" >"$work/pipe.log"
if ! grep -q 'errors: 0,' "$work/pipe.log"; then
  echo "the memory run's scripts failed:" >&2
  cat "$work/pipe.log" >&2
  exit 1
fi
memory_after="$(memory_field used_memory)"
keys="$(rcli DBSIZE)"
echo
echo "memory: $keys counters from $memory_checks checks of three;" \
  "used_memory $memory_before -> $memory_after bytes"
awk -v b="$memory_before" -v a="$memory_after" -v k="$keys" -v prefix="$prefix" 'BEGIN {
  names = length(prefix "/global/1000/}") + length(prefix "/per-user/60000/}") \
    + length(prefix "/search-per-user/10000/}") + 3 * 32
  per = (a - b) / k
  printf "per counter %.1f bytes (key names of %.0f characters on average),", per, names / 3
  printf " per check of three new counters %.0f bytes\n", 3 * per
}'
