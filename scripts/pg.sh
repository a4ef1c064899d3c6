#!/usr/bin/env bash
# A private PostgreSQL cluster for development and tests, in a git-ignored directory, on a
# non-default port. It never touches a cluster it did not create.
#
#   scripts/pg.sh start   start (initialising if needed); prints the DATABASE_URL on stdout
#   scripts/pg.sh stop    stop the cluster if it runs
#   scripts/pg.sh status  exit 0 if it runs
#   scripts/pg.sh url     print the DATABASE_URL
#
# Environment: PG_PORT (default 54329; applies to an existing cluster too), PG_BIN (default:
# the bin directory of the oldest installed PostgreSQL from 15 on; when there is none, `start`
# installs the postgresql package, see scripts/lib/install.sh), PG_DIR (default .local/pg in
# the repository).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/install.sh
. "$root/scripts/lib/install.sh"
port=${PG_PORT:-54329}
db=${PG_DATABASE:-orders}

log() { echo "pg.sh: $*" >&2; }

if ! [[ $port =~ ^[0-9]+$ ]]; then
  log "PG_PORT must be a port number, not '$port'"
  exit 2
fi

# PG_BIN, else the oldest installed server from 15 on (Debian and Ubuntu's layout).
find_bin() {
  local dirs=() candidate version
  if [ -n "${PG_BIN:-}" ]; then
    if [ -x "$PG_BIN/postgres" ]; then bin=$PG_BIN; fi
    return 0
  fi
  mapfile -t dirs < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V)
  for candidate in "${dirs[@]}"; do
    version=${candidate%/bin}
    version=${version##*/}
    if [[ $version =~ ^[0-9]+$ ]] && [ "$version" -ge 15 ] && [ -x "$candidate/postgres" ]; then
      bin=$candidate
      return 0
    fi
  done
}

# Only `start` installs the server: stop and status have nothing to do without one.
ensure_bin() {
  [ -n "$bin" ] && return 0
  if install_packages "the PostgreSQL server (15 or newer)" postgresql; then
    find_bin
    [ -n "$bin" ] && return 0
    log "installed the postgresql package, but found no PostgreSQL 15 or newer server" \
      "in ${PG_BIN:-/usr/lib/postgresql/*/bin}"
  fi
  log "set PG_BIN to a directory holding postgres, initdb and pg_ctl (PostgreSQL 15 or newer),"
  log "or point DATABASE_URL at a server you run."
  exit 1
}

bin=
find_bin
# Before anything below creates a postgres user the package would create its own way.
if [ "${1:-}" = start ]; then ensure_bin; fi

# PostgreSQL refuses to run as root: as root, run it as the 'postgres' system user.
as_owner() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

dir=${PG_DIR:-$root/.local/pg}
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres
  mkdir -p "$dir"
  chown postgres: "$dir"
  if ! runuser -u postgres -- test -w "$dir"; then
    # The checkout is not reachable by the postgres user (e.g. under /root): keep the
    # cluster in a per-checkout (per-PG_DIR when set) directory under /tmp instead.
    key=$root
    [ -n "${PG_DIR:-}" ] && key=$dir
    dir=/tmp/order-backend-pg-$(echo -n "$key" | md5sum | cut -c1-12)
    mkdir -p "$dir" && chown postgres: "$dir" && chmod 700 "$dir"
    log "checkout not accessible to user postgres; using $dir"
  fi
else
  mkdir -p "$dir"
fi
data=$dir/data
logfile=$dir/postgres.log
url="postgres://postgres@127.0.0.1:$port/$db"

running() { [ -n "$bin" ] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; }

# The port the running cluster listens on (line 4 of postmaster.pid).
running_port() { sed -n 4p "$data/postmaster.pid" 2>/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

init_cluster() {
  # A data directory without a control file is a half-finished initdb: start over.
  if [ -d "$data" ] && [ ! -f "$data/global/pg_control" ]; then
    log "removing half-initialised $data"
    rm -rf "$data"
  fi
  [ -d "$data" ] && return 0
  log "initialising a private cluster in $data"
  as_owner "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  cat >>"$data/postgresql.conf" <<CONF
# project-local development cluster
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = ''
max_connections = 300
shared_buffers = 256MB
# a forgotten open transaction holds the event tail back; end it
idle_in_transaction_session_timeout = '60s'
CONF
}

start() {
  init_cluster
  if running; then
    local actual
    actual=$(running_port)
    if [ -n "$actual" ] && [ "$actual" != "$port" ]; then
      log "already running on port $actual, not $port; run scripts/pg.sh stop first" \
        "(with the same PG_DIR), or use PG_PORT=$actual"
      exit 1
    fi
    log "already running on port $port"
  else
    if port_busy; then
      log "port $port is in use by another program; set PG_PORT to a free port or DATABASE_URL to a server"
      exit 1
    fi
    # pg_ctl clears a stale postmaster.pid whose process is gone.
    # The port is given here, not only in postgresql.conf at initdb, so PG_PORT applies to
    # an existing cluster too. Commit timestamps let `make bench` (S3) time commit-to-view.
    options="-p $port -c track_commit_timestamp=on"
    # pg_stat_statements, where the server has it, gives `make bench` (S1) PostgreSQL's own
    # cost of each statement, those inside functions included.
    if [ -f "$("$bin/pg_config" --pkglibdir 2>/dev/null || echo "$bin/../lib")/pg_stat_statements.so" ]; then
      options="$options -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
    fi
    as_owner "$bin/pg_ctl" -D "$data" -l "$logfile" -o "$options" -w -t 60 start >/dev/null || {
      log "failed to start; last lines of $logfile:"; tail -n 20 "$logfile" >&2; exit 1; }
    log "started on port $port"
  fi
  if ! as_owner "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "select 1 from pg_database where datname = '$db'" 2>/dev/null | grep -q 1; then
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres "$db" 2>/dev/null || \
      psql "postgres://postgres@127.0.0.1:$port/postgres" -qc "create database $db" >/dev/null
  fi
  echo "$url"
}

stop() {
  if [ -d "$data" ] && running; then
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null
    log "stopped"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
