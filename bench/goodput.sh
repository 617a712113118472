#!/usr/bin/env bash
# Goodput under bursts (docs/benchmarks.md, "Goodput"): in one run, against a release build on
# this machine, loopback only:
#   (a) overload: closed-loop clients 256 / 1000 / 2000 / 4000 on a pool of 4, coalescing on
#       (--db-batch-max 64) and off (1): successful auths/s, p99 of successes, 503s, statements
#       per authentication; and the pgbench rate of the single statement on the same data, once
#       per round, right after the 256-client coalesced cell;
#   (b) fleet storms of 1000 / 5000 / 10000 agents (`instauth loadtest --storm`): makespan,
#       p99 time to token, statements per agent, for coalescing on, off and coder-main, and
#       coalesced again with an Azure and a Google fleet (`seed --provider azure|google`);
#   (c) database distance: round trip + 0 / 0.5 / 2 ms (`instauth delay-proxy`) x pool 4 / 10,
#       closed loop at 256 clients, for coalesced, batch-off, coder-main and coder-rc3; and the
#       pgbench rate of the single statement through the same proxy on 4 connections.
#
#   bench/goodput.sh        # prints the three Markdown tables and the targets
#
# Knobs (environment): DURATION per cell (6s), PORT (3950), WORK (target/goodput, wiped first),
# STORMS ("1000 5000 10000"), CLIENTS ("256 1000 2000 4000"), ROUNDS of the overload curve
# (5: the cells interleave and the table gives each cell's median, so drifting background load
# falls on every client count alike; pgbench alone varied from 21 500 to 37 000/s over eight
# runs of 3 s in a row, so fewer rounds leave the ratio to chance), SECTIONS ("a b c").
# Needs wrk, pgbench, curl and python3 (Debian: apt-get install wrk postgresql-client curl).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in wrk pgbench curl python3; do
  command -v "$tool" >/dev/null || { echo "goodput: $tool not found" >&2; exit 2; }
done

DURATION=${DURATION:-6s}
PORT=${PORT:-3950}
WORK=${WORK:-target/goodput}
STORMS=${STORMS:-"1000 5000 10000"}
CLIENTS=${CLIENTS:-"256 1000 2000 4000"}
ROUNDS=${ROUNDS:-5}
SECTIONS=${SECTIONS:-"a b c"}
section() { [[ " $SECTIONS " == *" $1 "* ]]; }
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/release/instauth"
ulimit -n 20000 2>/dev/null || true

cargo build --release --features legacy >&2
rm -rf "$WORK"
mkdir -p "$WORK/results"
# Request logs would cost every configuration the same CPU; only warnings are logged.
export RUST_LOG=warn

# One embedded cluster: 2 agents per instance (named in the corpus); 2 000 instances for the
# steady loads, 10 000 more for the storms (distinct agents).
"$BIN" seed --data-dir "$WORK/db" --prefix sg --workspaces 2000 --agents-per-instance 2 \
  --out "$WORK/sg" >&2
"$BIN" seed --data-dir "$WORK/db" --prefix st --workspaces 10000 --agents-per-instance 2 \
  --aws-key "$WORK/sg/aws-key.pem" --out "$WORK/st" >&2
if section b; then
  for provider in azure google; do
    "$BIN" seed --data-dir "$WORK/db" --prefix "${provider:0:2}" --workspaces 10000 \
      --agents-per-instance 2 --provider "$provider" --out "$WORK/$provider" >&2
  done
fi
cp "$WORK/sg/aws-certificate.pem" "$WORK/certificates.pem"
db_port=$(cat "$WORK/db/port")
db_url="postgres://postgres:$(cat "$WORK/db/password")@127.0.0.1:$db_port/postgres"

# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'stop_all; stop_owner' EXIT
start_owner "$BIN" "$WORK/db" "$WORK/certificates.pem" "$PORT"

# serve PORT DATABASE-URL FLAGS...: one measured server, warmed up.
serve() {
  local port=$1 url=$2
  shift 2
  start_server "$BIN" "$port" "$url" "$WORK/certificates.pem" "$@"
  "$BIN" loadtest --target "http://127.0.0.1:$port" --corpus "$WORK/sg/corpus.jsonl" \
    --duration 1s --concurrency 64 --json >/dev/null
}
# wrk drives the overload curve, as the issue measuring it did: its per-request cost stays flat
# from 256 to 4 000 connections, where the Rust load tool's grows (it shares the 2 cores).
wrk_load() { # port clients output
  local before after
  before=$(metric_sums "$1")
  wrk -t2 -c"$2" -d"$DURATION" --timeout 30s --latency -s bench/wrk-corpus.lua \
    "http://127.0.0.1:$1" -- "$WORK/sg/corpus.jsonl" >"$3.wrk"
  after=$(metric_sums "$1")
  echo "$before $after" >"$3.metrics"
}
load() { # port clients output
  "$BIN" loadtest --target "http://127.0.0.1:$1" --corpus "$WORK/sg/corpus.jsonl" \
    --duration "$DURATION" --concurrency "$2" --timeout 30s --json >"$3"
}

