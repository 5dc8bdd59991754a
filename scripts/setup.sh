#!/usr/bin/env bash
# Installs what Tessera needs when it is missing, starts PostgreSQL and Redis when they are not
# answering, and creates the database roles. Idempotent, and quick when everything is there.
# Sourced by serve.sh and test.sh; runs as root or with sudo on Debian or Ubuntu.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

CARGO_LEPTOS_VERSION="0.3.7"
# The wasm-bindgen CLI must match the crate in Cargo.lock exactly.
WASM_BINDGEN_VERSION="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/version = |"/, ""); print; exit }' Cargo.lock)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
# CI builds each fresh checkout once: incremental caches (kept per checkout path) would only
# fill the disk.
if [ -n "${CI:-}" ]; then export CARGO_INCREMENTAL=0; fi
export PATH="$HOME/.cargo/bin:$PATH"
# cargo-leptos sets this while building; setting it for plain cargo too keeps one shared build
# (it is read at compile time, so a difference would rebuild the Leptos crates).
export LEPTOS_OUTPUT_NAME=tessera
PG_HOST=127.0.0.1
PG_PORT=5432

log() { printf '\033[1;36m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

APT_UPDATED=0
apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  if [ "$APT_UPDATED" = 0 ]; then as_root apt-get update -qq; APT_UPDATED=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

# --- system packages -------------------------------------------------------------------------
command -v psql >/dev/null || apt_install postgresql-client
command -v redis-cli >/dev/null || apt_install redis-tools
# The fault tests start (and kill) a Redis server of their own.
command -v redis-server >/dev/null || apt_install redis-server
command -v node >/dev/null && command -v npm >/dev/null || apt_install nodejs npm
[ -x /usr/bin/chromium ] || apt_install chromium

# --- PostgreSQL ------------------------------------------------------------------------------
if ! pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; then
  apt_install postgresql
  log "starting PostgreSQL"
  cluster_version="$(ls /etc/postgresql | sort -V | tail -1)"
  as_root pg_ctlcluster --skip-systemctl-redirect "$cluster_version" main start 2>/dev/null \
    || as_root pg_ctlcluster "$cluster_version" main start
  for _ in $(seq 1 30); do pg_isready -q -h "$PG_HOST" -p "$PG_PORT" && break; sleep 1; done
  pg_isready -q -h "$PG_HOST" -p "$PG_PORT" || { echo "PostgreSQL did not start on $PG_HOST:$PG_PORT" >&2; exit 1; }
fi

# Extra psql arguments may be given; the SQL comes on standard input.
# shellcheck disable=SC2120
psql_superuser() {
  if psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -tAc 'SELECT 1' >/dev/null 2>&1; then
    psql -h "$PG_HOST" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q "$@"
  else
    as_root runuser -u postgres -- psql -p "$PG_PORT" -d postgres -v ON_ERROR_STOP=1 -q "$@"
  fi
}
if ! PGPASSWORD=tessera psql -h "$PG_HOST" -p "$PG_PORT" -U tessera_owner -d tessera_test -tAc 'SELECT 1' >/dev/null 2>&1 \
  || ! PGPASSWORD=tessera psql -h "$PG_HOST" -p "$PG_PORT" -U tessera_owner -d tessera -tAc 'SELECT 1' >/dev/null 2>&1; then
  log "creating the database roles and databases"
  psql_superuser < "$ROOT/scripts/db-setup.sql" >/dev/null
fi

# --- Redis -----------------------------------------------------------------------------------
if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" != "PONG" ]; then
  apt_install redis-server
  if [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" != "PONG" ]; then
    log "starting Redis"
    # A local Redis for development and tests keeps nothing on disk. Production runs Redis with
    # append-only persistence, because settled usage waits there briefly on its way to the
    # ledger (see core/src/metering.rs).
    as_root redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no --dir /tmp >/dev/null
    for _ in $(seq 1 20); do [ "$(redis-cli ping 2>/dev/null)" = "PONG" ] && break; sleep 0.5; done
  fi
  [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] || { echo "Redis did not start on 127.0.0.1:6379" >&2; exit 1; }
fi

# --- Rust toolchain and build tools ----------------------------------------------------------
if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  log "adding the wasm32-unknown-unknown target"
  rustup target add wasm32-unknown-unknown
fi
for component in clippy rustfmt; do
  if ! rustup component list --installed | grep -q "^$component"; then
    log "adding the $component component"
    rustup component add "$component"
  fi
done
if ! cargo leptos --version 2>/dev/null | grep -q " $CARGO_LEPTOS_VERSION"; then
  log "installing cargo-leptos $CARGO_LEPTOS_VERSION (a long compile, once)"
  # Plain cargo, not the project's target dir: the tool outlives any checkout.
  env -u CARGO_TARGET_DIR cargo install cargo-leptos --version "$CARGO_LEPTOS_VERSION" --locked --features no_downloads
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $WASM_BINDGEN_VERSION" ]; then
  log "installing wasm-bindgen-cli $WASM_BINDGEN_VERSION"
  env -u CARGO_TARGET_DIR cargo install wasm-bindgen-cli --version "$WASM_BINDGEN_VERSION" --force
fi

# --- npm packages for the end-to-end tests ---------------------------------------------------
lock_hash="$(sha256sum end2end/package-lock.json | cut -d' ' -f1)"
if [ "$(cat end2end/node_modules/.tessera-lock 2>/dev/null)" != "$lock_hash" ]; then
  log "installing the end-to-end test packages"
  (cd end2end && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > end2end/node_modules/.tessera-lock
fi

# --- The OpenAI Python SDK, for the test that drives /v1 with it -------------------------------
TESSERA_VENV="${TESSERA_VENV:-$HOME/.cache/tessera/venv}"
req_hash="$(sha256sum end2end/sdk/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$TESSERA_VENV/.tessera-req" 2>/dev/null)" != "$req_hash" ]; then
  log "installing the OpenAI Python SDK into $TESSERA_VENV"
  command -v python3 >/dev/null || apt_install python3
  python3 -m venv "$TESSERA_VENV" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$TESSERA_VENV"; }
  "$TESSERA_VENV/bin/pip" install --quiet --disable-pip-version-check -r end2end/sdk/requirements.txt
  echo "$req_hash" > "$TESSERA_VENV/.tessera-req"
fi
export TESSERA_PYTHON="$TESSERA_VENV/bin/python"

# --- Disk -------------------------------------------------------------------------------------
# Every checkout path builds the workspace's own crates and test binaries anew next to the
# earlier ones (dependencies are shared). When the disk runs low, drop those and the incremental
# caches: only Tessera's own crates are rebuilt.
free_kb="$(df -Pk "$(dirname "$CARGO_TARGET_DIR")" 2>/dev/null | awk 'NR == 2 { print $4 }')"
if [ -n "$free_kb" ] && [ "$free_kb" -lt $((20 * 1024 * 1024)) ]; then
  log "less than 20 GB free: dropping earlier builds of Tessera's own crates"
  rm -rf "$CARGO_TARGET_DIR/debug/incremental"
  cargo clean --quiet -p tessera-types -p tessera-core -p testkit -p app -p server \
    -p tessera-bench -p frontend || true
fi

log "set-up complete"
