#!/usr/bin/env bash
# The knowledge benchmark (see bench/README.md, "Knowledge"): builds `knowledge-bench` in
# release, gives it a fresh database of its own and runs it. Ingestion embeds through the
# provider simulator (in-process); retrieval reads PostgreSQL.
#
#   bash bench/knowledge.sh [knowledge-bench options, e.g. --sizes 1000,10000]
#
# Environment: BENCH_DB (database name, default tessera_bench_knowledge).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera/target}"
export PATH="$HOME/.cargo/bin:$PATH"
export LEPTOS_OUTPUT_NAME=tessera
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"

BENCH_DB="${BENCH_DB:-tessera_bench_knowledge}"
PG=127.0.0.1:5432
log() { printf '\033[1;36m==> %s\033[0m\n' "$*" >&2; }

if ! pg_isready -q -h "${PG%:*}" -p "${PG#*:}" 2>/dev/null \
  || [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" != "PONG" ] \
  || ! PGPASSWORD=tessera psql -h "${PG%:*}" -U tessera_owner -d tessera -tAc 'SELECT 1' >/dev/null 2>&1; then
  log "PostgreSQL, Redis or the database roles are missing: running scripts/setup.sh"
  bash scripts/setup.sh
fi

log "building knowledge-bench (release; long the first time)"
cargo build --release -p tessera-bench --bin knowledge-bench

log "a fresh database: $BENCH_DB"
PGPASSWORD=tessera psql -h "${PG%:*}" -U tessera_owner -d tessera -q \
  -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)"
export DATABASE_URL="postgres://tessera_app:tessera@$PG/$BENCH_DB"
export DATABASE_ADMIN_URL="postgres://tessera_owner:tessera@$PG/$BENCH_DB"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
RUST_LOG="${RUST_LOG:-warn}" "$CARGO_TARGET_DIR/release/knowledge-bench" "$@"
# The passages and vectors made for the run take room; the database goes with the run.
PGPASSWORD=tessera psql -h "${PG%:*}" -U tessera_owner -d tessera -q \
  -c "DROP DATABASE IF EXISTS $BENCH_DB WITH (FORCE)"
