-- Plans, each clinic's monthly spending cap, model prices, and the usage ledger.
--
-- Money is integer micro-dollars (1 USD = 1,000,000) and tokens are bigint; no floats.

CREATE TABLE plans (
    id                        text PRIMARY KEY CHECK (id ~ '^[a-z0-9_]+$'),
    name                      text NOT NULL,
    -- NULL: priced by agreement (enterprise).
    base_price_micro_usd      bigint CHECK (base_price_micro_usd >= 0),
    -- Tokens included each month; NULL: unlimited.
    included_tokens           bigint CHECK (included_tokens >= 0),
    -- Document storage; NULL: unlimited.
    storage_mb                bigint CHECK (storage_mb >= 0),
    -- What tokens beyond the allowance cost, per 1,000.
    overage_micro_usd_per_1k  bigint NOT NULL CHECK (overage_micro_usd_per_1k >= 0),
    -- NULL: unlimited.
    max_agents                integer CHECK (max_agents >= 0),
    -- Whether the platform's own provider keys may serve a clinic that brought none.
    platform_keys             boolean NOT NULL DEFAULT true,
    -- Operators set it; it is not sold through Checkout.
    self_serve                boolean NOT NULL DEFAULT true,
    sort_order                integer NOT NULL DEFAULT 0
);

INSERT INTO plans (id, name, base_price_micro_usd, included_tokens, storage_mb,
                   overage_micro_usd_per_1k, max_agents, platform_keys, self_serve, sort_order)
VALUES ('starter',      'Starter',      49000000,  1000000,  500,  3000, 3,    true,  true,  1),
       ('professional', 'Professional', 199000000, 10000000, 5000, 2000, 15,   true,  true,  2),
       ('enterprise',   'Enterprise',   NULL,      NULL,     NULL, 0,    NULL, true,  false, 3);

ALTER TABLE tenants DROP CONSTRAINT tenants_plan_check;
ALTER TABLE tenants ADD CONSTRAINT tenants_plan_fkey FOREIGN KEY (plan) REFERENCES plans (id);
-- The most a clinic will pay for tokens beyond its allowance in a month. 0 (the default) stops
-- model calls when the allowance is used up; NULL means no cap.
ALTER TABLE tenants ADD COLUMN spending_cap_micro_usd bigint DEFAULT 0
    CHECK (spending_cap_micro_usd >= 0);

-- List prices of models, to put a cost on each call. The longest matching prefix wins.
CREATE TABLE model_prices (
    model_prefix                 text PRIMARY KEY,
    input_micro_usd_per_mtok     bigint NOT NULL CHECK (input_micro_usd_per_mtok >= 0),
    output_micro_usd_per_mtok    bigint NOT NULL CHECK (output_micro_usd_per_mtok >= 0)
);
INSERT INTO model_prices VALUES
    ('gpt-4o-mini',       150000,   600000),
    ('gpt-4o',            2500000,  10000000),
    ('gpt-4.1-mini',      400000,   1600000),
    ('gpt-4.1',           2000000,  8000000),
    ('o4-mini',           1100000,  4400000),
    ('claude-3-5-haiku',  800000,   4000000),
    ('claude-haiku',      1000000,  5000000),
    ('claude-sonnet',     3000000,  15000000),
    ('claude-opus',       15000000, 75000000),
    ('text-embedding-3-small', 20000, 0);

-- One row per model call. Written by the ledger writer from the durable hand-off in Redis (see
-- core/src/metering.rs); the idempotency key makes a replayed hand-off a no-op.
CREATE TABLE usage_events (
    id                 uuid PRIMARY KEY,
    tenant_id          uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id            uuid REFERENCES users (id) ON DELETE SET NULL,
    api_key_id         uuid REFERENCES api_keys (id) ON DELETE SET NULL,
    provider           text NOT NULL,
    model              text NOT NULL,
    prompt_tokens      bigint NOT NULL CHECK (prompt_tokens >= 0),
    completion_tokens  bigint NOT NULL CHECK (completion_tokens >= 0),
    cached_tokens      bigint NOT NULL DEFAULT 0 CHECK (cached_tokens >= 0),
    cost_micro_usd     bigint NOT NULL CHECK (cost_micro_usd >= 0),
    latency_ms         integer NOT NULL CHECK (latency_ms >= 0),
    -- True when the provider reported no usage and the tokens were counted by Tessera.
    estimated          boolean NOT NULL DEFAULT false,
    streamed           boolean NOT NULL DEFAULT false,
    -- True when the caller stopped the reply before it finished.
    cancelled          boolean NOT NULL DEFAULT false,
    idempotency_key    text NOT NULL,
    occurred_at        timestamptz NOT NULL,
    recorded_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT usage_events_idempotency_key UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX usage_events_tenant_time_idx ON usage_events (tenant_id, occurred_at);

ALTER TABLE usage_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_events
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());

GRANT SELECT ON plans, model_prices TO tessera_app;
-- The ledger is append-only for the application.
GRANT SELECT, INSERT ON usage_events TO tessera_app;
