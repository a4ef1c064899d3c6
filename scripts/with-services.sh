#!/usr/bin/env bash
# Runs a command with the servers the project needs, then stops what it started.
# PostgreSQL: DATABASE_URL if set and reachable, else the private cluster of scripts/pg.sh.
# MongoDB: MONGODB_URI if set and reachable, else the private server of scripts/mongo.sh, in
# memory unless MONGO_DB says otherwise (so a run starts from an empty database).
# Chromium, for the browser tests: installed when missing if the command is `cargo test` (what
# `make test` runs; `make bench` does not want it) or WITH_BROWSER=1; WITH_BROWSER=0 never
# installs it. Without it the browser tests skip, unless CI is set: then they fail.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

started_pg=0
started_mongo=0
cleanup() {
  if [ "$started_mongo" = 1 ]; then "$root/scripts/mongo.sh" stop || true; fi
  if [ "$started_pg" = 1 ]; then "$root/scripts/pg.sh" stop || true; fi
}
trap cleanup EXIT INT TERM

# Whether the first host of scheme://[user[:password]@]host[:port][,host...][/path][?query]
# accepts TCP connections; DEFAULT_PORT when the URL names none.
reachable() {
  local url=$1 default_port=$2 hostport host port
  hostport=$(echo "$url" | sed -E 's#^[a-z+]+://([^@/?]*@)?([^/?]*).*#\2#')
  hostport=${hostport%%,*}
  if [[ $hostport == \[* ]]; then # [IPv6]:port
    host=${hostport%%]*}; host=${host#[}
    port=${hostport#*]}; port=${port#:}
  else
    host=${hostport%:*}; port=${hostport##*:}
    [ "$host" = "$hostport" ] && port=
  fi
  # A host that drops packets would otherwise hang the connect for minutes.
  timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${host:-127.0.0.1}" "${port:-$default_port}" 2>/dev/null
}

# The tests' own rule (test_support::browser::on_ci): set, and not empty, 0 or false.
on_ci() { case "${CI:-}" in "" | 0 | false) return 1 ;; *) return 0 ;; esac; }

wants_browser() {
  case "${WITH_BROWSER:-}" in
    1) return 0 ;;
    0) return 1 ;;
  esac
  [ "${1:-}" = cargo ] && [ "${2:-}" = test ]
}

# $CHROMIUM names a browser of the caller's choosing; the tests use it instead.
if wants_browser "$@" && [ -z "${CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
  # shellcheck source=lib/install.sh
  . "$root/scripts/lib/install.sh"
  # First, so a CI run without it fails before any server starts. fonts-liberation is
  # chromium's recommended font (install_packages skips recommends): screenshots then look the
  # same on every machine.
  if ! install_packages "Chromium (for the browser tests)" chromium chromium-driver fonts-liberation; then
    if on_ci; then
      echo "with-services: CI is set and Chromium could not be installed; the browser tests would fail" >&2
      exit 1
    fi
    echo "with-services: no Chromium; the browser tests will be skipped" >&2
  fi
fi

if [ -n "${DATABASE_URL:-}" ] && reachable "$DATABASE_URL" 5432; then
  echo "with-services: using DATABASE_URL" >&2
else
  [ -n "${DATABASE_URL:-}" ] && echo "with-services: DATABASE_URL is not reachable; starting the private cluster" >&2
  if ! "$root/scripts/pg.sh" status; then started_pg=1; fi
  DATABASE_URL=$("$root/scripts/pg.sh" start)
  export DATABASE_URL
fi

# mongodb+srv:// names a DNS SRV record, not a host to connect to: the driver resolves it.
if [ -n "${MONGODB_URI:-}" ] && { [[ $MONGODB_URI == mongodb+srv://* ]] || reachable "$MONGODB_URI" 27017; }; then
  echo "with-services: using MONGODB_URI" >&2
else
  [ -n "${MONGODB_URI:-}" ] && echo "with-services: MONGODB_URI is not reachable; starting the private server" >&2
  if ! "$root/scripts/mongo.sh" status; then started_mongo=1; fi
  MONGODB_URI=$(MONGO_DB=${MONGO_DB:-memory} "$root/scripts/mongo.sh" start)
  export MONGODB_URI
fi

"$@"
