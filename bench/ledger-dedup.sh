#!/usr/bin/env bash
# What skipping ledger rows that are already there costs Postgres (see bench/README.md, "Where
# a JSON call's CPU goes"): batches of 500 rows, shaped and inserted as the ledger writer
# inserts them (one statement over arrays, as the app's role, the clinic set for row-level
# security), three ways, each rolled back so the table is left as it was:
#   conflict   ... ON CONFLICT (id) DO NOTHING (what the writer does)
#   notexists  ... WHERE NOT EXISTS (SELECT 1 FROM usage_events WHERE id = ...)
#   plain      no check (a duplicate would fail the batch)
# Run against a database the gateway benchmark has used (it needs a clinic and an API key):
#
#   bash bench/ledger-dedup.sh [database, default tessera_bench] [rounds, default 3]
#
# Prints pgbench's average latency per batch for each way, alternating, per round.
set -euo pipefail

DB="${1:-tessera_bench}"
ROUNDS="${2:-3}"
case "$ROUNDS" in
  [1-9] | [1-9][0-9]) ;;
  *) echo "rounds must be a whole number from 1 to 99 (got $ROUNDS)" >&2; exit 2 ;;
esac
HOST=127.0.0.1
command -v pgbench >/dev/null || { echo "pgbench is missing (Debian: postgresql-client)" >&2; exit 1; }
row=$(psql -h "$HOST" -U postgres -d "$DB" -tAc "SELECT tenant_id || ' ' || id FROM api_keys LIMIT 1") || {
  echo "cannot read $DB: run bash bench/gateway.sh first (BENCH_DB names its database)" >&2
  exit 1
}
[ -n "$row" ] || { echo "no API key in $DB: run bash bench/gateway.sh against it first" >&2; exit 1; }
read -r tenant key <<<"$row"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for way in conflict notexists plain; do
  case "$way" in
    conflict) where="" on="ON CONFLICT (id) DO NOTHING" ;;
    notexists) where="WHERE NOT EXISTS (SELECT 1 FROM usage_events e WHERE e.id = u.id)" on="" ;;
    plain) where="" on="" ;;
  esac
  cat >"$WORK/$way.sql" <<EOF
BEGIN;
SELECT set_config('app.tenant_id', '$tenant', true);
INSERT INTO usage_events (id, tenant_id, user_id, api_key_id, provider, model, prompt_tokens,
       completion_tokens, cached_tokens, cost_micro_usd, latency_ms, estimated, streamed,
       cancelled, idempotency_key, occurred_at, agent_id, kind)
SELECT u.id, '$tenant', u.user_id, u.api_key_id, u.provider, u.model, u.p, u.c, u.cc, u.cost,
       u.l, u.e, u.s, u.x, u.k, u.o,
       CASE WHEN u.a IS NOT NULL THEN (SELECT a.id FROM agents a WHERE a.id = u.a) END, u.kind
  FROM UNNEST((SELECT array_agg(gen_random_uuid()) FROM generate_series(1, 500)),
              array_fill(NULL::uuid, ARRAY[500]), array_fill('$key'::uuid, ARRAY[500]),
              array_fill('openai'::text, ARRAY[500]), array_fill('gpt-4o-mini'::text, ARRAY[500]),
              array_fill(31::bigint, ARRAY[500]), array_fill(9::bigint, ARRAY[500]),
              array_fill(0::bigint, ARRAY[500]), array_fill(12::bigint, ARRAY[500]),
              array_fill(1::int, ARRAY[500]), array_fill(false, ARRAY[500]),
              array_fill(false, ARRAY[500]), array_fill(false, ARRAY[500]),
              (SELECT array_agg(g::text) FROM generate_series(1, 500) g),
              array_fill(now(), ARRAY[500]), array_fill(NULL::uuid, ARRAY[500]),
              array_fill('chat'::text, ARRAY[500]))
       AS u(id, user_id, api_key_id, provider, model, p, c, cc, cost, l, e, s, x, k, o, a, kind)
 $where
 $on;
ROLLBACK;
EOF
done
for round in $(seq 1 "$ROUNDS"); do
  for way in conflict notexists plain; do
    ms=$(PGPASSWORD=tessera pgbench -h "$HOST" -U tessera_app -n -f "$WORK/$way.sql" -t 60 "$DB" 2>&1 \
      | awk '/latency average/ {print $4}')
    echo "round $round, $way: ${ms:-?} ms per batch of 500 rows"
  done
done
