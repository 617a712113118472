#!/usr/bin/env bash
# Regenerates the "Load tool" table of docs/benchmarks.md: lookup × candidates per
# instance × pool size, each cell a closed-loop `instauth loadtest` run against a release build
# on this machine, loopback only.
#
#   bench/run.sh            # prints the Markdown table and the target ratios
#   bench/run.sh goodput    # the overload, storm and distance tables instead (bench/goodput.sh)
#
# Knobs (environment): DURATION per cell (5s), CONCURRENCY clients (256), WORKSPACES per shape
# (2000), ROUNDS of the interleaved target cells (5), PORT (3917), WORK directory (target/bench,
# wiped first). Needs python3 for the table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = goodput ]; then
  exec bash bench/goodput.sh
fi

DURATION=${DURATION:-5s}
CONCURRENCY=${CONCURRENCY:-256}
WORKSPACES=${WORKSPACES:-2000}
PORT=${PORT:-3917}
WORK=${WORK:-target/bench}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release/instauth"

cargo build --release --features legacy >&2
rm -rf "$WORK"
mkdir -p "$WORK/results" "$WORK/targets"
# Request logs would cost every lookup the same CPU per request; the benchmark measures the
# lookup, so only warnings are logged.
export RUST_LOG=warn

# One embedded cluster holds the four shapes (distinct prefixes): the same database for every cell.
declare -A SHAPES=(
  [1]="--agents-per-instance 1"
  [2]="--agents-per-instance 2"
  [5]="--agents-per-instance 5"
  [1+4stale]="--agents-per-instance 1 --builds 5"
)
ORDER=(1 2 5 1+4stale)
for shape in "${ORDER[@]}"; do
  prefix="s${shape//[^0-9a-z]/-}"
  # Every shape signs with the first shape's key: one trusted certificate, one RSA check per
  # request, as in production (AWS keys are RSA-1024, and so is seed's).
  key=()
  [ -f "$WORK/s1/aws-key.pem" ] && key=(--aws-key "$WORK/s1/aws-key.pem")
  # shellcheck disable=SC2086 # the shape is a list of flags
  "$BIN" seed --data-dir "$WORK/db" --prefix "$prefix" --workspaces "$WORKSPACES" \
    --out "$WORK/$prefix" "${key[@]}" ${SHAPES[$shape]} >&2
done
cp "$WORK/s1/aws-certificate.pem" "$WORK/certificates.pem"

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
LOOKUPS=(single coder-main coder-rc3 coder-rc2)
ROUNDS=${ROUNDS:-5}
# stop_all stops the servers newest first: the first owns the embedded cluster and stops last.
# shellcheck source=bench/lib.sh
source bench/lib.sh
trap stop_all EXIT

run() { # lookup-index corpus-prefix output-file
  "$BIN" loadtest --target "http://127.0.0.1:$((PORT + $1))" --corpus "$WORK/$2/corpus.jsonl" \
    --duration "$DURATION" --concurrency "$CONCURRENCY" --json >"$3"
}

