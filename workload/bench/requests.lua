-- wrk script: replays pre-signed deposit deliveries (BENCH_REQUESTS, a Lua file returning
-- {{id, timestamp, signature, body}, ...}); thread t sends entries t, t+T, t+2T, ...
local data = dofile(os.getenv("BENCH_REQUESTS"))
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

function init(args)
  nthreads = tonumber(os.getenv("BENCH_THREADS"))
  idx = tid
end

function request()
  local r = data[idx]
  if r == nil then
    idx = tid
    r = data[idx]
  end
  idx = idx + nthreads
  return wrk.format("POST", "/api/v1/webhooks/deposit", {
    ["webhook-id"] = r[1],
    ["webhook-timestamp"] = r[2],
    ["webhook-signature"] = r[3],
    ["content-type"] = "application/json",
  }, r[4])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
