#!/usr/bin/env bash
# Runs a command with the servers the project needs, then stops what it started.
# PostgreSQL: DATABASE_URL if set and reachable, else the private cluster of scripts/pg.sh.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

started_pg=0
cleanup() {
  if [ "$started_pg" = 1 ]; then "$root/scripts/pg.sh" stop || true; fi
}
trap cleanup EXIT INT TERM

pg_reachable() {
  local url=$1 hostport host port
  hostport=$(echo "$url" | sed -E 's#^[a-z]+://([^@/]*@)?([^/?]*).*#\2#')
  host=${hostport%:*}; port=${hostport##*:}
  [ "$host" = "$hostport" ] && port=5432
  (exec 3<>"/dev/tcp/${host:-127.0.0.1}/$port") 2>/dev/null
}

if [ -n "${DATABASE_URL:-}" ] && pg_reachable "$DATABASE_URL"; then
  echo "with-services: using DATABASE_URL" >&2
else
  [ -n "${DATABASE_URL:-}" ] && echo "with-services: DATABASE_URL is not reachable; starting the private cluster" >&2
  if ! "$root/scripts/pg.sh" status; then started_pg=1; fi
  DATABASE_URL=$("$root/scripts/pg.sh" start)
  export DATABASE_URL
fi

"$@"
