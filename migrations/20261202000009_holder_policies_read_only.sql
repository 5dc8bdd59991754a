-- Whoever presents an API key or an invitation link may read that one row, and nothing more:
-- every change to it happens in the clinic's own scope (row-level security by tenant).
DROP POLICY key_holder ON api_keys;
CREATE POLICY key_holder ON api_keys FOR SELECT
    USING (key_hash = app_current_api_key());

DROP POLICY token_holder ON invitations;
CREATE POLICY token_holder ON invitations FOR SELECT
    USING (token_hash = app_current_invitation());

-- The SECURITY DEFINER functions resolve names in `public` and look in `pg_temp` last, so a
-- caller's temporary objects can never stand in for the tables they read.
ALTER FUNCTION billing_tenant_for_customer(text) SET search_path = public, pg_temp;
ALTER FUNCTION billing_customers() SET search_path = public, pg_temp;
