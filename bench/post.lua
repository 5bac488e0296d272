-- wrk script: POST create-web-call with an Origin and a JSON body, count statuses, and
-- print one JSON line (prefixed "BENCH_RESULT ") that bench/run.py parses.
-- Settings come from the environment: BENCH_ORIGIN, BENCH_BODY, BENCH_AUTH.
wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY") or '{"agent_id":"agent_bench"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["User-Agent"] = "bench-wrk/1"
local origin = os.getenv("BENCH_ORIGIN") or ""
if origin ~= "" then wrk.headers["Origin"] = origin end
local auth = os.getenv("BENCH_AUTH") or ""
if auth ~= "" then wrk.headers["Authorization"] = auth end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    local s = thread:get("statuses")
    for code, n in pairs(s) do counts[code] = (counts[code] or 0) + n end
  end
  local parts = {}
  for code, n in pairs(counts) do parts[#parts + 1] = string.format('"%d":%d', code, n) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"statuses":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean, e.connect, e.read, e.write, e.status, e.timeout, table.concat(parts, ",")))
end
