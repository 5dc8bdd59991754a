#!/usr/bin/env bash
# Roles and database for Tessera in the compose deployment's PostgreSQL, as
# scripts/db-setup.sql makes them for development, with the passwords of the two URLs in
# tessera.env instead of the development one. The postgres image runs this once, when it
# initialises an empty data volume; it changes nothing on later starts.
#
# tessera_owner owns the schema and runs migrations (DATABASE_ADMIN_URL); tessera_app is what
# the server connects as (DATABASE_URL): it owns nothing, so row-level security applies. The
# migrations grant to tessera_app by name, so these names are fixed.
set -euo pipefail

# user and password of postgres://user:password@host:port/db, percent-decoded.
url_user() { local c="${1#*://}"; c="${c%%@*}"; decode "${c%%:*}"; }
url_password() { local c="${1#*://}"; c="${c%%@*}"; decode "${c#*:}"; }
# Backslashes are doubled first, so that only the %XX escapes are read by printf.
decode() { local s="${1//\\/\\\\}"; printf '%b' "${s//%/\\x}"; }

for var in DATABASE_URL DATABASE_ADMIN_URL; do
  if [ -z "${!var:-}" ]; then
    echo "postgres-init: $var is not set (see deploy/tessera.env.example)" >&2
    exit 1
  fi
done
[ "$(url_user "$DATABASE_URL")" = tessera_app ] \
  || { echo "postgres-init: DATABASE_URL must connect as tessera_app" >&2; exit 1; }
[ "$(url_user "$DATABASE_ADMIN_URL")" = tessera_owner ] \
  || { echo "postgres-init: DATABASE_ADMIN_URL must connect as tessera_owner" >&2; exit 1; }

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v owner_password="$(url_password "$DATABASE_ADMIN_URL")" \
  -v app_password="$(url_password "$DATABASE_URL")" <<'SQL'
SELECT format('CREATE ROLE tessera_owner LOGIN CREATEDB CREATEROLE PASSWORD %L', :'owner_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tessera_owner') \gexec
SELECT format('CREATE ROLE tessera_app LOGIN PASSWORD %L', :'app_password')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'tessera_app') \gexec
SELECT 'CREATE DATABASE tessera OWNER tessera_owner'
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'tessera') \gexec
SQL

# Nobody logs in as the superuser over the network: its password (set in compose.yaml) is no
# secret. `docker compose exec postgres psql -U postgres` still works over the local socket.
hba="$PGDATA/pg_hba.conf"
{ echo "host all $POSTGRES_USER all reject"; cat "$hba"; } > "$hba.tessera"
mv "$hba.tessera" "$hba"
