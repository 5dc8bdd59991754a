-- Keys clinics bring (BYOK): one data key per tenant, wrapped by a master key, and the provider
-- keys it encrypts. See core/src/crypto.rs for the scheme.

CREATE TABLE tenant_data_keys (
    tenant_id       uuid PRIMARY KEY REFERENCES tenants (id) ON DELETE CASCADE,
    master_version  text NOT NULL,
    nonce           bytea NOT NULL,
    wrapped_key     bytea NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    rotated_at      timestamptz
);

CREATE TABLE provider_keys (
    id            uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    provider      text NOT NULL CHECK (provider IN ('openai', 'anthropic', 'openai_compatible')),
    -- For OpenAI-compatible endpoints (Ollama, vLLM, ...): where to send requests.
    base_url      text CHECK (base_url IS NULL OR base_url ~ '^https?://'),
    -- Bumped on every replacement; part of the secret's associated data.
    version       integer NOT NULL DEFAULT 1,
    nonce         bytea,
    ciphertext    bytea,
    last_four     text,
    created_by    uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    CONSTRAINT provider_keys_tenant_provider_key UNIQUE (tenant_id, provider),
    CHECK ((nonce IS NULL) = (ciphertext IS NULL))
);

ALTER TABLE tenant_data_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_data_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_data_keys
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE provider_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON provider_keys
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

-- The operator path: `server rotate-master-key` connects as the schema owner (the role running
-- this migration) to re-wrap every tenant's data key. The server itself never connects as it.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY operator_rotation ON tenant_data_keys TO %I USING (true) WITH CHECK (true)', current_user);
END
$$;

GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_data_keys, provider_keys TO tessera_app;
