#!/usr/bin/env bash
# PostgreSQL for local development and tests, from Debian's packages.
# One database and one role per service; a role can open only its own database.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
RUN_DIR="${BAZAAR_RUN_DIR:-$REPO_ROOT/.run}"
STARTED_MARKER="$RUN_DIR/pids/postgres.started-by-bazaar"
PG_HOST="${BAZAAR_PG_HOST:-127.0.0.1}"
PG_PORT="${BAZAAR_PG_PORT:-5432}"
# Every service database; the schema registry keeps its schemas in one too.
DATABASES=(auth product order inventory payment notification shipping registry)

usage() {
  cat <<USAGE
Usage: infra/postgres/pgctl.sh COMMAND

Commands:
  install        apt-get install postgresql if it is missing
  start          install, start the cluster if it is down, provision roles and databases
  restart        restart the cluster (drops every connection), e.g. once so that
                 pg_stat_statements is loaded; then provision
  provision      create (or update) one role and one database per service; idempotent
  drop-test-dbs [--since MS]
                 drop per-test databases (bazaar_test_*) more than an hour old; with
                 --since, those created since MS (Unix epoch milliseconds) that nobody is
                 connected to: a test run's own, once it is over. Each database left behind
                 costs PostgreSQL's autovacuum launcher a worker start per minute (1,500 of
                 them kept it at ~5 % of a core, and skewed 'make bench')
  stop           stop the cluster, only if 'start' started it
  status         print whether PostgreSQL accepts connections
  psql [ARGS]    psql as the postgres superuser

Environment: BAZAAR_RUN_DIR (default .run), BAZAAR_PG_HOST (127.0.0.1), BAZAAR_PG_PORT (5432).
Local credentials: role bazaar_<service>, password bazaar_<service>, database bazaar_<service>;
tests use role bazaar_admin (CREATEDB) to make a fresh database per test.

Statement statistics: the cluster loads pg_stat_statements (a file in the cluster's conf.d,
written by start and restart); a cluster that was already running without it needs one
'restart'. Every service database has the extension, and role bazaar_bench (password
bazaar_bench, pg_read_all_stats, may reset the statistics) lets 'make bench' count the
statements each service spends per checkout.
USAGE
}

log() { printf '[postgres] %s\n' "$*"; }
die() { printf '[postgres] error: %s\n' "$*" >&2; exit 1; }

as_postgres() { runuser -u postgres -- "$@"; }
superuser_psql() { as_postgres psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"; }

cluster() {
  # First cluster of the newest installed version: "VERSION NAME".
  pg_lsclusters --no-header 2>/dev/null | sort -k1,1nr | awk 'NR==1 {print $1, $2}'
}

install() {
  if command -v pg_lsclusters >/dev/null 2>&1 && [ -n "$(cluster)" ]; then
    return 0
  fi
  [ "$(id -u)" = 0 ] || die "PostgreSQL is not installed; run as root so apt-get can install it"
  log "installing PostgreSQL from Debian's packages (once per machine)..."
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  [ -n "$(cluster)" ] || die "postgresql installed but no cluster exists (pg_lsclusters is empty)"
}

MAX_CONNECTIONS=400

# conf.d file that makes the cluster load pg_stat_statements and take enough connections
# (Debian's postgresql.conf includes conf.d). Written only when its content differs, so an unchanged cluster is left alone.
configure() {
  local version name file content
  read -r version name <<<"$(cluster)"
  file="/etc/postgresql/$version/$name/conf.d/bazaar.conf"
  content="# Written by Bazaar's infra/postgres/pgctl.sh: statement statistics for 'make bench'.
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = top
pg_stat_statements.track_utility = on
# Every service keeps a pool, a relay lock and listeners; tests run many stacks side by side.
max_connections = $MAX_CONNECTIONS"
  if [ "$(cat "$file" 2>/dev/null)" != "$content" ]; then
    [ -w "$(dirname "$file")" ] || { log "cannot write $file (not root?); pg_stat_statements stays off"; return 0; }
    printf '%s\n' "$content" >"$file"
    chown postgres:postgres "$file" 2>/dev/null || true
    log "wrote $file (pg_stat_statements; takes effect at the next start)"
  fi
}

stat_statements_loaded() {
  superuser_psql -d postgres -At -c "SHOW shared_preload_libraries" | grep -q pg_stat_statements
}

is_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; }

wait_ready() {
  local deadline=$((SECONDS + ${1:-60}))
  until is_ready; do
    [ "$SECONDS" -lt "$deadline" ] || die "PostgreSQL did not accept connections on $PG_HOST:$PG_PORT within ${1:-60}s"
    sleep 0.2
  done
}

start() {
  install
  mkdir -p "$RUN_DIR/pids"
  if is_ready; then
    log "already running on $PG_HOST:$PG_PORT; reusing it"
  else
    configure
    read -r version name <<<"$(cluster)"
    log "starting cluster $version/$name..."
    pg_ctlcluster "$version" "$name" start
    touch "$STARTED_MARKER"
    wait_ready 60
    log "ready on $PG_HOST:$PG_PORT"
  fi
  provision
  if ! configured_settings_in_effect; then
    configure
    # Debian's package starts the cluster when it installs it, before it was configured: on a
    # fresh machine nobody is connected yet, so restart it now. Otherwise leave the clients be.
    if [ "$(bazaar_clients)" = 0 ]; then
      log "the running cluster predates its configuration; restarting it (nobody is connected)"
      restart
    else
      log "the running cluster predates its configuration (pg_stat_statements, max_connections);"
      log "'infra/postgres/pgctl.sh restart' applies it (drops every connection)"
    fi
  fi
}

