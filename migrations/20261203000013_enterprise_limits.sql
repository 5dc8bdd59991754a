-- An Enterprise clinic's own limits, set by an operator in the console: tokens a month,
-- requests per minute through the API (the clinic's; each key gets half), agents and storage.
-- NULL: the plan's (for Enterprise, no limit). Only an Enterprise clinic has limits of its own;
-- a plan change away from Enterprise clears them in the same statement.
ALTER TABLE tenants
    ADD COLUMN limit_included_tokens      bigint  CHECK (limit_included_tokens > 0),
    ADD COLUMN limit_requests_per_minute  integer CHECK (limit_requests_per_minute > 0),
    ADD COLUMN limit_max_agents           integer CHECK (limit_max_agents > 0),
    ADD COLUMN limit_storage_mb           integer CHECK (limit_storage_mb > 0),
    ADD CONSTRAINT tenants_own_limits_enterprise_only CHECK (
        plan = 'enterprise'
        OR (limit_included_tokens IS NULL AND limit_requests_per_minute IS NULL
            AND limit_max_agents IS NULL AND limit_storage_mb IS NULL));
