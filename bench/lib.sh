# Shell functions the benchmark scripts share (sourced, not run): the servers they start, waiting
# for them, the counters they read from /metrics and the CPU they read from /proc. Callers add
# each measured server's pid to the `pids` array and `trap stop_all EXIT`; a script whose
# servers share one embedded cluster starts its owner with start_owner and traps
# 'stop_all; stop_owner' instead.

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

# start_owner BIN DATA-DIR CERTIFICATES PORT: the server that starts the embedded cluster under
# DATA-DIR and owns it for the whole run; it serves nothing measured. It is kept out of `pids`,
# so that stop_all between sections leaves the cluster up; stop_owner stops it. Sets `owner`
# and `postmaster` (the cluster's first process, for cluster_ticks).
owner=
start_owner() {
  env -u DATABASE_URL "$1" serve --data-dir "$2" --bind "127.0.0.1:$4" \
    --aws-certificates "$3" 2>>"${WORK:?}/serve.log" &
  owner=$!
  wait_ready "$4"
  postmaster=$(head -1 "$2/pgdata/postmaster.pid")
}
stop_owner() {
  [ -n "$owner" ] || return 0
  kill -TERM "$owner" 2>/dev/null || true
  wait "$owner" 2>/dev/null || true
  owner=
}

# start_server BIN PORT DATABASE-URL CERTIFICATES FLAGS...: one measured server on a cluster
# another process migrated (`--no-migrate`), added to `pids` and ready; its pid in `started`.
start_server() {
  local bin=$1 port=$2 url=$3 certificates=$4
  shift 4
  env "DATABASE_URL=$url" "$bin" serve --no-migrate --bind "127.0.0.1:$port" \
    --aws-certificates "$certificates" "$@" 2>>"${WORK:?}/serve.log" &
  started=$!
  pids+=("$started")
  wait_ready "$port"
}

# ticks PID: user + system clock ticks the process has used so far.
ticks() {
  awk '{ print $14 + $15 }' "/proc/$1/stat"
}
# cluster_ticks: the same for the whole cluster: the postmaster, its live children (backends,
# writer, checkpointer, ...) and the children it has reaped (their ticks stay with the parent,
# so a backend that exits during a measurement still counts).
cluster_ticks() {
  local total pid
  total=$(awk '{ print $14 + $15 + $16 + $17 }' "/proc/$postmaster/stat")
  for pid in $(ps -o pid= --ppid "$postmaster"); do
    total=$((total + $(ticks "$pid" 2>/dev/null || echo 0)))
  done
  echo "$total"
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
