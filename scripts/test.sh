#!/usr/bin/env bash
# Sets everything up (see setup.sh), then runs every test: the core against real Postgres and
# Redis, the server's HTTP tests against the real router, and Playwright in Chromium against
# the built server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# #[sqlx::test] makes a fresh database per test from here (tessera_owner may create databases).
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://tessera_owner:tessera@127.0.0.1:5432/tessera_test}"

# Qdrant for the second run of the vector store suite (core/tests/vector_index.rs): the one
# QDRANT_URL names, else a server of this run's own on loopback when a Qdrant build is at hand
# (cached from an earlier run, or unpacked from ../shared/qdrant next to the checkout). Without
# one, the suite says that its Qdrant run was skipped.
if [ -z "${QDRANT_URL:-}" ]; then
  QDRANT_BIN="$HOME/.cache/tessera/qdrant"
  QDRANT_XZ="$ROOT/../shared/qdrant/qdrant-1.18.3-x86_64-linux.xz"
  if [ ! -x "$QDRANT_BIN" ] && [ -f "$QDRANT_XZ" ] && command -v xz >/dev/null; then
    log "unpacking Qdrant"
    mkdir -p "$(dirname "$QDRANT_BIN")"
    xz -dc "$QDRANT_XZ" > "$QDRANT_BIN.tmp"
    if [ -f "${QDRANT_XZ%.xz}.sha256" ] \
      && [ "$(sha256sum "$QDRANT_BIN.tmp" | cut -d' ' -f1)" != "$(cut -d' ' -f1 < "${QDRANT_XZ%.xz}.sha256")" ]; then
      echo "the unpacked Qdrant does not match its checksum" >&2
      rm -f "$QDRANT_BIN.tmp"
    else
      chmod +x "$QDRANT_BIN.tmp" && mv "$QDRANT_BIN.tmp" "$QDRANT_BIN"
    fi
  fi
  if [ -x "$QDRANT_BIN" ]; then
    QDRANT_DATA="$(mktemp -d)"
    QDRANT_HTTP=16333
    QDRANT_GRPC=16334
    log "starting Qdrant on 127.0.0.1:$QDRANT_GRPC"
    QDRANT__SERVICE__HOST=127.0.0.1 QDRANT__SERVICE__HTTP_PORT=$QDRANT_HTTP \
      QDRANT__SERVICE__GRPC_PORT=$QDRANT_GRPC QDRANT__STORAGE__STORAGE_PATH="$QDRANT_DATA" \
      QDRANT__TELEMETRY_DISABLED=true "$QDRANT_BIN" > "$QDRANT_DATA/qdrant.log" 2>&1 &
    QDRANT_PID=$!
    trap 'kill "$QDRANT_PID" 2>/dev/null || true; rm -rf "$QDRANT_DATA"' EXIT
    for _ in $(seq 1 60); do
      curl -sf "http://127.0.0.1:$QDRANT_HTTP/readyz" >/dev/null 2>&1 && break
      sleep 0.5
    done
    if curl -sf "http://127.0.0.1:$QDRANT_HTTP/readyz" >/dev/null 2>&1; then
      export QDRANT_URL="http://127.0.0.1:$QDRANT_GRPC"
    else
      log "Qdrant did not start (see $QDRANT_DATA/qdrant.log); its run of the vector store suite is skipped"
    fi
  else
    log "no Qdrant at hand: the Qdrant run of the vector store suite is skipped"
  fi
fi

# Never workspace-wide: that would turn on the app's server and browser features together.
# The native packages go in one invocation (sharing one set of compiled dependencies, with the
# app's server side on), the browser side in another.
NATIVE=(-p tessera-types -p tessera-core -p testkit -p app -p server -p tessera-bench)

log "formatting"
cargo fmt --all --check

log "deployment files (compose, Kubernetes, Dockerfile)"
bash "$ROOT/scripts/validate-deploy.sh"

log "lints (server side, then browser side)"
cargo clippy "${NATIVE[@]}" --all-targets -- -D warnings
cargo clippy -p frontend --target wasm32-unknown-unknown -- -D warnings

# This also builds the `server` binary and the provider simulator the end-to-end tests run.
log "types, core, app and server tests"
cargo test "${NATIVE[@]}"

log "building the browser side (wasm, CSS, static files)"
cargo leptos build --frontend-only

log "end-to-end tests"
# A fresh database for each run; the server creates and migrates it at start.
PGPASSWORD=tessera psql -h 127.0.0.1 -U tessera_owner -d tessera_test -q \
  -c 'DROP DATABASE IF EXISTS tessera_e2e WITH (FORCE)'
(cd end2end && TESSERA_SERVER_BIN="$CARGO_TARGET_DIR/debug/server" \
  TESSERA_SIM_BIN="$CARGO_TARGET_DIR/debug/provider-sim" npx playwright test)

log "all tests passed"
