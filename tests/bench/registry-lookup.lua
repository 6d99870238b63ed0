-- wrk script for the registry's lookup (`POST /subjects/{s}`), the call a serializer makes when it is configured
-- not to register: the body is a registered schema, read from the file named in $SCHEMA_BODY (default
-- body.json: {"schema": "..."}, as registered).
-- Usage: SCHEMA_BODY=body.json wrk -t2 -c32 -d10s --latency -s tests/bench/registry-lookup.lua http://HOST:8081/subjects/orders-value
local f = assert(io.open(os.getenv("SCHEMA_BODY") or "body.json", "r"))
wrk.method = "POST"
wrk.body = f:read("*a")
f:close()
wrk.headers["Content-Type"] = "application/vnd.schemaregistry.v1+json"

done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format("non-2xx or failed: %d\n", errors))
end
