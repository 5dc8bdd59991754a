-- API keys for the OpenAI-compatible API (`Authorization: Bearer tsk_...`). Only the SHA-256 of
-- a key is stored; the key is shown once, when it is created.

CREATE FUNCTION app_current_api_key() RETURNS bytea
    LANGUAGE sql STABLE
    AS $$ SELECT decode(NULLIF(current_setting('app.api_key_hash', true), ''), 'hex') $$;

CREATE TABLE api_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 80),
    -- The key's first characters, to tell keys apart in lists.
    prefix        text NOT NULL,
    key_hash      bytea NOT NULL CONSTRAINT api_keys_key_hash_key UNIQUE,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    revoked_at    timestamptz
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at DESC);

ALTER TABLE api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON api_keys
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
-- Whoever presents a key may read that one key's row (to learn its tenant) and mark it used.
CREATE POLICY key_holder ON api_keys
    USING (key_hash = app_current_api_key());

GRANT SELECT, INSERT, UPDATE, DELETE ON api_keys TO tessera_app;
