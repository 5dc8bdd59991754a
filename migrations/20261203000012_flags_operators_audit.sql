-- Feature flags, the platform operators' scope, and the audit log.
--
-- A fourth row-level-security setting joins the three of migration 1:
--   app.operator_id  a platform operator working in the operator console  (Db::begin_operator)
-- It counts only when it names a row of platform_operators (rows written by the CLI as the
-- schema owner; the application role can only read them).

CREATE FUNCTION app_current_operator() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT o.user_id FROM platform_operators o WHERE o.user_id = app_setting_uuid('app.operator_id') $$;

-- Operators read every clinic, its members, usage, agents and documents (the console's read
-- views), and change a clinic's status and plan; they are members of no clinic by being
-- operators.
CREATE POLICY operator_reads ON tenants FOR SELECT USING (app_current_operator() IS NOT NULL);
CREATE POLICY operator_manages ON tenants FOR UPDATE
    USING (app_current_operator() IS NOT NULL) WITH CHECK (app_current_operator() IS NOT NULL);
CREATE POLICY operator_reads ON memberships FOR SELECT USING (app_current_operator() IS NOT NULL);
CREATE POLICY operator_reads ON usage_events FOR SELECT USING (app_current_operator() IS NOT NULL);
CREATE POLICY operator_reads ON agents FOR SELECT USING (app_current_operator() IS NOT NULL);
CREATE POLICY operator_reads ON documents FOR SELECT USING (app_current_operator() IS NOT NULL);

-- An agent may name no model: it then uses the `default_model` flag's value for its clinic.
ALTER TABLE agents DROP CONSTRAINT agents_model_check;
ALTER TABLE agents ADD CONSTRAINT agents_model_check CHECK (char_length(model) <= 200);

-- Flags: a typed default and ordered rules (this clinic, this plan, a percentage of clinics),
-- the first matching rule's value winning; `enabled = false` is the kill switch (everyone gets
-- the default). Every change is a new version, kept in feature_flag_versions.
CREATE TABLE feature_flags (
    key            text PRIMARY KEY CHECK (key ~ '^[a-z][a-z0-9_]{1,62}$'),
    description    text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    kind           text NOT NULL CHECK (kind IN ('boolean', 'string', 'integer')),
    default_value  jsonb NOT NULL,
    rules          jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(rules) = 'array'),
    enabled        boolean NOT NULL DEFAULT true,
    version        integer NOT NULL DEFAULT 1 CHECK (version > 0),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    updated_by     uuid REFERENCES users (id) ON DELETE SET NULL
);

CREATE TABLE feature_flag_versions (
    key            text NOT NULL REFERENCES feature_flags (key) ON DELETE CASCADE,
    version        integer NOT NULL CHECK (version > 0),
    description    text NOT NULL,
    kind           text NOT NULL,
    default_value  jsonb NOT NULL,
    rules          jsonb NOT NULL,
    enabled        boolean NOT NULL,
    -- What happened: "created", "edited", "switched off", "rolled back to version 3".
    note           text NOT NULL DEFAULT '' CHECK (char_length(note) <= 200),
    changed_by     uuid REFERENCES users (id) ON DELETE SET NULL,
    changed_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (key, version)
);

-- The flags the product reads. Seeded before row-level security is on (the seed has no
-- operator).
INSERT INTO feature_flags (key, description, kind, default_value) VALUES
    ('default_model', 'The model of agents that name none, and the model suggested for a new agent.', 'string', '"gpt-4o-mini"'),
    ('streaming_enabled', 'Replies stream as they are written, in the chat and through /v1. Off: whole replies.', 'boolean', 'true'),
    ('max_context_tokens', 'Caps every agent''s context budget, in tokens.', 'integer', '200000'),
    ('rag_enabled', 'Agents draw on the clinic''s documents (knowledge retrieval).', 'boolean', 'true'),
    ('reranking_enabled', 'Retrieved passages are reranked before they reach the model.', 'boolean', 'false');
INSERT INTO feature_flag_versions (key, version, description, kind, default_value, rules, enabled, note)
    SELECT key, version, description, kind, default_value, rules, enabled, 'created'
      FROM feature_flags;

-- Every replica reads all flags (they are platform settings); only operators write them.
ALTER TABLE feature_flags ENABLE ROW LEVEL SECURITY;
ALTER TABLE feature_flags FORCE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON feature_flags FOR SELECT USING (true);
CREATE POLICY operator_writes ON feature_flags FOR INSERT
    WITH CHECK (app_current_operator() IS NOT NULL);
CREATE POLICY operator_updates ON feature_flags FOR UPDATE
    USING (app_current_operator() IS NOT NULL) WITH CHECK (app_current_operator() IS NOT NULL);
ALTER TABLE feature_flag_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE feature_flag_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY anyone_reads ON feature_flag_versions FOR SELECT USING (true);
CREATE POLICY operator_writes ON feature_flag_versions FOR INSERT
    WITH CHECK (app_current_operator() IS NOT NULL);
GRANT SELECT, INSERT, UPDATE ON feature_flags TO tessera_app;
GRANT SELECT, INSERT ON feature_flag_versions TO tessera_app;

-- The audit log: append-only for the application (insert and read, never update or delete).
-- tenant_id NULL: a platform-wide entry (flag changes, sign-in failures of unknown accounts).
CREATE TABLE audit_log (
    id           uuid PRIMARY KEY,
    tenant_id    uuid REFERENCES tenants (id) ON DELETE CASCADE,
    occurred_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    actor_kind   text NOT NULL CHECK (actor_kind IN ('person', 'api_key', 'operator', 'system')),
    actor_id     uuid,
    -- Who, as they were named then (an email, an API key's name).
    actor_label  text NOT NULL DEFAULT '' CHECK (char_length(actor_label) <= 300),
    action       text NOT NULL CHECK (action ~ '^[a-z_]+\.[a-z_]+$'),
    target       text NOT NULL DEFAULT '' CHECK (char_length(target) <= 300),
    address      inet,
    before       jsonb,
    after        jsonb
);
CREATE INDEX audit_log_tenant_time_idx ON audit_log (tenant_id, occurred_at DESC);
CREATE INDEX audit_log_time_idx ON audit_log (occurred_at DESC);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_reads ON audit_log FOR SELECT USING (tenant_id = app_current_tenant());
CREATE POLICY tenant_appends ON audit_log FOR INSERT
    WITH CHECK (tenant_id = app_current_tenant() OR tenant_id IS NULL);
CREATE POLICY operator_reads ON audit_log FOR SELECT USING (app_current_operator() IS NOT NULL);
CREATE POLICY operator_appends ON audit_log FOR INSERT
    WITH CHECK (app_current_operator() IS NOT NULL);
GRANT SELECT, INSERT ON audit_log TO tessera_app;
