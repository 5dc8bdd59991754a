#!/usr/bin/env bash
# What the ledger's foreign key on `agent_id` cost Postgres per batch (see bench/README.md, "The
# ledger's agent without a foreign key"): pieces of 256 rows, shaped and inserted as the ledger
# writer inserts them (one statement over arrays), into two scratch copies of `usage_events`
# (its columns, defaults, checks and indexes: `LIKE ... INCLUDING ALL`):
#   key     with the foreign key to `agents` the ledger had until migration 17, and the writer's
#           lookup that turned an agent deleted since the call into none
#   nokey   as the ledger is since migration 17: no key, the agent's id kept as the call made it
# Rows carry no agent, as the gateway benchmark's calls; with `--agent` every other row has one,
# as a clinic's chat calls do. Each batch is rolled back, so the copies stay empty; they are
# dropped at the end. Run against a database the gateway benchmark has used (it needs a clinic
# and an API key; `--agent` an agent too):
#
#   bash bench/ledger-agent-key.sh [database, default tessera_bench] [rounds, default 3] [--agent]
#
# Prints pgbench's average latency per piece for each way, alternating, per round.
set -euo pipefail

DB="${1:-tessera_bench}"
ROUNDS="${2:-3}"
WITH_AGENT="${3:-}"
case "$ROUNDS" in
  [1-9] | [1-9][0-9]) ;;
  *) echo "rounds must be a whole number from 1 to 99 (got $ROUNDS)" >&2; exit 2 ;;
esac
case "$WITH_AGENT" in
  "" | --agent) ;;
  *) echo "the third argument can only be --agent (got $WITH_AGENT)" >&2; exit 2 ;;
esac
HOST=127.0.0.1
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian: postgresql-client)" >&2; exit 1; }
row=$(psql -h "$HOST" -U postgres -d "$DB" -tAc "SELECT tenant_id || ' ' || id FROM api_keys LIMIT 1") || {
  echo "cannot read $DB: run bash bench/gateway.sh first (BENCH_DB names its database)" >&2
  exit 1
}
[ -n "$row" ] || { echo "no API key in $DB: run bash bench/gateway.sh against it first" >&2; exit 1; }
read -r tenant key <<<"$row"
agent="NULL"
if [ -n "$WITH_AGENT" ]; then
  agent=$(psql -h "$HOST" -U postgres -d "$DB" -tAc "SELECT id FROM agents LIMIT 1")
  [ -n "$agent" ] || { echo "no agent in $DB: make one in a clinic first, or leave out --agent" >&2; exit 1; }
  agent="'$agent'"
fi

WORK="$(mktemp -d)"
cleanup() {
  psql -h "$HOST" -U postgres -d "$DB" -qc "DROP TABLE IF EXISTS ledger_key_key, ledger_key_nokey" || true
  rm -rf "$WORK"
}
trap cleanup EXIT
psql -h "$HOST" -U postgres -d "$DB" -q -v ON_ERROR_STOP=1 -c "
  DROP TABLE IF EXISTS ledger_key_key, ledger_key_nokey;
  CREATE TABLE ledger_key_key (LIKE usage_events INCLUDING ALL,
      FOREIGN KEY (agent_id) REFERENCES agents (id) ON DELETE SET NULL);
  CREATE TABLE ledger_key_nokey (LIKE usage_events INCLUDING ALL);"
for way in key nokey; do
  case "$way" in
    key) agent_column="CASE WHEN u.a IS NOT NULL THEN (SELECT a.id FROM agents a WHERE a.id = u.a) END" ;;
    nokey) agent_column="u.a" ;;
  esac
  cat >"$WORK/$way.sql" <<SQL
BEGIN;
INSERT INTO ledger_key_$way (id, tenant_id, user_id, api_key_id, provider, model, prompt_tokens,
       completion_tokens, cached_tokens, cost_micro_usd, latency_ms, estimated, streamed,
       cancelled, idempotency_key, occurred_at, agent_id, kind)
SELECT u.id, '$tenant', u.user_id, u.api_key_id, u.provider, u.model, u.p, u.c, u.cc, u.cost,
       u.l, u.e, u.s, u.x, u.k, u.o, $agent_column, u.kind
  FROM UNNEST((SELECT array_agg(gen_random_uuid()) FROM generate_series(1, 256)),
              array_fill(NULL::uuid, ARRAY[256]), array_fill('$key'::uuid, ARRAY[256]),
              array_fill('openai'::text, ARRAY[256]), array_fill('gpt-4o-mini'::text, ARRAY[256]),
              array_fill(31::bigint, ARRAY[256]), array_fill(9::bigint, ARRAY[256]),
              array_fill(0::bigint, ARRAY[256]), array_fill(12::bigint, ARRAY[256]),
              array_fill(1::int, ARRAY[256]), array_fill(false, ARRAY[256]),
              array_fill(false, ARRAY[256]), array_fill(false, ARRAY[256]),
              (SELECT array_agg(g::text) FROM generate_series(1, 256) g),
              array_fill(now(), ARRAY[256]),
              (SELECT array_agg(CASE WHEN g % 2 = 0 THEN $agent::uuid END) FROM generate_series(1, 256) g),
              array_fill('chat'::text, ARRAY[256]))
       AS u(id, user_id, api_key_id, provider, model, p, c, cc, cost, l, e, s, x, k, o, a, kind);
ROLLBACK;
SQL
done
for round in $(seq 1 "$ROUNDS"); do
  for way in key nokey; do
    ms=$(pgbench -h "$HOST" -U postgres -n -f "$WORK/$way.sql" -t 200 "$DB" 2>&1 \
      | awk '/latency average/ {print $4}')
    echo "round $round, $way: ${ms:-?} ms per piece of 256 rows"
  done
done
