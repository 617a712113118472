#!/usr/bin/env bash
# The figures of the capacity model (docs/scaling.md): CPU per authentication, of instauth and of
# PostgreSQL, and statements per authentication, for the three ways instauth can talk to the
# database. In one run, on this machine, loopback only, against a release build:
#   prepared   the default: the statement parsed once per connection (pool 10, coalescing off)
#   unnamed    --db-statement-cache-capacity 0, as behind PgBouncer before 1.21 (pool 10,
#              coalescing off): parsed and planned on every request
#   coalesced  the default under a burst: a pool of 4 and --db-batch-max 64, so lookups that
#              wait share one statement
# Each cell is closed-loop wrk (one thread, CLIENTS connections, DURATION); CPU is read from
# /proc (user + system ticks) of the instauth process and of every process of the PostgreSQL
# cluster, before and after, and divided by the successful authentications /metrics counted.
#
#   bench/capacity.sh      # prints a Markdown table
#
# Knobs (environment): DURATION (8s), CLIENTS (256), ROUNDS (3, interleaved; medians), PORT
# (3970), WORK (target/capacity, wiped first), CAPACITY_NO_BUILD=1 to measure the binary already
# in $CARGO_TARGET_DIR/release. Needs wrk and curl (apt-get install wrk curl).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk curl python3; do
  command -v "$tool" >/dev/null || { echo "capacity: $tool not found" >&2; exit 2; }
done
DURATION=${DURATION:-8s}
CLIENTS=${CLIENTS:-256}
ROUNDS=${ROUNDS:-3}
PORT=${PORT:-3970}
WORK=${WORK:-target/capacity}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release/instauth"
ulimit -n 20000 2>/dev/null || true

if [ "${CAPACITY_NO_BUILD:-0}" != 1 ]; then cargo build --release >&2; fi
rm -rf "$WORK"
mkdir -p "$WORK/results"
export RUST_LOG=warn

# 2 000 one-agent instances on an embedded cluster.
"$BIN" seed --data-dir "$WORK/db" --prefix cp --workspaces 2000 --out "$WORK/cp" >&2
db_port=$(cat "$WORK/db/port")
db_url="postgres://postgres:$(cat "$WORK/db/password")@127.0.0.1:$db_port/postgres"

# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'stop_all; stop_owner' EXIT
start_owner "$BIN" "$WORK/db" "$WORK/cp/aws-certificate.pem" "$PORT"

declare -A server_pid
port_of() { case $1 in prepared) echo $((PORT + 1)) ;; unnamed) echo $((PORT + 2)) ;; coalesced) echo $((PORT + 3)) ;; esac; }
start() { # config flags...
  local config=$1 port
  shift
  port=$(port_of "$config")
  start_server "$BIN" "$port" "$db_url" "$WORK/cp/aws-certificate.pem" "$@"
  server_pid[$config]=$started
  # Warm: every pooled connection opened and its statement prepared.
  wrk -t1 -c64 -d2s -s bench/wrk-corpus.lua "http://127.0.0.1:$port" -- "$WORK/cp/corpus.jsonl" >/dev/null
}
start prepared --db-max-connections 10 --db-batch-max 1
start unnamed --db-max-connections 10 --db-batch-max 1 --db-statement-cache-capacity 0
start coalesced --db-max-connections 4 --db-batch-max 64

for round in $(seq "$ROUNDS"); do
  for config in prepared unnamed coalesced; do
    port=$(port_of "$config")
    echo "capacity round $round: $config" >&2
    read -r s0 a0 <<<"$(metric_sums "$port")"
    i0=$(ticks "${server_pid[$config]}")
    p0=$(cluster_ticks)
    t0=$(date +%s.%N)
    wrk -t1 -c"$CLIENTS" -d"$DURATION" --timeout 30s -s bench/wrk-corpus.lua \
      "http://127.0.0.1:$port" -- "$WORK/cp/corpus.jsonl" >"$WORK/results/$config.$round.wrk"
    t1=$(date +%s.%N)
    i1=$(ticks "${server_pid[$config]}")
    p1=$(cluster_ticks)
    read -r s1 a1 <<<"$(metric_sums "$port")"
    echo "$config $round $((a1 - a0)) $((s1 - s0)) $((i1 - i0)) $((p1 - p0)) $t0 $t1" >>"$WORK/results/cells"
  done
done

python3 - "$WORK/results/cells" "$(getconf CLK_TCK)" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys
cells, tick, cores, load = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
rows = {}
for line in open(cells):
    config, _round, auths, statements, itk, ptk, t0, t1 = line.split()
    auths = int(auths)
    if auths == 0:
        continue
    seconds = float(t1) - float(t0)
    rows.setdefault(config, []).append((
        auths / seconds,
        int(itk) / tick / auths * 1e6,
        int(ptk) / tick / auths * 1e6,
        int(statements) / auths,
    ))
print(f"{cores} cores, load average after: {load}; medians over the rounds")
print()
print("| Mode | auths/s | instauth CPU per auth | PostgreSQL CPU per auth | statements per auth | auths/s per instauth core | auths/s per PostgreSQL core |")
print("|---|---|---|---|---|---|---|")
for config in ("prepared", "unnamed", "coalesced"):
    if config not in rows:
        continue
    rate, icpu, pcpu, spa = (statistics.median(column) for column in zip(*rows[config]))
    print(f"| {config} | {rate:,.0f} | {icpu:.0f} µs | {pcpu:.0f} µs | {spa:.3f} | {1e6 / icpu:,.0f} | {1e6 / pcpu:,.0f} |")
PY
