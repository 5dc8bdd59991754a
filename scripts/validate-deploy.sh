#!/usr/bin/env bash
# Checks the deployment files in deploy/ without running them (no container engine needed):
#   - deploy/compose.yaml against the Compose Specification's schema (check-jsonschema);
#   - every manifest in deploy/k8s, and the whole as kustomize renders it, against the
#     Kubernetes API's schemas, strictly, for the versions in K8S_VERSIONS (kubernetes-validate,
#     kubectl kustomize);
#   - deploy/Dockerfile with a linter (dockerfile-utils; any error or warning fails);
#   - deploy/nginx.conf with `nginx -t`, from Debian's nginx package unpacked, not installed
#     (skipped, saying so, when the package cannot be had);
#   - the shell scripts in deploy/ and this one with ShellCheck;
#   - deploy/postgres-init.sh in a scratch PostgreSQL cluster on a Unix socket, then every
#     migration as the owner it makes, and the README's dump and restore (skipped, saying so,
#     without PostgreSQL's server binaries);
#   - what ties the files together (scripts/validate-deploy/checks.py).
# The tools are installed at the versions pinned in scripts/validate-deploy/ into
# ~/.cache/tessera when missing, so later runs start at once. Run by scripts/test.sh; exits
# non-zero, saying what failed, at the first failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="$ROOT/scripts/validate-deploy"
CACHE="$HOME/.cache/tessera"
# The oldest Kubernetes the manifests are meant for, and the newest kubernetes-validate knows.
K8S_VERSIONS=(1.31.0 1.37.0)
cd "$ROOT"

log() { printf '\033[1;36m==> %s\033[0m\n' "$*"; }
fail() { printf '\033[1;31mdeployment files: %s\033[0m\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# --- tools -------------------------------------------------------------------------------------
VENV="$CACHE/deploy-venv"
req_hash="$(sha256sum "$TOOLS/requirements.txt" | cut -d' ' -f1)"
if [ "$(cat "$VENV/.tessera-req" 2>/dev/null)" != "$req_hash" ]; then
  log "installing the Python checkers into $VENV"
  rm -rf "$VENV"
  if ! python3 -m venv "$VENV" 2>/dev/null; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv "$VENV"
  fi
  "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$TOOLS/requirements.txt"
  echo "$req_hash" > "$VENV/.tessera-req"
fi

NPM_DIR="$CACHE/deploy-npm"
lock_hash="$(cat "$TOOLS/package.json" "$TOOLS/package-lock.json" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$NPM_DIR/.tessera-lock" 2>/dev/null)" != "$lock_hash" ]; then
  command -v npm >/dev/null || fail "npm is needed for the Dockerfile linter (scripts/setup.sh installs it)"
  log "installing the Dockerfile linter into $NPM_DIR"
  rm -rf "$NPM_DIR"
  mkdir -p "$NPM_DIR"
  cp "$TOOLS/package.json" "$TOOLS/package-lock.json" "$NPM_DIR/"
  (cd "$NPM_DIR" && npm ci --no-audit --no-fund --loglevel=error)
  echo "$lock_hash" > "$NPM_DIR/.tessera-lock"
fi

# Debian's nginx, unpacked where nothing runs it: no service starts, nothing listens.
NGINX_DIR="$CACHE/deploy-nginx"
NGINX="$NGINX_DIR/usr/sbin/nginx"
if [ ! -x "$NGINX" ] && command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  download="$(mktemp -d)"
  chmod 755 "$download"
  if ! (cd "$download" && apt-get download -qq nginx >/dev/null 2>&1); then
    as_root apt-get update -qq >/dev/null 2>&1 || true
    (cd "$download" && apt-get download -qq nginx >/dev/null 2>&1) || true
  fi
  if ls "$download"/nginx_*.deb >/dev/null 2>&1; then
    log "unpacking Debian's nginx package into $NGINX_DIR"
    dpkg-deb -x "$download"/nginx_*.deb "$NGINX_DIR"
  fi
  rm -rf "$download"
fi

# --- Compose -----------------------------------------------------------------------------------
log "deploy/compose.yaml against the Compose Specification ($("$VENV/bin/check-jsonschema" --version))"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec deploy/compose.yaml \
  || fail "deploy/compose.yaml does not follow the Compose Specification"