# The single statement alone, as pgbench drives it: same data, same machine, 4 clients (as
# many as the pool of 4 the service is measured with), prepared.
sed -e 's/\$1/('"'"'sg-'"'"' || :w)/' queries/agents_by_instance_id.sql >"$WORK/single.sql"
{ echo '\set w random(1, 2000)'; grep -v '^--' "$WORK/single.sql"; } >"$WORK/single.pgbench"
single_pgbench() { # port output: the statement's rate through that port
  PGPASSWORD=$(cat "$WORK/db/password") pgbench -n -M prepared -c 4 -j 2 -T "${DURATION%s}" \
    -h 127.0.0.1 -p "$1" -U postgres -f "$WORK/single.pgbench" postgres >"$2" 2>&1
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# (a) overload, pool 4.
if section a; then
serve $((PORT + 1)) "$db_url" --db-max-connections 4 --db-batch-max 64
serve $((PORT + 2)) "$db_url" --db-max-connections 4 --db-batch-max 1
for round in $(seq "$ROUNDS"); do
  for clients in $CLIENTS; do
    for config in on off; do
      port=$((PORT + 1)); [ "$config" = off ] && port=$((PORT + 2))
      echo "overload round $round: $clients clients, coalescing $config" >&2
      wrk_load "$port" "$clients" "$WORK/results/overload.$config.$clients.$round"
      if [ "$clients" = "${CLIENTS%% *}" ] && [ "$config" = on ]; then
        # The statement alone, once per round, right after the cell it is compared with (the
        # servers idle meanwhile): the machine's speed drifts within a minute, so the ratio
        # compares medians of rates taken side by side.
        echo "overload round $round: pgbench" >&2
        single_pgbench "$db_port" "$WORK/results/pgbench.$round.txt"
      fi
    done
  done
done
stop_all
fi

# (b) storms, pool 10.
if section b; then
serve $((PORT + 1)) "$db_url" --db-batch-max 64 --azure-roots "$WORK/azure/azure-root.pem" \
  --google-jwks "$WORK/google/google-jwks.json"
serve $((PORT + 2)) "$db_url" --db-batch-max 1
serve $((PORT + 3)) "$db_url" --lookup coder-main
for agents in $STORMS; do
  for config in on off coder-main azure google; do
    case $config in on | azure | google) port=$((PORT + 1)) ;; off) port=$((PORT + 2)) ;; *) port=$((PORT + 3)) ;; esac
    corpus=$WORK/st/corpus.jsonl
    case $config in azure | google) corpus=$WORK/$config/corpus.jsonl ;; esac
    echo "storm: $agents agents, $config" >&2
    "$BIN" loadtest --target "http://127.0.0.1:$port" --corpus "$corpus" \
      --storm "$agents" --duration 60s --json >"$WORK/results/storm.$config.$agents.json"
  done
done
stop_all
fi

