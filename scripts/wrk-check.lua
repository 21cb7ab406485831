-- The wrk script of scripts/bench-http.sh: POSTs check bodies to /v1/check,
-- spread over many users so that per-user counters are many and their
-- shards vary, as in real traffic. Every body is built once, in `init`,
-- so that wrk spends its time sending, not formatting.
--
-- BENCH_USERS sets how many users each wrk thread cycles through.

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local users = tonumber(os.getenv("BENCH_USERS") or "10000")
local threads = 0

-- Runs in the main state, once per thread: gives each thread its own users.
function setup(thread)
  thread:set("first_user", threads * users)
  threads = threads + 1
end

local requests = {}
local next_request = 1

function init(args)
  local first = first_user or 0
  for i = 1, users do
    local body = string.format(
      '{"user":"user-%08d","endpoint":"GET /search"}', first + i)
    requests[i] = wrk.format(nil, nil, nil, body)
  end
end

function request()
  local r = requests[next_request]
  next_request = next_request % #requests + 1
  return r
end

-- One machine-readable line, parsed by bench-http.sh.
function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p99_us=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status))
end