configured_settings_in_effect() {
  stat_statements_loaded &&
    [ "$(superuser_psql -d postgres -At -c "SHOW max_connections")" -ge "$MAX_CONNECTIONS" ]
}

# Connections of Bazaar's roles: services, tests and tools.
bazaar_clients() {
  superuser_psql -d postgres -At -c "SELECT count(*) FROM pg_stat_activity WHERE usename LIKE 'bazaar%'"
}

restart() {
  install
  configure
  read -r version name <<<"$(cluster)"
  log "restarting cluster $version/$name..."
  pg_ctlcluster "$version" "$name" restart -m fast
  wait_ready 60
  log "ready on $PG_HOST:$PG_PORT"
  provision
}

provision() {
  local sql="" db role
  sql+="SELECT 'CREATE ROLE bazaar_admin LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bazaar_admin')\\gexec
ALTER ROLE bazaar_admin WITH LOGIN CREATEDB PASSWORD 'bazaar_admin';
"
  for db in "${DATABASES[@]}"; do
    role="bazaar_$db"
    sql+="SELECT 'CREATE ROLE $role LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$role')\\gexec
ALTER ROLE $role WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD '$role';
SELECT 'CREATE DATABASE $role OWNER $role' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$role')\\gexec
REVOKE ALL ON DATABASE $role FROM PUBLIC;
GRANT ALL ON DATABASE $role TO $role;
"
  done
  # Statement statistics: the extension in every service database (only a superuser may create
  # it) and in postgres, where bazaar_bench reads the view and resets it.
  sql+="SELECT 'CREATE ROLE bazaar_bench LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bazaar_bench')\\gexec
ALTER ROLE bazaar_bench WITH LOGIN NOCREATEDB NOCREATEROLE PASSWORD 'bazaar_bench';
GRANT pg_read_all_stats TO bazaar_bench;
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
GRANT EXECUTE ON FUNCTION pg_stat_statements_reset TO bazaar_bench;
"
  for db in "${DATABASES[@]}"; do
    sql+="\\connect bazaar_$db
CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
"
  done
  superuser_psql -d postgres <<<"$sql"
  log "roles and databases provisioned: ${DATABASES[*]}"
}

# Test databases whose creation time (Unix ms) meets CONDITION, e.g. ">= 1796600000000", one
# per line. Their names end in a UUID v7, whose first 48 bits are its creation time in ms.
test_databases_created() {
  superuser_psql -d postgres -At -c "
    SELECT datname FROM pg_database
     WHERE datname ~ '^bazaar_test_.*_[0-9a-f]{32}\$'
       AND ('x' || substr(right(datname, 32), 1, 12))::bit(48)::bigint $1"
}

drop_test_dbs() {
  if [ "${1:-}" = "--since" ]; then
    [[ "${2:-}" =~ ^[0-9]+$ ]] || die "drop-test-dbs --since needs Unix epoch milliseconds, got '${2:-}'"
    drop_test_dbs_since "$2"
    return
  fi
  [ "$#" -eq 0 ] || die "drop-test-dbs takes no argument but --since MS (got '$1')"
  local names
  # Only those older than an hour: tests running right now keep their databases.
  names=$(test_databases_created "< (extract(epoch FROM now() - interval '1 hour') * 1000)::bigint")
  if [ -z "$names" ]; then return 0; fi
  log "dropping $(wc -l <<<"$names") test database(s) from earlier runs"
  drop_databases "WITH (FORCE)" <<<"$names" >/dev/null
}

# Drops the databases named on stdin, one per line, in one session (a psql per database took
# 75 ms each): each DROP is a statement of its own, and one refused does not stop the others.
# Prints how many were refused.
drop_databases() {
  local option="$1"
  sed "s/.*/DROP DATABASE IF EXISTS \"&\" $option;/" \
    | superuser_psql -d postgres -v ON_ERROR_STOP=0 2>&1 >/dev/null | grep -c 'ERROR:' || true
}

# A finished run's databases. Without FORCE: one that somebody is still connected to (another
# run on the same machine, started within this one) is left, and goes an hour later.
drop_test_dbs_since() {
  local since="$1" names total dropped kept
  names=$(test_databases_created ">= $since")
  if [ -z "$names" ]; then return 0; fi
  total=$(wc -l <<<"$names")
  kept=$(drop_databases "" <<<"$names")
  dropped=$((total - kept))
  log "dropped $dropped test database(s) of this run; $kept in use left for later"
}

stop() {
  if [ ! -f "$STARTED_MARKER" ]; then
    log "not started by Bazaar; leaving it running"
    return 0
  fi
  read -r version name <<<"$(cluster)"
  log "stopping cluster $version/$name..."
  pg_ctlcluster "$version" "$name" stop -m fast || true
  rm -f "$STARTED_MARKER"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  restart) restart ;;
  provision) provision ;;
  drop-test-dbs) shift; drop_test_dbs "$@" ;;
  stop) stop ;;
  status) if is_ready; then echo "postgres: accepting connections on $PG_HOST:$PG_PORT"; else echo "postgres: not running"; exit 1; fi ;;
  psql) shift; superuser_psql "$@" ;;
  -h|--help|help) usage ;;
  *) usage >&2; exit 2 ;;
esac
