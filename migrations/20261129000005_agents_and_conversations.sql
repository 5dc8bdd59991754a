-- Agents (a clinic's configured assistants) and the conversations staff have with them.

CREATE TABLE agents (
    id                uuid PRIMARY KEY,
    tenant_id         uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Used in the API as the model `agent:<slug>`.
    slug              text NOT NULL CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$' AND char_length(slug) <= 60),
    name              text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 80),
    description       text NOT NULL DEFAULT '' CHECK (char_length(description) <= 500),
    system_prompt     text NOT NULL DEFAULT '' CHECK (char_length(system_prompt) <= 20000),
    model             text NOT NULL CHECK (char_length(model) BETWEEN 1 AND 200),
    -- Hundredths: 70 is a temperature of 0.7 (0 to 2).
    temperature_pct   integer NOT NULL DEFAULT 70 CHECK (temperature_pct BETWEEN 0 AND 200),
    max_reply_tokens  integer NOT NULL DEFAULT 1024 CHECK (max_reply_tokens BETWEEN 1 AND 32000),
    -- How much conversation history (in tokens) is sent with each message.
    context_tokens    integer NOT NULL DEFAULT 8000 CHECK (context_tokens BETWEEN 500 AND 200000),
    created_by        uuid REFERENCES users (id) ON DELETE SET NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    updated_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT agents_tenant_slug_key UNIQUE (tenant_id, slug)
);
CREATE INDEX agents_tenant_idx ON agents (tenant_id, name);

CREATE TABLE conversations (
    id          uuid PRIMARY KEY,
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    -- Conversations are private to the person who started them.
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    agent_id    uuid REFERENCES agents (id) ON DELETE SET NULL,
    title       text NOT NULL CHECK (char_length(title) BETWEEN 1 AND 120),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX conversations_owner_idx ON conversations (tenant_id, user_id, updated_at DESC);

CREATE TABLE messages (
    id               uuid PRIMARY KEY,
    tenant_id        uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    conversation_id  uuid NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role             text NOT NULL CHECK (role IN ('user', 'assistant')),
    content          text NOT NULL DEFAULT '',
    -- pending: waiting for the model; complete; stopped (by the person); failed (see error).
    status           text NOT NULL DEFAULT 'complete'
                          CHECK (status IN ('pending', 'complete', 'stopped', 'failed')),
    error            text,
    created_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX messages_conversation_idx ON messages (conversation_id, created_at);

ALTER TABLE agents ENABLE ROW LEVEL SECURITY;
ALTER TABLE agents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON agents
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON conversations
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON messages
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

GRANT SELECT, INSERT, UPDATE, DELETE ON agents, conversations, messages TO tessera_app;
