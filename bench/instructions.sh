#!/usr/bin/env bash
# Instructions per call: the gateway benchmark (bench/gateway.sh) with the Tessera server and
# the bare proxy each run under valgrind's callgrind, which counts the instructions a process
# executes in user space (its own code and its libraries; not the kernel's work, nor Redis's
# or Postgres's). The count is the same from run to run for the same build and inputs, whatever
# else the machine is doing, so two builds can be compared to within a fraction of a per cent
# where CPU times on a shared machine differ by tens of per cent.
#
#   bash bench/instructions.sh [gateway-bench run options]
#
# Defaults to `--requests 300,640` (each run also makes its warm-up calls, counted too).
# Environment: as bench/gateway.sh (BENCH_DB, BENCH_SERVER_BIN, ...); BENCH_LITELLM is off.
# BENCH_PROFILES=<folder> keeps callgrind's files there (one per process and run, for
# `callgrind_annotate --inclusive=yes <file>`).
# Prints, for each run, the instructions per call (warm-up and measured calls) of the server
# (tessera rows) or of the proxy (bare proxy rows), and the server's per call over the proxy's
# in the same shape. Under valgrind every call is some twenty times slower, so the latencies
# and CPU times gateway.sh prints along the way mean nothing here.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
export PATH="$HOME/.cargo/bin:$PATH"
export LEPTOS_OUTPUT_NAME=tessera

command -v valgrind >/dev/null || { echo "valgrind is needed (Debian package valgrind)" >&2; exit 2; }
command -v callgrind_control >/dev/null || { echo "callgrind_control is needed (valgrind)" >&2; exit 2; }

if [ -z "${BENCH_SERVER_BIN:-}" ]; then
  cargo build --release -p server --bin server
fi
cargo build --release -p tessera-bench --bin gateway-bench
SERVER_BIN="${BENCH_SERVER_BIN:-$CARGO_TARGET_DIR/release/server}"

WORK="$(mktemp -d)"
BENCH_PID=""
cleanup() {
  if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
    kill "$BENCH_PID" 2>/dev/null || true
    wait "$BENCH_PID" 2>/dev/null || true
  fi
  if [ -n "${BENCH_PROFILES:-}" ]; then
    mkdir -p "$BENCH_PROFILES"
    cp "$WORK"/server.* "$WORK"/proxy.* "$BENCH_PROFILES"/ 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Counting starts off (the server's start, its migrations and the clinics' set-up are not
# calls) and is switched on once the first run is over.
CALLGRIND=(valgrind --tool=callgrind --instr-atstart=no --dump-instr=no)
cat > "$WORK/server" <<EOF
#!/usr/bin/env bash
exec ${CALLGRIND[*]} --callgrind-out-file=$WORK/server.%p "$SERVER_BIN" "\$@"
EOF
chmod +x "$WORK/server"
export BENCH_PROXY_WRAPPER="${CALLGRIND[*]} --callgrind-out-file=$WORK/proxy.%p"

if [ $# -eq 0 ]; then set -- --requests 300,640; fi
set -- --pause-ms 1000 "$@"
BENCH_SERVER_BIN="$WORK/server" BENCH_LITELLM=0 BENCH_OUT="$WORK/runs.json" \
  bash bench/gateway.sh "$@" > "$WORK/bench.log" 2>&1 &
BENCH_PID=$!

# Each run prints one line when it ends, and the benchmark then waits (`--pause-ms`). Counting
# is switched on after the first line; the server's count is dumped (and zeroed) after every
# line, the proxy's after the lines of its own runs, each dump named after its line. Callgrind
# takes a command only while the process runs: the server wakes by itself (its timers), the
# proxy, idle between its runs, is sent one request (a 404) to take it at once.
pid_of() { pgrep -f "callgrind-out-file=$WORK/$1" | head -1; }
poke() {
  local port
  port="$(ss -ltnpH 2>/dev/null | awk -v p="pid=$1," 'index($0, p) { split($4, a, ":"); print a[length(a)]; exit }')"
  if [ -n "$port" ]; then curl -s -o /dev/null "http://127.0.0.1:$port/" || true; fi
}
command_to() { # server|proxy, then callgrind_control's arguments
  local who="$1" pid sent
  pid="$(pid_of "$who")"
  [ -n "$pid" ] || return 0
  shift
  callgrind_control "$@" "$pid" >/dev/null 2>&1 &
  sent=$!
  if [ "$who" = proxy ]; then
    sleep 0.3
    poke "$pid"
  fi
  wait "$sent" || true
}
seen=0
while kill -0 "$BENCH_PID" 2>/dev/null; do
  lines="$(grep -c ' c=' "$WORK/bench.log" 2>/dev/null || true)"
  while [ "$seen" -lt "${lines:-0}" ]; do
    seen=$((seen + 1))
    line="$(grep ' c=' "$WORK/bench.log" | sed -n "${seen}p")"
    if [ "$seen" -eq 1 ]; then
      command_to server -i on
      command_to proxy -i on
    else
      command_to server -d "run$seen"
      if [[ "$line" == "bare proxy"* ]]; then command_to proxy -d "run$seen"; fi
    fi
  done
  sleep 0.2
done
BENCH_PID_STATUS=0
wait "$BENCH_PID" || BENCH_PID_STATUS=$?
BENCH_PID=""
if [ "$BENCH_PID_STATUS" -ne 0 ]; then
  tail -n 30 "$WORK/bench.log" >&2
  echo "the benchmark failed" >&2
  exit 1
fi

python3 - "$WORK" <<'EOF'
import glob, json, os, re, sys

work = sys.argv[1]
runs = json.load(open(os.path.join(work, "runs.json")))["runs"]

def totals(who):
    """Run number (counted from 1) -> instructions, of the one process of this kind."""
    out = {}
    for f in glob.glob(os.path.join(work, who + ".*")):
        run, total = None, None
        for line in open(f, errors="replace"):
            m = re.match(r"desc: Trigger: dump run(\d+)", line)
            if m:
                run = int(m.group(1))
            if line.startswith("summary:"):
                total = int(line.split()[1])
        if run is not None and total is not None:
            out[run] = total
    return out

server, proxy = totals("server"), totals("proxy")
print("| path | body | concurrency | calls | instructions per call | ÷ bare proxy |")
print("|---|---|---:|---:|---:|---:|")
per_proxy = {}
for i, r in enumerate(runs):
    dump = i + 1
    calls = r["requests"] + r["warmup"]
    if r["path"] == "bare proxy" and dump in proxy:
        per_proxy[(r["body"], r["concurrency"])] = proxy[dump] / calls
for i, r in enumerate(runs):
    dump = i + 1
    calls = r["requests"] + r["warmup"]
    source = proxy if r["path"] == "bare proxy" else server
    if r["path"] == "direct" or dump not in source:
        continue
    per_call = source[dump] / calls
    base = per_proxy.get((r["body"], r["concurrency"]))
    ratio = f"{per_call / base:.2f}×" if base and r["path"] != "bare proxy" else ""
    print(f'| {r["path"]} | {r["body"]} | {r["concurrency"]} | {calls} | {per_call:,.0f} | {ratio} |')
EOF
