-- wrk script: POST the same pre-encoded request body (BENCH_BODY, a file) with the headers from the
-- environment (BENCH_CONTENT_TYPE, and BENCH_HEADER_LENGTH as Inference-Header-Content-Length when set).
local path = os.getenv("BENCH_BODY")
local file = assert(io.open(path, "rb"), "cannot open BENCH_BODY " .. tostring(path))
wrk.body = file:read("*a")
file:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/octet-stream"
local header_length = os.getenv("BENCH_HEADER_LENGTH")
if header_length and header_length ~= "" then
  wrk.headers["Inference-Header-Content-Length"] = header_length
end
