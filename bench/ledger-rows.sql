-- What a ledger row costs Postgres to insert, by what checks it: 10,000 rows in batches of 100,
-- as the ledger writer inserts them, into scratch copies of `usage_events` with
--   a: foreign keys to tenants, users, API keys and agents, and both unique indexes (the schema
--      before migration 15),
--   b: both unique indexes, no foreign keys,
--   c: the primary key and the (clinic, time) index only (the schema since migration 15).
-- Rows name an existing clinic and API key (so those two keys are checked, as for the
-- benchmark's calls). Run against a database the gateway benchmark has used, as its owner:
--   psql -h 127.0.0.1 -U postgres -d tessera_bench -f bench/ledger-rows.sql
-- The copies are dropped at the end.
\set ON_ERROR_STOP on
SET client_min_messages = notice;
DROP TABLE IF EXISTS ledger_rows_a, ledger_rows_b, ledger_rows_c;
CREATE TABLE ledger_rows_a (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE ledger_rows_a ADD PRIMARY KEY (id),
    ADD UNIQUE (tenant_id, idempotency_key),
    ADD FOREIGN KEY (tenant_id) REFERENCES tenants (id) ON DELETE CASCADE,
    ADD FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL,
    ADD FOREIGN KEY (api_key_id) REFERENCES api_keys (id) ON DELETE SET NULL,
    ADD FOREIGN KEY (agent_id) REFERENCES agents (id) ON DELETE SET NULL;
CREATE INDEX ON ledger_rows_a (tenant_id, occurred_at);
CREATE TABLE ledger_rows_b (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE ledger_rows_b ADD PRIMARY KEY (id), ADD UNIQUE (tenant_id, idempotency_key);
CREATE INDEX ON ledger_rows_b (tenant_id, occurred_at);
CREATE TABLE ledger_rows_c (LIKE usage_events INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
ALTER TABLE ledger_rows_c ADD PRIMARY KEY (id);
CREATE INDEX ON ledger_rows_c (tenant_id, occurred_at);

DO $$
DECLARE
    t uuid;
    k uuid;
    name text;
    started timestamptz;
BEGIN
    SELECT a.tenant_id, a.id INTO t, k FROM api_keys a LIMIT 1;
    IF t IS NULL THEN
        RAISE EXCEPTION 'no API key in this database: run bench/gateway.sh against it first';
    END IF;
    FOR round IN 1..2 LOOP
        FOREACH name IN ARRAY ARRAY['ledger_rows_a', 'ledger_rows_b', 'ledger_rows_c'] LOOP
            started := clock_timestamp();
            FOR i IN 1..100 LOOP
                EXECUTE format(
                    'INSERT INTO %I (id, tenant_id, user_id, api_key_id, provider, model,
                            prompt_tokens, completion_tokens, cached_tokens, cost_micro_usd,
                            latency_ms, estimated, streamed, cancelled, idempotency_key,
                            occurred_at, agent_id, kind)
                     SELECT g, $1, NULL, $2, ''openai'', ''gpt-4o-mini'', 10, 20, 0, 5, 3,
                            false, false, false, g::text, now(), NULL, ''chat''
                       FROM (SELECT gen_random_uuid() AS g FROM generate_series(1, 100)) s',
                    name) USING t, k;
            END LOOP;
            RAISE NOTICE 'round %, %: % ms for 10,000 rows', round, name,
                round(extract(epoch FROM clock_timestamp() - started) * 1000);
        END LOOP;
    END LOOP;
END $$;

DROP TABLE ledger_rows_a, ledger_rows_b, ledger_rows_c;
