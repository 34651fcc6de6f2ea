#!/usr/bin/env bash
# postgres-test-server.sh - run a real PostgreSQL on this machine for Prefect's server.
#
# Why: a shared Prefect server should keep its state in PostgreSQL (SQLite refuses writes with
# "database is locked" under load); tests, CI and benchmarks/backtoback.py run `prefect server
# start` on it. Installs Debian's postgresql if missing, creates its own cluster under
# $PGDATA (not Debian's 15/main) and starts it by hand as the postgres user (no init system
# needed), on 127.0.0.1:$PGPORT, with a role and database "prefect" (password "prefect").
# Run as root.
#
# Usage: scripts/postgres-test-server.sh start|stop|status|url|fresh NAME
#   start       idempotent; prints the connection URL for PREFECT_SERVER_DATABASE_CONNECTION_URL
#   stop        stops the server (the data stays in $PGDATA)
#   status      exit 0 if it accepts connections, 1 otherwise
#   url         prints the connection URL of database "prefect"
#   fresh NAME  (re)creates an empty database NAME owned by prefect (a test's own) and prints its URL
# Environment: PGPORT (default 55432), PGDATA (default /var/lib/postgresql/bioimage-tasks-test),
#              POSTGRES_TEST_TIMEOUT seconds (default 60).
set -euo pipefail

PORT=${PGPORT:-55432}
DATA=${PGDATA:-/var/lib/postgresql/bioimage-tasks-test}
TIMEOUT=${POSTGRES_TEST_TIMEOUT:-60}
LOG=$DATA/server.log
DB=prefect
die() { echo "postgres-test-server: ERROR: $*" >&2; exit 1; }
log() { echo "postgres-test-server: $*" >&2; }

bindir() {  # the newest installed server's binaries
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [[ -n $d && -x $d/pg_ctl ]] || return 1
    echo "$d"
}

ensure_installed() {
    bindir >/dev/null && return 0
    log "installing postgresql ..."
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends postgresql >/dev/null || die "apt-get install postgresql failed"
    bindir >/dev/null || die "postgresql installed but no pg_ctl found"
}

as_postgres() { runuser -u postgres -- "$@"; }
url() { echo "postgresql+asyncpg://prefect:prefect@127.0.0.1:$PORT/${1:-$DB}"; }
ready() { as_postgres "$(bindir)/pg_isready" -q -h 127.0.0.1 -p "$PORT" 2>/dev/null; }
psql_() { PGOPTIONS='--client-min-messages=warning' as_postgres "$(bindir)/psql" -h 127.0.0.1 -p "$PORT" -d postgres -v ON_ERROR_STOP=1 -qtA "$@"; }

cmd_start() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    ensure_installed
    local bin; bin=$(bindir)
    if ready; then log "already running on port $PORT"; url; return 0; fi
    if [[ ! -s $DATA/PG_VERSION ]]; then
        mkdir -p "$DATA" && chown postgres:postgres "$DATA" && chmod 0700 "$DATA"
        # trust for local sockets (setup), md5 for TCP (what Prefect uses)
        as_postgres "$bin/initdb" -D "$DATA" -U postgres --auth-local=trust --auth-host=md5 >/dev/null \
            || die "initdb failed"
        cat >> "$DATA/postgresql.conf" <<EOF
# scripts/postgres-test-server.sh
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DATA'
max_connections = 200
fsync = on
EOF
        # the setup's own psql calls connect over TCP as postgres without a password
        sed -i '1i host all postgres 127.0.0.1/32 trust' "$DATA/pg_hba.conf"
    fi
    as_postgres "$bin/pg_ctl" -D "$DATA" -l "$LOG" -w -t "$TIMEOUT" start >/dev/null \
        || { tail -n 30 "$LOG" >&2 || true; die "pg_ctl start failed"; }
    ready || die "server started but does not accept connections on port $PORT"
    if [[ -z $(psql_ -c "SELECT 1 FROM pg_roles WHERE rolname = 'prefect'") ]]; then
        psql_ -c "CREATE ROLE prefect LOGIN PASSWORD 'prefect'"
    fi
    if [[ -z $(psql_ -c "SELECT 1 FROM pg_database WHERE datname = '$DB'") ]]; then
        psql_ -c "CREATE DATABASE $DB OWNER prefect"
    fi
    log "running on 127.0.0.1:$PORT (data $DATA, log $LOG)"
    url
}

cmd_fresh() {
    local name=${1:-}
    [[ $name =~ ^[a-z_][a-z0-9_]*$ ]] || die "fresh needs a database name of [a-z0-9_], got '$name'"
    ready || die "not running (start it first)"
    psql_ -c "DROP DATABASE IF EXISTS $name WITH (FORCE)"
    psql_ -c "CREATE DATABASE $name OWNER prefect"
    url "$name"
}

cmd_stop() {
    [[ $EUID -eq 0 ]] || die "must run as root"
    local bin; bin=$(bindir) || { log "not installed"; return 0; }
    [[ -s $DATA/PG_VERSION ]] || { log "no cluster at $DATA"; return 0; }
    as_postgres "$bin/pg_ctl" -D "$DATA" -m fast -w -t "$TIMEOUT" stop >/dev/null 2>&1 || true
    log "stopped"
}

case ${1:-} in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) if bindir >/dev/null && ready; then log "running on port $PORT"; url; else log "not running"; exit 1; fi ;;
    url) url ;;
    fresh) [[ $EUID -eq 0 ]] || die "must run as root"; cmd_fresh "${2:-}" ;;
    *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
