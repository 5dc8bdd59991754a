#!/usr/bin/env bash
# Sets everything up (see setup.sh), then builds Tessera and serves it at http://127.0.0.1:3000.
# The server applies database migrations at start.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"
# Logs for people reading a terminal (production logs one JSON object per line).
export TESSERA_LOG_FORMAT="${TESSERA_LOG_FORMAT:-text}"
log "building and serving Tessera at http://127.0.0.1:3000"
exec cargo leptos serve