# --- Kubernetes --------------------------------------------------------------------------------
version_args=()
for v in "${K8S_VERSIONS[@]}"; do version_args+=(-k "$v"); done
# Validates the given files; a kind or apiVersion kubernetes-validate has no schema for is only a
# warning there, and a failure here.
validate_k8s() {
  local out rc=0
  out="$("$VENV/bin/kubernetes-validate" --strict "${version_args[@]}" "$@" 2>&1)" || rc=$?
  if [ "$rc" != 0 ] || grep -qv '^INFO ' <<< "$out"; then
    grep -v '^INFO ' <<< "$out" >&2
    fail "a Kubernetes manifest does not validate"
  fi
  echo "ok -- $(grep -c '^INFO ' <<< "$out") resource checks"
}
log "deploy/k8s/*.yaml against the Kubernetes ${K8S_VERSIONS[*]} schemas, strict (kubernetes-validate $("$VENV/bin/kubernetes-validate" --version))"
manifests=()
for f in deploy/k8s/*.yaml; do
  # kustomization.yaml is kustomize's own file, not an API object: it is rendered below.
  [ "$(basename "$f")" = kustomization.yaml ] || manifests+=("$f")
done
validate_k8s "${manifests[@]}"
log "deploy/k8s as kubectl apply -k renders it ($("$VENV/bin/kubectl" version --client | paste -sd' ' -))"
rendered="$(mktemp --suffix=.yaml)"
"$VENV/bin/kubectl" kustomize deploy/k8s > "$rendered" || { rm -f "$rendered"; fail "kustomize cannot build deploy/k8s"; }
validate_k8s "$rendered"
rm -f "$rendered"

# --- Dockerfile --------------------------------------------------------------------------------
DOCKERFILE_UTILS="$NPM_DIR/node_modules/.bin/dockerfile-utils"
log "deploy/Dockerfile with $("$DOCKERFILE_UTILS" --version)"
lint="$("$DOCKERFILE_UTILS" lint --json deploy/Dockerfile)" || true
if [ "$lint" != "[]" ]; then
  "$DOCKERFILE_UTILS" lint deploy/Dockerfile >&2 || true
  fail "deploy/Dockerfile has lint findings"
fi
echo "ok -- no findings"

# --- nginx -------------------------------------------------------------------------------------
if [ -x "$NGINX" ] && "$NGINX" -v >/dev/null 2>&1; then
  log "deploy/nginx.conf with nginx -t ($("$NGINX" -v 2>&1 | sed 's/.*: //'), Debian's package)"
  # The nginx image includes the site file in its http block; so does this wrapper, with every
  # path nginx would write to in a temporary directory.
  scratch="$(mktemp -d)"
  cat > "$scratch/nginx.conf" <<EOF
pid $scratch/nginx.pid;
events {}
http {
    access_log off;
    client_body_temp_path $scratch/body;
    proxy_temp_path $scratch/proxy;
    fastcgi_temp_path $scratch/fastcgi;
    uwsgi_temp_path $scratch/uwsgi;
    scgi_temp_path $scratch/scgi;
    include $ROOT/deploy/nginx.conf;
}
EOF
  if ! "$NGINX" -t -q -e stderr -p "$scratch" -c "$scratch/nginx.conf"; then
    rm -rf "$scratch"
    fail "deploy/nginx.conf is not a valid nginx configuration"
  fi
  rm -rf "$scratch"
  echo "ok -- syntax and directives accepted"
else
  log "deploy/nginx.conf: skipped (Debian's nginx package could not be had)"
fi

# --- shell scripts -----------------------------------------------------------------------------
log "shell scripts with $("$VENV/bin/shellcheck" --version | sed -n 's/^version: /ShellCheck /p')"
"$VENV/bin/shellcheck" deploy/*.sh scripts/validate-deploy.sh || fail "ShellCheck found problems"
echo "ok -- no findings"

# --- the PostgreSQL set-up, run ----------------------------------------------------------------
# postgres-init.sh in a scratch cluster listening on a Unix socket only, as the postgres
# image runs it; then every migration applied as tessera_owner, a query as tessera_app, and
# the README's backup (pg_dump as the superuser) restored into a new database.
PG_BIN="$(find /usr/lib/postgresql -maxdepth 2 -name bin 2>/dev/null | sort -V | tail -1)"
if [ -x "$PG_BIN/initdb" ] && { [ "$(id -u)" != 0 ] || id postgres >/dev/null 2>&1; }; then
  # Run from the scratch directory: the checkout may be closed to the postgres user.
  as_pg() { (cd "$pg" && if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi); }
  log "deploy/postgres-init.sh and the migrations in a scratch PostgreSQL $("$PG_BIN/postgres" -V | awk '{print $3}') cluster"
  pg="$(mktemp -d)"
  chmod 755 "$pg"
  cp deploy/postgres-init.sh "$pg/postgres-init.sh"
  chmod 755 "$pg/postgres-init.sh"
  [ "$(id -u)" != 0 ] || chown postgres "$pg"
  stop_pg() { as_pg "$PG_BIN/pg_ctl" -D "$pg/data" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$pg"; }
  trap stop_pg EXIT
  as_pg "$PG_BIN/initdb" -D "$pg/data" -U postgres --auth-local=trust >/dev/null 2>&1 \
    || fail "initdb failed"
  as_pg "$PG_BIN/pg_ctl" -D "$pg/data" -o "-c listen_addresses='' -k $pg" -l "$pg/log" -w start >/dev/null \
    || fail "the scratch PostgreSQL did not start ($pg/log)"
  psql_as() { local user="$1" db="$2"; shift 2; "$PG_BIN/psql" -h "$pg" -U "$user" -d "$db" -v ON_ERROR_STOP=1 -qtA "$@"; }
  # Passwords with the characters a URL must percent-encode.
  as_pg env PGHOST="$pg" PGDATA="$pg/data" POSTGRES_USER=postgres \
    DATABASE_URL='postgres://tessera_app:app%40pass%3Aword@postgres:5432/tessera' \
    DATABASE_ADMIN_URL='postgres://tessera_owner:owner%2Fpass%25@postgres:5432/tessera' \
    bash "$pg/postgres-init.sh" >/dev/null || fail "deploy/postgres-init.sh failed"
  [ "$(head -1 "$pg/data/pg_hba.conf")" = "host all postgres all reject" ] \
    || fail "deploy/postgres-init.sh did not refuse the superuser's network logins"
  # From here the two roles log in with their passwords, as they would over the network.
  as_pg sed -i '1i local all tessera_app,tessera_owner scram-sha-256' "$pg/data/pg_hba.conf"
  as_pg "$PG_BIN/pg_ctl" -D "$pg/data" reload >/dev/null
  export PGPASSWORD='owner/pass%'
  for migration in migrations/*.sql; do
    psql_as tessera_owner tessera -1 -f "$migration" >/dev/null \
      || fail "$migration does not apply as the tessera_owner that deploy/postgres-init.sh makes"
  done
  plans="$(PGPASSWORD='app@pass:word' psql_as tessera_app tessera -c 'SELECT count(*) FROM plans')" \
    || fail "tessera_app cannot log in with its password and read the plans"
  [ "$plans" -gt 0 ] || fail "tessera_app sees no plans"
  psql_as postgres postgres -c 'CREATE DATABASE tessera_restored OWNER tessera_owner'
  if ! "$PG_BIN/pg_dump" -h "$pg" -U postgres -d tessera -Fc -f "$pg/tessera.dump" \
    || ! "$PG_BIN/pg_restore" -h "$pg" -U postgres -d tessera_restored --exit-on-error "$pg/tessera.dump"; then
    fail "the database could not be dumped and restored as the README says"
  fi
  plans="$(PGPASSWORD='app@pass:word' psql_as tessera_app tessera_restored -c 'SELECT count(*) FROM plans')" \
    || fail "tessera_app cannot read the restored database"
  [ "$plans" -gt 0 ] || fail "the restored database has no plans"
  unset PGPASSWORD
  stop_pg
  trap - EXIT
  echo "ok -- roles, $(find migrations -name '*.sql' | wc -l) migrations as the owner, reads as the app role, dump and restore"
else
  log "deploy/postgres-init.sh: skipped (no PostgreSQL server binaries here)"
fi

# --- how the files fit together ----------------------------------------------------------------
log "versions, references and documented settings"
"$VENV/bin/python" "$TOOLS/checks.py" || fail "the deployment files disagree (above)"
