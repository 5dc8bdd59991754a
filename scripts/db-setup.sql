-- Roles and databases for a local Tessera. Idempotent; run as a Postgres superuser.
-- tessera_owner owns the schema and runs migrations (and creates the per-test databases);
-- tessera_app is what the server connects as: it owns nothing, so row-level security applies.
SELECT 'CREATE ROLE tessera_owner LOGIN CREATEDB CREATEROLE PASSWORD ''tessera'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tessera_owner') \gexec
SELECT 'CREATE ROLE tessera_app LOGIN PASSWORD ''tessera'''
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tessera_app') \gexec
SELECT 'CREATE DATABASE tessera OWNER tessera_owner'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tessera') \gexec
SELECT 'CREATE DATABASE tessera_test OWNER tessera_owner'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tessera_test') \gexec
SELECT 'CREATE DATABASE tessera_e2e OWNER tessera_owner'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tessera_e2e') \gexec
