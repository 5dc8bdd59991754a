#!/usr/bin/env bash
# The gateway benchmark (see bench/README.md): builds the release binaries, starts the provider
# simulator and a Tessera server on free ports with their own database and Redis key prefix,
# runs gateway-bench against them, and stops everything on exit.
#
#   bash bench/gateway.sh [gateway-bench run options, e.g. --requests 400,4000]
#
# Environment: BENCH_DB (database name, default tessera_bench), BENCH_OUT (JSON results,
# default $CARGO_TARGET_DIR/gateway-bench.json), RUST_LOG (the server's, default warn),
# SIM_LATENCY_MS (the simulator's wait before each answer, default 0),
# BENCH_LITELLM (1, the default: LiteLLM's proxy measured too; 0: left out),
# BENCH_SERVER_BIN (a Tessera server binary to measure instead of this checkout's release
# build, for comparing two builds in one go),
# BENCH_SIM (`bench`, the default: testkit's simulator served by `gateway-bench sim` with
# TCP_NODELAY; `provider-sim`: the testkit binary, whose streamed replies stall ~40 ms on a
# kept-alive connection),
# BENCH_WORKERS (runtime threads of the Tessera server and of the bare proxy, the same for
# both; default: Tokio's, one per core. The simulator and the load generator keep the default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
export PATH="$HOME/.cargo/bin:$PATH"
# Read at compile time by the Leptos crates: the same value as every other build shares it.
export LEPTOS_OUTPUT_NAME=tessera
# Every hop is on loopback; never through a proxy from the environment.
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

BENCH_DB="${BENCH_DB:-tessera_bench}"
BENCH_OUT="${BENCH_OUT:-$CARGO_TARGET_DIR/gateway-bench.json}"
BENCH_SIM="${BENCH_SIM:-bench}"
# LiteLLM's proxy in the same run (installed from PyPI on first use); 0 leaves it out.
BENCH_LITELLM="${BENCH_LITELLM:-1}"
# LiteLLM is measured on chat completions only: not started for a run of the Responses API.
prev=""
for arg in "$@"; do
  if [ "$prev" = --api ] && [ "$arg" = responses ]; then BENCH_LITELLM=0; fi
  prev="$arg"
done
BENCH_WORKERS="${BENCH_WORKERS:-}"
case "$BENCH_WORKERS" in
  "" | [1-9] | [1-9][0-9]) ;;
  *) echo "BENCH_WORKERS must be a whole number from 1 to 99 (got $BENCH_WORKERS)" >&2; exit 2 ;;
esac
# Nothing else started here inherits a thread count from the caller's environment.
unset TOKIO_WORKER_THREADS
LITELLM_VERSION="1.108.5"
case "$BENCH_SIM" in
  bench | provider-sim) ;;
  *) echo "BENCH_SIM must be bench or provider-sim (got $BENCH_SIM)" >&2; exit 2 ;;
esac
PG="127.0.0.1:5432"
REDIS_HOST=127.0.0.1
REDIS_PORT=6379

log() { printf '\033[1;36m==> %s\033[0m\n' "$*" >&2; }

