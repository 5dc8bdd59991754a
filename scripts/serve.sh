#!/usr/bin/env bash
# Sets everything up (see setup.sh), then builds Tessera and serves it at http://127.0.0.1:3000.
# The server applies database migrations at start.
#
#   scripts/serve.sh          serve, with the providers configured in the environment
#   scripts/serve.sh --demo   demo mode: no provider account needed. The provider simulator
#                             (testkit) answers as OpenAI and Anthropic, a demo clinic with two
#                             agents is created, and the sign-in is printed and shown on every
#                             page. Runs on this machine only (TESSERA_DEMO).
set -euo pipefail
demo=0
for arg in "$@"; do
  case "$arg" in
    --demo) demo=1 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "serve.sh: unknown option $arg (try --demo)" >&2; exit 2 ;;
  esac
done
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# Logs for people reading a terminal (production logs one JSON object per line).
export TESSERA_LOG_FORMAT="${TESSERA_LOG_FORMAT:-text}"
if [ "$demo" = 1 ]; then
  SIM_ADDR="${TESSERA_DEMO_SIM_ADDR:-127.0.0.1:3199}"
  log "demo mode: building the provider simulator"
  cargo build -q -p testkit --bin provider-sim
  # Replies arrive word by word, as a model's would.
  SIM_CHUNK_MS="${SIM_CHUNK_MS:-30}" "$CARGO_TARGET_DIR/debug/provider-sim" "$SIM_ADDR" &
  sim_pid=$!
  trap 'kill "$sim_pid" 2>/dev/null || true' EXIT
  export TESSERA_DEMO=true
  export OPENAI_BASE_URL="http://$SIM_ADDR/v1"
  export ANTHROPIC_BASE_URL="http://$SIM_ADDR/anthropic"
  export TESSERA_PUBLIC_URL="${TESSERA_PUBLIC_URL:-http://127.0.0.1:3000}"
  log "demo mode: sign in at http://127.0.0.1:3000/signin as demo@tessera.test with the password tessera-demo-password"
fi
log "building and serving Tessera at http://127.0.0.1:3000"
if [ "$demo" = 1 ]; then
  cargo leptos serve
else
  exec cargo leptos serve
fi
