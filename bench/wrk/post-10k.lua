-- The "10 KiB echo POST" workload: every request carries a 10 KiB body,
-- which the echo app reads from wsgi.input and sends back.
wrk.method = "POST"
wrk.body = string.rep("x", 10240)
wrk.headers["Content-Type"] = "application/octet-stream"

-- wrk runs with bench/wrk as its working directory (see bench/bench.py).
dofile("report.lua")
