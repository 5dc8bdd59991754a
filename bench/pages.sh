#!/usr/bin/env bash
# The page-speed benchmark (see bench/README.md, "Pages"): builds Tessera in release (server and
# wasm, as the image does), serves it against a fresh database with the provider simulator, and
# times how long the chat page and the sign-in page take to become interactive in Chromium,
# plus the wasm's size as built (and optimised by wasm-opt, as in the image) and as served.
#
#   bash bench/pages.sh            (BENCH_ROUNDS=15 loads of each page by default)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
export PATH="$HOME/.cargo/bin:$PATH"
export LEPTOS_OUTPUT_NAME=tessera
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
log() { printf '\033[1;36m==> %s\033[0m\n' "$*" >&2; }

if ! command -v cargo-leptos >/dev/null || [ ! -d end2end/node_modules ] \
  || ! pg_isready -q -h 127.0.0.1 2>/dev/null; then
  log "tools, packages or PostgreSQL missing: running scripts/setup.sh"
  bash scripts/setup.sh
fi

# cargo-leptos runs Binaryen's wasm-opt on the release wasm, as the image's build does (the same
# version, from npm), into a cache of its own.
BINARYEN_VERSION="$(sed -n 's/^ARG BINARYEN_VERSION=//p' deploy/Dockerfile)"
BINARYEN_DIR="$HOME/.cache/tessera/binaryen-$BINARYEN_VERSION"
if [ ! -x "$BINARYEN_DIR/node_modules/.bin/wasm-opt" ]; then
  log "installing Binaryen $BINARYEN_VERSION (wasm-opt) from npm"
  npm install --prefix "$BINARYEN_DIR" --no-audit --no-fund --silent "binaryen@$BINARYEN_VERSION"
fi
export PATH="$BINARYEN_DIR/node_modules/.bin:$PATH"

log "building Tessera in release (long the first time)"
# A site of its own, so the debug build's site (the tests') is left as it is.
export LEPTOS_SITE_ROOT=target/bench-site
cargo leptos build --release
cargo build --release -p testkit --bin provider-sim

DB=tessera_bench_pages
PGPASSWORD=tessera psql -h 127.0.0.1 -U tessera_owner -d tessera -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
cd end2end
E2E_PORT=3300 \
  E2E_DATABASE_URL="postgres://tessera_app:tessera@127.0.0.1:5432/$DB" \
  E2E_DATABASE_ADMIN_URL="postgres://tessera_owner:tessera@127.0.0.1:5432/$DB" \
  TESSERA_SERVER_BIN="$CARGO_TARGET_DIR/release/server" \
  TESSERA_SIM_BIN="$CARGO_TARGET_DIR/release/provider-sim" \
  npx playwright test --config bench.config.ts
cd ..
PGPASSWORD=tessera psql -h 127.0.0.1 -U tessera_owner -d tessera -q -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
