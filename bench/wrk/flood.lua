-- wrk script: every request carries a new `x-api-key` value (thread id + counter), so a
-- header-keyed rate-limit policy sees a flood of new keys. Prints the same JSON line as
-- report.lua at the end.
local next_id = 0

setup = function(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/plaintext", { ["x-api-key"] = string.format("k%d-%d", tid, n) })
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"err_connect":%d,"err_read":%d,' ..
    '"err_write":%d,"err_timeout":%d,"non2xx":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.timeout,
    e.status, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
