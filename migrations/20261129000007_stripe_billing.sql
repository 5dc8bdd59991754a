-- Stripe billing: each clinic's customer and subscription, the webhook events applied, and the
-- outbox of overage usage reported to Stripe's Billing Meter. See core/src/billing/.

ALTER TABLE tenants
    ADD COLUMN stripe_customer_id      text CONSTRAINT tenants_stripe_customer_key UNIQUE,
    ADD COLUMN stripe_subscription_id  text,
    -- Stripe's subscription status (active, trialing, past_due, unpaid, canceled, ...).
    ADD COLUMN subscription_status     text,
    ADD COLUMN current_period_start    timestamptz,
    ADD COLUMN current_period_end      timestamptz,
    -- The subscription event last applied, as (Stripe's `created`, rank of its type), so that an
    -- older event arriving later changes nothing (events may come out of order).
    ADD COLUMN subscription_event_at   bigint NOT NULL DEFAULT 0,
    ADD COLUMN subscription_event_rank smallint NOT NULL DEFAULT 0,
    -- Set by invoice.payment_failed, cleared by invoice.paid; model calls stop once the grace
    -- period (TESSERA_BILLING_GRACE_DAYS) after it has passed.
    ADD COLUMN payment_failed_at       timestamptz,
    ADD COLUMN payment_event_at        bigint NOT NULL DEFAULT 0,
    -- Overage is in the meter outbox for every hour before this one.
    ADD COLUMN metered_through         timestamptz;

-- Every webhook event handled, by Stripe's event id: a redelivery finds its id here and
-- changes nothing. Never updated. An event belongs to the clinic it applied to, or to none.
CREATE TABLE stripe_events (
    id           text PRIMARY KEY,
    type         text NOT NULL,
    tenant_id    uuid REFERENCES tenants (id) ON DELETE SET NULL,
    created      bigint NOT NULL,
    -- What applying it did ('applied', 'stale', 'ignored: ...').
    outcome      text NOT NULL,
    received_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stripe_events
    USING (tenant_id IS NOT DISTINCT FROM app_current_tenant())
    WITH CHECK (tenant_id IS NOT DISTINCT FROM app_current_tenant());
GRANT SELECT, INSERT ON stripe_events TO tessera_app;

-- Tokens beyond the allowance, one row per clinic and hour, each sent to Stripe once as a
-- Billing Meter event under its deterministic identifier.
CREATE TABLE meter_outbox (
    tenant_id           uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    hour                timestamptz NOT NULL,
    identifier          text NOT NULL CONSTRAINT meter_outbox_identifier_key UNIQUE,
    stripe_customer_id  text NOT NULL,
    tokens              bigint NOT NULL CHECK (tokens > 0),
    attempts            integer NOT NULL DEFAULT 0,
    next_attempt_at     timestamptz NOT NULL DEFAULT now(),
    last_error          text,
    sent_at             timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, hour)
);
CREATE INDEX meter_outbox_due_idx ON meter_outbox (next_attempt_at) WHERE sent_at IS NULL;

ALTER TABLE meter_outbox ENABLE ROW LEVEL SECURITY;
ALTER TABLE meter_outbox FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON meter_outbox
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
GRANT SELECT, INSERT, UPDATE ON meter_outbox TO tessera_app;

-- The operator path (`server tenant set-plan`, and the two lookups below) runs as the schema
-- owner, the role running this migration; the server itself never connects as it.
DO $$
BEGIN
    EXECUTE format('CREATE POLICY operator_billing ON tenants TO %I USING (true) WITH CHECK (true)', current_user);
END
$$;

-- Which clinic a Stripe customer belongs to: a webhook names the customer, not the clinic.
-- Answers that one question and nothing more.
CREATE FUNCTION billing_tenant_for_customer(customer text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT id FROM tenants WHERE stripe_customer_id = customer $$;

-- The clinics the meter worker looks at: those with a Stripe customer.
CREATE FUNCTION billing_customers() RETURNS SETOF uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public
    AS $$ SELECT id FROM tenants WHERE stripe_customer_id IS NOT NULL ORDER BY id $$;

REVOKE ALL ON FUNCTION billing_tenant_for_customer(text), billing_customers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION billing_tenant_for_customer(text), billing_customers() TO tessera_app;
