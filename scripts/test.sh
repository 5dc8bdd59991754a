#!/usr/bin/env bash
# Sets everything up (see setup.sh), then runs every test: the core against real Postgres and
# Redis, the server's HTTP tests against the real router, and Playwright in Chromium against
# the built server.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

# #[sqlx::test] makes a fresh database per test from here (tessera_owner may create databases).
export DATABASE_URL="${TEST_DATABASE_URL:-postgres://tessera_owner:tessera@127.0.0.1:5432/tessera_test}"

# Never workspace-wide: that would turn on the app's server and browser features together.
# The native packages go in one invocation (sharing one set of compiled dependencies, with the
# app's server side on), the browser side in another.
NATIVE=(-p tessera-types -p tessera-core -p testkit -p app -p server -p tessera-bench)

log "formatting"
cargo fmt --all --check

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