# --- PostgreSQL, Redis and the database roles ------------------------------------------------
ready() {
  pg_isready -q -h "${PG%:*}" -p "${PG#*:}" 2>/dev/null \
    && [ "$(redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = "PONG" ] \
    && PGPASSWORD=tessera psql -h "${PG%:*}" -p "${PG#*:}" -U tessera_owner -d tessera -tAc 'SELECT 1' >/dev/null 2>&1
}
if ! ready; then
  log "PostgreSQL, Redis or the database roles are missing: running scripts/setup.sh"
  bash scripts/setup.sh
fi

# --- release builds --------------------------------------------------------------------------
log "building the release binaries (long the first time)"
if [ -z "${BENCH_SERVER_BIN:-}" ]; then
  cargo build --release -p server --bin server
fi
if [ "$BENCH_SIM" = provider-sim ]; then
  cargo build --release -p testkit --bin provider-sim
fi
cargo build --release -p tessera-bench --bin gateway-bench
BIN="$CARGO_TARGET_DIR/release"
SERVER_BIN="${BENCH_SERVER_BIN:-$BIN/server}"
[ -x "$SERVER_BIN" ] || { echo "BENCH_SERVER_BIN: $SERVER_BIN is not an executable" >&2; exit 2; }
if [ "$BENCH_SIM" = provider-sim ]; then
  SIM_CMD=("$BIN/provider-sim")
else
  SIM_CMD=("$BIN/gateway-bench" sim)
fi

# --- processes -------------------------------------------------------------------------------
WORK="$(mktemp -d)"
SIM_PID=""
SERVER_PID=""
LITELLM_PID=""
REDIS_PREFIX="bench:$(date +%s):$$:"
cleanup() {
  local status=$?
  for pid in "$SERVER_PID" "$SIM_PID" "$LITELLM_PID"; do
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      wait "$pid" 2>/dev/null || true
    fi
  done
  # The run's Redis keys (counters, the drained ledger stream).
  redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" --scan --pattern "${REDIS_PREFIX}*" 2>/dev/null \
    | xargs -r redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" del >/dev/null 2>&1 || true
  if [ "$status" -ne 0 ]; then
    for f in "$WORK"/*.log; do
      [ -s "$f" ] || continue
      echo "--- last lines of $(basename "$f")" >&2
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A port nothing listens on (the server needs a fixed one; the simulator picks its own).
# Chosen below the range the kernel hands out to outgoing connections: a port one of those holds
# (to Postgres, Redis, the simulator) answers nothing, yet refuses a listener.
free_port() {
  local port low
  low="$(awk '{ print $1 }' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)"
  [ "${low:-0}" -gt 11000 ] 2>/dev/null || low=32768
  for _ in $(seq 1 100); do
    port=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "$port"
      return 0
    fi
  done
  echo "no free port found" >&2
  return 1
}

SIM_LATENCY_MS="${SIM_LATENCY_MS:-0}"
log "starting the provider simulator (${SIM_CMD[*]##*/}, SIM_LATENCY_MS=$SIM_LATENCY_MS)"
SIM_LATENCY_MS="$SIM_LATENCY_MS" SIM_CHUNK_MS=0 "${SIM_CMD[@]}" 127.0.0.1:0 >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
SIM_URL=""
for _ in $(seq 1 100); do
  SIM_URL="$(sed -n 's/^provider simulator listening on \(http:.*\)$/\1/p' "$WORK/sim.log")"
  [ -n "$SIM_URL" ] && break
  kill -0 "$SIM_PID" 2>/dev/null || { echo "the simulator exited" >&2; exit 1; }
  sleep 0.1
done
[ -n "$SIM_URL" ] || { echo "the simulator did not start" >&2; exit 1; }

PORT="$(free_port)"
export DATABASE_URL="postgres://tessera_app:tessera@$PG/$BENCH_DB"
export DATABASE_ADMIN_URL="postgres://tessera_owner:tessera@$PG/$BENCH_DB"
export REDIS_URL="redis://$REDIS_HOST:$REDIS_PORT"
export TESSERA_REDIS_PREFIX="$REDIS_PREFIX"
export TESSERA_PUBLIC_URL="http://127.0.0.1:$PORT"
export OPENAI_BASE_URL="$SIM_URL/v1"
export ANTHROPIC_BASE_URL="$SIM_URL/anthropic"
export LEPTOS_SITE_ADDR="127.0.0.1:$PORT"
export LEPTOS_SITE_ROOT="$CARGO_TARGET_DIR/site"
export LEPTOS_SITE_PKG_DIR=pkg
export RUST_LOG="${RUST_LOG:-warn}"
# The compatible path's endpoint is the simulator, on loopback.
export TESSERA_ALLOW_PRIVATE_ENDPOINTS=true

log "starting Tessera on 127.0.0.1:$PORT (database $BENCH_DB, Redis prefix $REDIS_PREFIX)"
if [ -n "$BENCH_WORKERS" ]; then
  TOKIO_WORKER_THREADS="$BENCH_WORKERS" "$SERVER_BIN" serve >"$WORK/server.log" 2>&1 &
else
  "$SERVER_BIN" serve >"$WORK/server.log" 2>&1 &
fi
SERVER_PID=$!
for _ in $(seq 1 120); do
  curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" 2>/dev/null && break
  kill -0 "$SERVER_PID" 2>/dev/null || { echo "the server exited" >&2; exit 1; }
  sleep 0.5
done
curl -fsS -o /dev/null "http://127.0.0.1:$PORT/readyz" || { echo "the server is not ready" >&2; exit 1; }

# --- LiteLLM, behind the same simulator --------------------------------------------------------
LITELLM_ARGS=()
if [ "$BENCH_LITELLM" != 0 ]; then
  LITELLM_VENV="${LITELLM_VENV:-$HOME/.cache/tessera/litellm-venv}"
  if [ "$(cat "$LITELLM_VENV/.tessera-req" 2>/dev/null)" != "$LITELLM_VERSION" ]; then
    log "installing litellm[proxy]==$LITELLM_VERSION into $LITELLM_VENV"
    python3 -m venv "$LITELLM_VENV"
    "$LITELLM_VENV/bin/pip" install --quiet --disable-pip-version-check "litellm[proxy]==$LITELLM_VERSION"
    echo "$LITELLM_VERSION" > "$LITELLM_VENV/.tessera-req"
  fi
  LITELLM_PORT="$(free_port)"
  LITELLM_KEY="sk-bench-master-$$"
  log "starting LiteLLM $LITELLM_VERSION on 127.0.0.1:$LITELLM_PORT (one worker)"
  # Without a database: LiteLLM would otherwise take DATABASE_URL (Tessera's) for its own.
  (cd "$WORK" && exec env -u DATABASE_URL -u DATABASE_ADMIN_URL LITELLM_LOCAL_MODEL_COST_MAP=True LITELLM_MASTER_KEY="$LITELLM_KEY" \
    BENCH_SIM_V1="$SIM_URL/v1" BENCH_REDIS_HOST="$REDIS_HOST" BENCH_REDIS_PORT="$REDIS_PORT" \
    LITELLM_LOG=ERROR "$LITELLM_VENV/bin/litellm" --config "$ROOT/bench/litellm.yaml" \
    --host 127.0.0.1 --port "$LITELLM_PORT" --num_workers 1) >"$WORK/litellm.log" 2>&1 &
  LITELLM_PID=$!
  for _ in $(seq 1 240); do
    curl -fsS -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" 2>/dev/null && break
    kill -0 "$LITELLM_PID" 2>/dev/null || { echo "LiteLLM exited" >&2; exit 1; }
    sleep 0.5
  done
  curl -fsS -o /dev/null "http://127.0.0.1:$LITELLM_PORT/health/liveliness" || { echo "LiteLLM is not ready" >&2; exit 1; }
  LITELLM_ARGS=(--litellm "http://127.0.0.1:$LITELLM_PORT" --litellm-key "$LITELLM_KEY" --litellm-pid "$LITELLM_PID")
fi

log "running the benchmark"
"$BIN/gateway-bench" run \
  --sim "$SIM_URL" \
  --tessera "http://127.0.0.1:$PORT" \
  --server-pid "$SERVER_PID" \
  --sim-pid "$SIM_PID" \
  --out "$BENCH_OUT" \
  ${BENCH_WORKERS:+--proxy-workers "$BENCH_WORKERS"} \
  "${LITELLM_ARGS[@]}" \
  "$@"
