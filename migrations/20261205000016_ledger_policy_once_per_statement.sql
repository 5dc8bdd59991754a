-- The ledger's clinic check is worked out once per statement instead of once per row: every
-- model call inserts a row, and the policy's bare function call read the clinic's setting and
-- parsed it as a UUID for each row a batch inserted (and each row a report read). Through a
-- subquery Postgres evaluates it once (an InitPlan) and compares every row with that value.
-- The rule is the same: a row belongs to the clinic set for the transaction.
ALTER POLICY tenant_isolation ON usage_events
    USING (tenant_id = (SELECT app_current_tenant()))
    WITH CHECK (tenant_id = (SELECT app_current_tenant()));
