#!/usr/bin/env bash
# Latency and errors of real limiters while Redis fails, from the fault
# tolerance suite (e2e/tests/faults.rs) built in release.
#
# Each scenario of the suite runs once, one at a time: steady load from a
# few client tasks on loopback for about three seconds before a fault,
# three seconds during it and three seconds after it (Redis killed and
# restarted, hung with SIGSTOP and resumed with SIGCONT, a cluster master
# killed, a flood of distinct users, hostile slow clients). The tests
# assert the rules; this script collects the figures they print and lays
# them out as tables: p50, p99 and slowest answer as the client saw them,
# 5xx answers, other errors (no answer, or an unexpected status), answers
# marked degraded (decided without Redis), and the longest the client
# itself was stalled while a check was in flight (its share of a slow
# answer), per phase; then the during/before ratios, how long limiters took
# to count in Redis again, and the limiter's memory.
#
# Extra arguments go to the test binary, such as a test name filter. Needs
# redis-server and redis-cli (scripts/setup.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

echo "machine: $(nproc) cores, $(grep -m 1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
cargo test --release --quiet -p sluice-e2e --test faults --no-run 2>/dev/null
status=0
cargo test --release -p sluice-e2e --test faults -- --test-threads 1 --show-output "$@" \
  >"$log" 2>&1 || status=$?
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
grep -E '^test .* \.\.\. ' "$log" | sed 's/^test /  /' || true
echo

# FAULT-FIGURES <scenario> <phase> requests=… p50_ms=… p99_ms=… max_ms=…
# 5xx=… other_errors=… degraded=… client_stall_ms=…
awk '
  /^FAULT-FIGURES / {
    delete f
    for (i = 4; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
    if (!header++) {
      print "| scenario | phase | checks | p50 ms | p99 ms | max ms | 5xx | other errors | degraded | client stall ms |"
      print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    }
    printf "| %s | %s | %d | %.2f | %.2f | %.2f | %d | %d | %d | %.1f |\n", \
      $2, $3, f["requests"], f["p50_ms"], f["p99_ms"], f["max_ms"], f["5xx"], \
      f["other_errors"], f["degraded"], f["client_stall_ms"]
    p99[$2, $3] = f["p99_ms"]; p50[$2, $3] = f["p50_ms"]
    if ($3 == "during" && !seen[$2]++) order[++n] = $2
  }
  END {
    if (!n) exit
    print ""
    print "| scenario | p50 during / before | p99 during / before | p99 after / before |"
    print "|---|---:|---:|---:|"
    for (i = 1; i <= n; i++) {
      s = order[i]
      if (!((s, "before") in p99)) continue
      printf "| %s | %.2f | %.2f | %.2f |\n", s, p50[s, "during"] / p50[s, "before"], \
        p99[s, "during"] / p99[s, "before"], p99[s, "after"] / p99[s, "before"]
    }
  }' "$log"
echo
grep -E '^FAULT-(RETURN|FOLLOW|RSS)' "$log" | sed 's/^FAULT-[A-Z]* /  /' || true

if ((status != 0)); then
  echo
  echo "some scenarios failed; their output:" >&2
  sed -n '/^failures:/,$p' "$log" >&2
fi
exit "$status"
