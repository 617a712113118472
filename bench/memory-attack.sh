#!/usr/bin/env bash
# Memory under slow bodies (docs/benchmarks.md, "Memory under slow bodies"), issue 12 item 8:
# CONNECTIONS connections at once, each sending the head of an AWS authentication that
# declares DECLARED body bytes, then SENT of them, then stalling until the server answers
# (503 at once, or 408 at the body deadline) or hangs up. Prints the server's resident memory
# (/proc/PID/status VmRSS) before, its peak (VmHWM) and VmRSS AFTER seconds after the last
# attack connection ended, and how the attack connections ended. Loopback only.
#
#   bench/memory-attack.sh                       # the release build of this tree
#   BIN=path/to/instauth bench/memory-attack.sh  # another build (e.g. an older commit's)
#
# Knobs (environment): CONNECTIONS (3000), DECLARED (65536), SENT (61440), AFTER (15),
# PORT (3960), WORK (target/memory-attack, wiped first), SERVE_FLAGS (extra `serve` flags,
# e.g. "--max-buffered-body-bytes 8MiB"), BIN (skips the build). Needs python3 and curl.
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in python3 curl; do
  command -v "$tool" >/dev/null || { echo "memory-attack: $tool not found" >&2; exit 2; }
done

CONNECTIONS=${CONNECTIONS:-3000}
DECLARED=${DECLARED:-65536}
SENT=${SENT:-61440}
AFTER=${AFTER:-15}
PORT=${PORT:-3960}
WORK=${WORK:-target/memory-attack}
SERVE_FLAGS=${SERVE_FLAGS:-}
ulimit -n 20000 2>/dev/null || true
if [ -z "${BIN:-}" ]; then
  cargo build --release --bin instauth >&2
  BIN="${CARGO_TARGET_DIR:-target}/release/instauth"
fi

rm -rf "$WORK"
mkdir -p "$WORK"
export RUST_LOG=warn
# For its server's environment (Google's keys on a closed loopback port, not fetched).
# shellcheck source=bench/lib.sh
source bench/lib.sh
# shellcheck disable=SC2086 # SERVE_FLAGS is a list of flags
env -u DATABASE_URL "$BIN" serve --data-dir "$WORK/db" --bind "127.0.0.1:$PORT" $SERVE_FLAGS \
  2>>"$WORK/serve.log" &
server=$!
trap 'kill -TERM $server 2>/dev/null || true; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 150); do
  curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null

python3 - "$server" "$PORT" "$CONNECTIONS" "$DECLARED" "$SENT" "$AFTER" <<'EOF'
import asyncio, collections, sys, time

pid, port, connections, declared, sent, after = sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:])

def status(field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024  # MiB
    raise SystemExit(f"no {field} for {pid}")

endings = collections.Counter()

async def attack():
    head = (f"POST /api/v2/workspaceagents/aws-instance-identity HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n").encode()
    body = b'{"signature": "' + b"A" * (sent - 15)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError as err:
        endings[f"connect failed: {err.strerror}"] += 1
        return
    try:
        writer.write(head + body)
        # The answer may come before the server read everything (503 at once): read while writing.
        drain = asyncio.ensure_future(writer.drain())
        line = await asyncio.wait_for(reader.readline(), 60)
        drain.cancel()
        endings[line.decode(errors="replace").strip()[:12] or "closed"] += 1
    except (OSError, asyncio.TimeoutError) as err:
        endings[type(err).__name__] += 1
    finally:
        writer.close()

samples = []

async def sample(started):
    while True:
        samples.append((time.monotonic() - started, status("VmRSS")))
        await asyncio.sleep(0.5)

async def main():
    before = status("VmRSS")
    started = time.monotonic()
    sampler = asyncio.ensure_future(sample(started))
    await asyncio.gather(*(attack() for _ in range(connections)))
    ended = time.monotonic()
    sampler.cancel()
    await asyncio.sleep(after)
    print(f"connections {connections}, declared {declared} B, sent {sent} B each")
    print(f"VmRSS before:            {before:7.1f} MiB")
    print(f"VmHWM (peak):            {status('VmHWM'):7.1f} MiB")
    print(f"VmRSS {after} s after the end: {status('VmRSS'):7.1f} MiB")
    print("VmRSS during the attack (s: MiB): " + ", ".join(f"{t:.1f}: {m:.0f}" for t, m in samples[::2]))
    print(f"attack lasted {ended - started:.1f} s; endings: " +
          ", ".join(f"{k!r} {v}" for k, v in sorted(endings.items())))

asyncio.run(main())
EOF
