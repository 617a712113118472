#!/usr/bin/env bash
# Two builds side by side: the working tree's and an earlier revision's, on one embedded
# cluster, in alternating closed-loop cells, so that a change's effect is told apart from the
# machine's drift (docs/benchmarks.md, "Two builds in one run"). Loopback only.
#
#   bench/builds.sh 7e0cea9      # the working tree against revision 7e0cea9
#
# For each round, client count and build: one wrk cell (bench/wrk-corpus.lua) against that
# build's server (pool 4, --db-batch-max 64), measuring successful auths/s, the service's CPU
# per authentication, PostgreSQL's (every process of the cluster) and statements per
# authentication. The servers not loaded idle meanwhile. Keeps each cell in $WORK/cells and
# prints a Markdown table of medians, then each round's ratios: per build, the last client count
# against the first, and per client count, this tree against the revision.
#
# Knobs (environment): DURATION per cell (5s), CLIENTS ("256 4000"), ROUNDS (6), PORT (3930),
# WORK (target/builds/run, wiped first), HERE_FLAGS and REV_FLAGS (more `serve` flags for
# either side, word-split: `REV_FLAGS="--max-connections 512" bench/builds.sh HEAD` compares
# one setting on the same code). The revision is built once into
# target/builds/<commit>/target and kept: a target directory of its own, because a second
# checkout of the same package building into this tree's target directory leaves cargo's
# fingerprints pointing at the other checkout's sources, and a later build here can keep the
# other checkout's binary. Both servers run this tree's schema (`--no-migrate`), so the
# revision must read the same tables. Both are built with `--features legacy`, as
# bench/goodput.sh builds. Needs wrk, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 1 ] || { echo "usage: bench/builds.sh REVISION" >&2; exit 2; }
for tool in wrk curl python3 git; do
  command -v "$tool" >/dev/null || { echo "builds: $tool not found" >&2; exit 2; }
done
commit=$(git rev-parse --verify "$1^{commit}")
DURATION=${DURATION:-5s}
CLIENTS=${CLIENTS:-"256 4000"}
ROUNDS=${ROUNDS:-6}
PORT=${PORT:-3930}
WORK=${WORK:-target/builds/run}
ulimit -n 20000 2>/dev/null || true

TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release --features legacy >&2
here_bin="$TARGET_DIR/release/instauth"
rev_dir="target/builds/$commit"
if [ ! -x "$rev_dir/target/release/instauth" ]; then
  # A run stopped during the build leaves a worktree git still has registered.
  rm -rf "$rev_dir/src"
  git worktree prune
  mkdir -p "$rev_dir"
  git worktree add --detach "$rev_dir/src" "$commit" >&2
  (cd "$rev_dir/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --features legacy >&2)
  git worktree remove --force "$rev_dir/src"
fi
rev_bin="$rev_dir/target/release/instauth"

rm -rf "$WORK"
mkdir -p "$WORK"
export RUST_LOG=warn
"$here_bin" seed --data-dir "$WORK/db" --prefix sg --workspaces 2000 --agents-per-instance 2 \
  --out "$WORK/sg" >&2
db_url="postgres://postgres:$(cat "$WORK/db/password")@127.0.0.1:$(cat "$WORK/db/port")/postgres"

# shellcheck source=bench/lib.sh
source bench/lib.sh
trap 'stop_all; stop_owner' EXIT
start_owner "$here_bin" "$WORK/db" "$WORK/sg/aws-certificate.pem" "$PORT"

declare -A port=([here]=$((PORT + 1)) [rev]=$((PORT + 2))) server=()
for build in here rev; do
  bin=$here_bin flags=${HERE_FLAGS:-}
  [ "$build" = rev ] && bin=$rev_bin flags=${REV_FLAGS:-}
  # shellcheck disable=SC2086 # the flags are meant to split into words
  start_server "$bin" "${port[$build]}" "$db_url" "$WORK/sg/aws-certificate.pem" \
    --db-max-connections 4 --db-batch-max 64 $flags
  server[$build]=$started
done

wrk_cell() { # duration clients port
  wrk -t2 -c"$2" -d"$1" --timeout 30s -s bench/wrk-corpus.lua "http://127.0.0.1:$3" \
    -- "$WORK/sg/corpus.jsonl" >/dev/null
}
for build in here rev; do wrk_cell 2s 256 "${port[$build]}"; done

hz=$(getconf CLK_TCK)
for round in $(seq "$ROUNDS"); do
  for clients in $CLIENTS; do
    for build in here rev; do
      read -r s0 a0 < <(metric_sums "${port[$build]}")
      c0=$(ticks "${server[$build]}")
      g0=$(cluster_ticks)
      t0=$(date +%s.%N)
      wrk_cell "$DURATION" "$clients" "${port[$build]}"
      t1=$(date +%s.%N)
      read -r s1 a1 < <(metric_sums "${port[$build]}")
      c1=$(ticks "${server[$build]}")
      g1=$(cluster_ticks)
      echo "$round $clients $build $t0 $t1 $((a1 - a0)) $((s1 - s0)) $((c1 - c0)) $((g1 - g0))"
    done
  done
done >"$WORK/cells"

python3 - "$WORK/cells" "$hz" "$commit" "$CLIENTS" "${HERE_FLAGS:-}" "${REV_FLAGS:-}" <<'EOF'
import collections, statistics, sys
cells, hz, commit, clients = sys.argv[1], int(sys.argv[2]), sys.argv[3][:7], sys.argv[4].split()
rows = collections.defaultdict(list)
tick_us = 1e6 / hz
for line in open(cells):
    r, c, build, t0, t1, auths, sql, svc, pg = line.split()
    auths = int(auths)
    if auths == 0:
        sys.exit(f"round {r}, {c} clients, {build}: no successful authentication")
    rows[(c, build)].append((int(r), auths / (float(t1) - float(t0)),
                             int(svc) * tick_us / auths, int(pg) * tick_us / auths,
                             int(sql) / auths))
name = {"here": "working tree " + sys.argv[5], "rev": commit + " " + sys.argv[6]}
name = {k: v.strip() for k, v in name.items()}
print(f"Two builds, pool 4, --db-batch-max 64, {len(rows[(clients[0], 'here')])} interleaved rounds, medians.\n")
print("| Clients | Build | Successful auths/s | Service CPU µs/auth | PostgreSQL CPU µs/auth | SQL/auth |")
print("|---|---|---|---|---|---|")
for c in clients:
    for build in ("here", "rev"):
        cell = rows[(c, build)]
        med = [statistics.median(x[i] for x in cell) for i in range(1, 5)]
        print(f"| {c} | {name[build]} | {med[0]:.0f} | {med[1]:.1f} | {med[2]:.1f} | {med[3]:.3f} |")
print()
first, last = clients[0], clients[-1]
for build in ("here", "rev"):
    ratios = [b[1] / a[1] for a, b in zip(rows[(first, build)], rows[(last, build)])]
    print(f"{name[build]}: {last} against {first} clients, by round: "
          + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
for c in clients:
    ratios = [h[1] / r[1] for h, r in zip(rows[(c, "here")], rows[(c, "rev")])]
    print(f"{c} clients, {name['here']} against {name['rev']}, by round: "
          + ", ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
EOF
