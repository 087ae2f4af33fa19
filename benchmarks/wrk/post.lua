-- POST one prepared body, as fast as wrk can, and report percentiles as JSON on stdout.
-- BODY_FILE: the request body; HEADERS: "Name: value|Name: value"; PATH_URI: the route.
local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.method = "POST"
wrk.body = file:read("*a")
file:close()
wrk.path = os.getenv("PATH_URI") or "/predict"
for header in string.gmatch(os.getenv("HEADERS") or "", "[^|]+") do
  local name, value = string.match(header, "^%s*(.-)%s*:%s*(.-)%s*$")
  wrk.headers[name] = value
end

function done(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format(
    '{"requests": %d, "seconds": %.6f, "non2xx": %d, "socket_errors": %d, "p50_ms": %.3f, "p99_ms": %.3f}\n',
    summary.requests, summary.duration / 1e6, non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000))
end
