-- Tenancy and accounts: clinics (tenants), people (users), who belongs where (memberships),
-- invitations, and platform operators; with row-level security on every tenant-owned table.
--
-- The server connects as tessera_app, which owns nothing here, and every tenant-owned table
-- has FORCE ROW LEVEL SECURITY, so even the owner is filtered. The policies read settings that
-- the core sets per transaction (set_config(.., true)):
--   app.tenant_id         the clinic a transaction works for        (Db::begin_tenant)
--   app.user_id           a person listing their own memberships    (Db::begin_user)
--   app.invitation_token  hex SHA-256 of an invitation link's token (Db::begin_invitation)
-- With none set, a tenant-owned table shows no rows at all.

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tessera_app') THEN
        CREATE ROLE tessera_app LOGIN;
    END IF;
END
$$;

CREATE FUNCTION app_setting_uuid(name text) RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT NULLIF(current_setting(name, true), '')::uuid $$;

CREATE FUNCTION app_current_tenant() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT app_setting_uuid('app.tenant_id') $$;

CREATE FUNCTION app_current_user() RETURNS uuid
    LANGUAGE sql STABLE
    AS $$ SELECT app_setting_uuid('app.user_id') $$;

CREATE FUNCTION app_current_invitation() RETURNS bytea
    LANGUAGE sql STABLE
    AS $$ SELECT decode(NULLIF(current_setting('app.invitation_token', true), ''), 'hex') $$;

CREATE TABLE tenants (
    id          uuid PRIMARY KEY,
    name        text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 120),
    slug        text NOT NULL CONSTRAINT tenants_slug_key UNIQUE
                     CHECK (slug ~ '^[a-z0-9]+(-[a-z0-9]+)*$'),
    plan        text NOT NULL DEFAULT 'starter'
                     CHECK (plan IN ('starter', 'professional', 'enterprise')),
    active      boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- People are global: one account can belong to several clinics.
CREATE TABLE users (
    id             uuid PRIMARY KEY,
    email          text NOT NULL CHECK (char_length(email) BETWEEN 3 AND 254),
    name           text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 100),
    password_hash  text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
-- Unique without regard to case.
CREATE UNIQUE INDEX users_email_key ON users (lower(email));

CREATE TABLE memberships (
    tenant_id   uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    role        text NOT NULL CHECK (role IN ('owner', 'admin', 'staff')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, user_id)
);
CREATE INDEX memberships_user_idx ON memberships (user_id);

CREATE TABLE invitations (
    id           uuid PRIMARY KEY,
    tenant_id    uuid NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    email        text NOT NULL,
    role         text NOT NULL CHECK (role IN ('owner', 'admin', 'staff')),
    -- SHA-256 of the token in the link; the token itself is never stored.
    token_hash   bytea NOT NULL CONSTRAINT invitations_token_hash_key UNIQUE,
    invited_by   uuid REFERENCES users (id) ON DELETE SET NULL,
    expires_at   timestamptz NOT NULL,
    accepted_at  timestamptz,
    accepted_by  uuid REFERENCES users (id) ON DELETE SET NULL,
    revoked_at   timestamptz,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invitations_tenant_idx ON invitations (tenant_id, created_at DESC);

-- Operators of the platform (not of a clinic). Read only through the operator path.
CREATE TABLE platform_operators (
    user_id     uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- Row-level security.
ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = app_current_tenant()) WITH CHECK (id = app_current_tenant());
-- A person sees the names of the clinics they belong to (the clinic switcher).
CREATE POLICY member_reads_own_clinics ON tenants FOR SELECT
    USING (EXISTS (SELECT 1 FROM memberships m WHERE m.tenant_id = tenants.id AND m.user_id = app_current_user()));

ALTER TABLE memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON memberships
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
CREATE POLICY member_reads_own_memberships ON memberships FOR SELECT
    USING (user_id = app_current_user());

ALTER TABLE invitations ENABLE ROW LEVEL SECURITY;
ALTER TABLE invitations FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invitations
    USING (tenant_id = app_current_tenant()) WITH CHECK (tenant_id = app_current_tenant());
-- Whoever holds an invitation's token may read and accept that one invitation.
CREATE POLICY token_holder ON invitations
    USING (token_hash = app_current_invitation());

-- The application role: data access, no DDL, no ownership.
GRANT USAGE ON SCHEMA public TO tessera_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON tenants, users, memberships, invitations TO tessera_app;
GRANT SELECT ON platform_operators TO tessera_app;
