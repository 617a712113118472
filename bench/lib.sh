# Shell functions the benchmark scripts share (sourced, not run): the servers they start, waiting
# for them, and the counters they read from /metrics. Callers add each started server's pid to
# the `pids` array and `trap stop_all EXIT`.

pids=()
# The benchmarks send AWS documents only, and nothing they start may reach the internet: the
# servers look for Google's keys on a closed loopback port instead of fetching them from Google.
export INSTAUTH_GOOGLE_JWKS_URL=${INSTAUTH_GOOGLE_JWKS_URL:-http://127.0.0.1:1/certs}
# Stops every started server, newest first, and waits for each.
stop_all() {
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill -TERM "${pids[$i]}" 2>/dev/null || true
    wait "${pids[$i]}" 2>/dev/null || true
  done
  pids=()
}

# wait_ready PORT: until /readyz answers 200 (30 s at most, then the script stops).
wait_ready() {
  for _ in $(seq 150); do
    curl -fsS "http://127.0.0.1:$1/readyz" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server on port $1 never became ready" >&2
  exit 1
}

# metric_sums PORT: SQL statements sent and successful authentications so far, summed over
# every label (query, target, provider).
metric_sums() {
  curl -fsS "http://127.0.0.1:$1/metrics" | awk '
    /^instauth_sql_statements_total/ { s += $NF }
    /^instauth_auth_outcomes_total\{outcome="ok"/ { a += $NF }
    END { printf "%d %d\n", s, a }'
}
