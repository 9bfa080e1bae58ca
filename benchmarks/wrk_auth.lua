-- wrk script for `ctdna bench`: the Bearer key from the environment on every request, and a
-- one-line JSON summary (read by benchmarks/reads.py) at the end.
wrk.headers["Authorization"] = "Bearer " .. os.getenv("CTDNA_BENCH_KEY")

done = function(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"status_errors":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"timeout":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