# (c) database distance: a delay proxy per round trip, servers per pool size and lookup.
if section c; then
proxy_port=$((PORT + 40))
for rtt in 0 0.5 2; do
  case $rtt in
    0) url=$db_url; pg_port=$db_port ;;
    *)
      half=$(awk -v r="$rtt" 'BEGIN { printf "%dus", r * 500 }')
      "$BIN" delay-proxy --listen "127.0.0.1:$proxy_port" --upstream "127.0.0.1:$db_port" \
        --delay "$half" 2>>"$WORK/proxy.log" &
      pids+=($!)
      sleep 0.5
      url="postgres://postgres:$(cat "$WORK/db/password")@127.0.0.1:$proxy_port/postgres"
      pg_port=$proxy_port
      proxy_port=$((proxy_port + 1))
      ;;
  esac
  # One statement per request at this distance, as fast as 4 connections can send it.
  echo "distance: +$rtt ms, pgbench" >&2
  single_pgbench "$pg_port" "$WORK/results/pgbench.distance.$rtt.txt"
  for pool in 4 10; do
    i=10
    for config in coalesced batch-off coder-main coder-rc3; do
      case $config in
        coalesced) flags=(--db-batch-max 64) ;;
        batch-off) flags=(--db-batch-max 1) ;;
        *) flags=(--lookup "$config") ;;
      esac
      serve $((PORT + i)) "$url" --db-max-connections "$pool" "${flags[@]}"
      echo "distance: +$rtt ms, pool $pool, $config" >&2
      load $((PORT + i)) 256 "$WORK/results/distance.$config.$rtt.$pool.json"
      i=$((i + 1))
    done
    # Keep the proxy, stop the servers of this pool size.
    for ((k = ${#pids[@]} - 1; k >= 0; k--)); do
      if [ "$(ps -o comm= -p "${pids[$k]}" 2>/dev/null)" = instauth ] && ps -o args= -p "${pids[$k]}" | grep -q ' serve '; then
        kill -TERM "${pids[$k]}" 2>/dev/null || true
        wait "${pids[$k]}" 2>/dev/null || true
        unset 'pids[k]'
      fi
    done
    pids=("${pids[@]}")
  done
done
stop_all
fi
stop_owner

python3 - "$WORK" "$DURATION" <<'PY'
import json, pathlib, re, sys

work, duration = pathlib.Path(sys.argv[1]), sys.argv[2]
res = work / "results"
def read(name):
    return json.loads((res / name).read_text())
def ok_rate(r):
    return r["statuses"].get("200", 0) / r["duration_s"]
def fmt(v, d=2):
    return "n/a" if v is None else f"{v:.{d}f}"

def wrk_cell(path):
    """(successful auths/s, p99 ms of all answers, non-2xx answers, statements per success)."""
    text = path.read_text()
    total, seconds, unit = re.search(r"(\d+) requests in ([0-9.]+)(ms|s|m)", text).groups()
    seconds = float(seconds) * {"ms": 0.001, "s": 1, "m": 60}[unit]
    non_2xx = int((re.search(r"Non-2xx or 3xx responses: (\d+)", text) or [0, 0])[1])
    p99 = re.search(r"\s99%\s+([0-9.]+)(us|ms|s)", text)
    p99_ms = float(p99.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)] if p99 else None
    s0, a0, s1, a1 = map(int, path.with_suffix(".metrics").read_text().split())
    ok = int(total) - non_2xx
    return ok / seconds, p99_ms, non_2xx, (s1 - s0) / (a1 - a0) if a1 > a0 else None

def median_cell(config, clients):
    cells = sorted((wrk_cell(p) for p in res.glob(f"overload.{config}.{clients}.*.wrk")), key=lambda c: c[0])
    return cells[len(cells) // 2] if cells else None

def pgbench_rate(path):
    m = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", path.read_text()) if path.exists() else None
    return float(m.group(1)) if m else None
pgbench_rounds = sorted(r for r in (pgbench_rate(p) for p in res.glob("pgbench.[0-9]*.txt")) if r)
pgbench = pgbench_rounds[len(pgbench_rounds) // 2] if pgbench_rounds else None

counts = sorted({int(p.name.split(".")[2]) for p in res.glob("overload.*.wrk")})
if counts:
    rounds = len(list(res.glob(f"overload.on.{counts[0]}.*.wrk")))
    print(f"(a) Overload: closed loop (wrk, 2 threads), pool 4, 2 agents per instance, 2 000 instances, "
          f"{duration} per cell, median of {rounds} interleaved rounds.\n")
    print("| Clients | Coalescing | Successful auths/s | p99 ms (all answers) | Non-2xx | SQL/auth |")
    print("|---|---|---|---|---|---|")
    rates = {}
    for clients in counts:
        for config in ["on", "off"]:
            rate, p99, non_2xx, sql = median_cell(config, clients)
            rates[(config, clients)] = rate
            print(f"| {clients} | {config} | {rate:.0f} | {fmt(p99)} | {non_2xx} | {fmt(sql, 3)} |")
    lo, hi = counts[0], counts[-1]
    print()
    print(f"Coalescing on: {hi} clients reach {rates[('on', hi)] / rates[('on', lo)]:.0%} of the rate at {lo} (target >= 90%); "
          f"off: {rates[('off', hi)] / rates[('off', lo)]:.0%}.")
    print(f"SQL per authentication at {lo} clients, coalesced: {fmt(median_cell('on', lo)[3], 3)} (target <= 0.2).")
    if pgbench:
        print(f"pgbench, the single statement, 4 clients, prepared, median of {len(pgbench_rounds)} rounds "
              f"({', '.join(f'{r:.0f}' for r in pgbench_rounds)}): {pgbench:.0f}/s; end to end at {lo} clients coalesced: "
              f"{rates[('on', lo)]:.0f}/s = {rates[('on', lo)] / pgbench:.2f}x (target >= 1.0).")
    # Each round's cells ran within a minute of each other; the machine drifts more than that
    # between rounds, so the ratios round by round show how far one median can be trusted.
    def by_round(ratio):
        values = [ratio(r) for r in range(1, rounds + 1)]
        values = [v for v in values if v is not None]
        if not values:
            return "n/a"
        return ", ".join(f"{v:.2f}" for v in values) + f" (median {sorted(values)[len(values) // 2]:.2f})"
    def round_rate(config, clients, r):
        path = res / f"overload.{config}.{clients}.{r}.wrk"
        return wrk_cell(path)[0] if path.exists() else None
    def overload_ratio(r):
        a, b = round_rate("on", lo, r), round_rate("on", hi, r)
        return b / a if a and b else None
    def end_to_end_ratio(r):
        a, b = round_rate("on", lo, r), pgbench_rate(res / f"pgbench.{r}.txt")
        return a / b if a and b else None
    print(f"By round, coalesced: {hi} against {lo} clients {by_round(overload_ratio)}; "
          f"{lo} clients against the pgbench cell right after it {by_round(end_to_end_ratio)}.")

if list(res.glob("storm.*.json")):
    print("\n(b) Fleet storms: N distinct agents at once, one connection each, Coder's retry, pool 10.\n")
    print("| Agents | Lookup | Authenticated | Makespan s | p99 to token ms | Requests | 503s | Wrong tokens | SQL/agent |")
    print("|---|---|---|---|---|---|---|---|---|")
    for agents in sorted({int(p.stem.split(".")[2]) for p in res.glob("storm.*.json")}):
        for config in ["on", "off", "coder-main", "azure", "google"]:
            if not (res / f"storm.{config}.{agents}.json").exists():
                continue
            r = read(f"storm.{config}.{agents}.json")
            t = r.get("time_to_token_ms") or {}
            label = {"on": "coalesced", "off": "batch off", "azure": "coalesced, Azure fleet",
                     "google": "coalesced, Google fleet"}.get(config, config)
            print(f"| {agents} | {label} | {r['authenticated']} | {fmt(r.get('makespan_s'))} | {fmt(t.get('p99'), 0)} | "
                  f"{r['requests']} | {r['statuses'].get('503', 0)} | {r['wrong_tokens']} | {fmt(r.get('statements_per_agent'), 3)} |")

cells = {}
for path in res.glob("distance.*.json"):
    _, config, *rest = path.stem.split(".")
    pool = rest[-1]; rtt = ".".join(rest[:-1])
    cells[(config, rtt, int(pool))] = ok_rate(json.loads(path.read_text()))
if cells:
    print("\n(c) Database distance: closed loop, 256 clients, round trip added by a delay proxy; pgbench: "
          "the single statement alone through the same proxy, 4 clients, prepared.\n")
    print("| Added round trip ms | Pool | coalesced auths/s | batch off | coder-main | coder-rc3 | pgbench statements/s |")
    print("|---|---|---|---|---|---|---|")
    for rtt in ["0", "0.5", "2"]:
        alone = pgbench_rate(res / f"pgbench.distance.{rtt}.txt")
        for pool in [4, 10]:
            row = [cells.get((c, rtt, pool)) for c in ["coalesced", "batch-off", "coder-main", "coder-rc3"]]
            print(f"| {rtt} | {pool} | " + " | ".join(fmt(v, 0) for v in row) + f" | {fmt(alone, 0)} |")
    print()
    for rtt in ["0", "0.5", "2"]:
        alone, c4 = pgbench_rate(res / f"pgbench.distance.{rtt}.txt"), cells.get(("coalesced", rtt, 4))
        if alone and c4:
            print(f"+{rtt} ms: coalesced end to end on a pool of 4 = {c4 / alone:.2f}x pgbench's single statement on 4 connections.")
c, b, m = cells.get(("coalesced", "2", 4)), cells.get(("batch-off", "2", 4)), cells.get(("coder-main", "2", 4))
if c and b and m:
    print(f"\n2 ms, pool 4: coalesced = {c / b:.1f}x batch-off (target >= 3), {c / m:.1f}x coder-main (target >= 10).")
PY
echo
echo "Load average (1, 5, 15 min) before the cells: $load_before; after: $(cut -d' ' -f1-3 /proc/loadavg)."
