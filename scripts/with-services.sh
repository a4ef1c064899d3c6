#!/usr/bin/env bash
# Runs a command with the servers the project needs, then stops what it started.
# PostgreSQL: DATABASE_URL if set and reachable, else the private cluster of scripts/pg.sh.
# MongoDB: MONGODB_URI if set and reachable, else the private server of scripts/mongo.sh, in
# memory unless MONGO_DB says otherwise (so a run starts from an empty database).
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