for pool in 4 10; do
  # One server per lookup over the same database, all up at once: an idle server costs
  # nothing, and the cells of one shape run back to back, so drifting background load on the
  # machine affects the strategies being compared alike.
  for i in "${!LOOKUPS[@]}"; do
    # The first server owns the embedded cluster (it is locked to one instauth process); the
    # others join it by URL, passed in the environment so the password stays off argv.
    if [ "$i" = 0 ]; then
      database=(env -u DATABASE_URL)
      data_dir=(--data-dir "$WORK/db")
    else
      database=(env "DATABASE_URL=postgres://postgres:$(cat "$WORK/db/password")@127.0.0.1:$(cat "$WORK/db/port")/postgres")
      data_dir=()
    fi
    "${database[@]}" "$BIN" serve "${data_dir[@]}" --bind "127.0.0.1:$((PORT + i))" \
      --lookup "${LOOKUPS[$i]}" --db-max-connections "$pool" \
      --aws-certificates "$WORK/certificates.pem" 2>>"$WORK/serve.log" &
    pids+=($!)
    wait_ready $((PORT + i))
    # Warm-up: opens the pool's connections and prepares the statements on each.
    "$BIN" loadtest --target "http://127.0.0.1:$((PORT + i))" --corpus "$WORK/s1/corpus.jsonl" \
      --duration 1s --concurrency "$CONCURRENCY" --json >/dev/null
  done
  for shape in "${ORDER[@]}"; do
    prefix="s${shape//[^0-9a-z]/-}"
    for i in "${!LOOKUPS[@]}"; do
      echo "pool $pool, ${LOOKUPS[$i]}, $shape candidates" >&2
      run "$i" "$prefix" "$WORK/results/${LOOKUPS[$i]}.$shape.$pool.json"
    done
  done
  if [ "$pool" = 10 ]; then
    # The targets compare single with coder-rc3 and coder-main at 2 candidates: repeat those
    # cells, interleaved, and compare medians.
    for round in $(seq "$ROUNDS"); do
      for i in 0 1 2; do
        echo "targets round $round, ${LOOKUPS[$i]}" >&2
        run "$i" s2 "$WORK/targets/${LOOKUPS[$i]}.$round.json"
      done
    done
  fi
  stop_all
done

python3 - "$WORK" "$CONCURRENCY" "$DURATION" <<'PY'
import json, pathlib, statistics, sys

work, concurrency, duration = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
results = work / "results"
rows = {}
for path in sorted(results.glob("*.json")):
    lookup, shape, pool = path.stem.split(".")
    rows[(lookup, shape, int(pool))] = json.loads(path.read_text())

def fmt(value, digits):
    return "n/a" if value is None else f"{value:.{digits}f}"

print(f"{concurrency} clients, {duration} per cell, closed loop.\n")
print("| Lookup | Candidates | Pool | req/s | p50 ms | p99 ms | SQL/request | Acquire p99 ms | Pool timeouts | Unexpected |")
print("|---|---|---|---|---|---|---|---|---|---|")
for lookup in ["single", "coder-main", "coder-rc3", "coder-rc2"]:
    for shape in ["1", "2", "5", "1+4stale"]:
        for pool in [4, 10]:
            r = rows.get((lookup, shape, pool))
            if r is None:
                continue
            s = r.get("server") or {}
            label = "1 live + 4 stale" if shape == "1+4stale" else shape
            print(f"| {lookup} | {label} | {pool} | {r['throughput_rps']:.0f} | "
                  f"{r['latency_ms']['p50']:.2f} | {r['latency_ms']['p99']:.2f} | "
                  f"{fmt(s.get('sql_per_request'), 2)} | {fmt(s.get('pool_acquire_p99_ms'), 3)} | "
                  f"{fmt(s.get('pool_acquire_timeouts'), 0)} | {r['unexpected']} |")

rounds = {}
for path in sorted((work / "targets").glob("*.json")):
    lookup, _ = path.stem.split(".")
    rounds.setdefault(lookup, []).append(json.loads(path.read_text())["throughput_rps"])
median = {lookup: statistics.median(values) for lookup, values in rounds.items()}
print()
print(f"Targets, 2 candidates, pool 10, {len(rounds.get('single', []))} interleaved rounds "
      f"(median req/s): " + ", ".join(f"{k} {v:.0f}" for k, v in median.items()) + ".")
print(f"single / coder-rc3 = {median['single'] / median['coder-rc3']:.2f}x (target >= 3); "
      f"single / coder-main = {median['single'] / median['coder-main']:.2f}x (target >= 1.5).")
sql = [rows[k]["server"]["sql_per_request"] for k in rows if k[0] == "single" and rows[k].get("server")]
timeouts = sum((r.get("server") or {}).get("pool_acquire_timeouts", 0)
               for k, r in rows.items() if k[0] == "single" and k[2] == 4)
print(f"single SQL/request over all cells: {min(sql):.2f} to {max(sql):.2f}; "
      f"pool timeouts of single at {concurrency} clients with a pool of 4, all shapes: {timeouts:.0f}.")
PY
echo
echo "Load average (1, 5, 15 min) before the cells: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)."
