#!/usr/bin/env bash
# Regenerates the offline query data in .sqlx/ that sqlx's query macros build against (the
# build never asks a database: .cargo/config.toml sets SQLX_OFFLINE). With --check, only
# verifies that the committed data matches the code and migrations (make lint).
#
# Needs sqlx-cli 0.9 (`cargo install sqlx-cli --version 0.9.0 --locked --no-default-features
# --features postgres,rustls`) and a PostgreSQL server named by DATABASE_URL, e.g. through
# scripts/with-services.sh. The data comes from a scratch database migrated from
# migrations/; DATABASE_URL's own database is left alone.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${DATABASE_URL:?name a PostgreSQL server, e.g. run through scripts/with-services.sh}"

# scheme://authority/database?query -> the same server, another database.
query=
[[ $DATABASE_URL == *\?* ]] && query="?${DATABASE_URL#*\?}"
server=${DATABASE_URL%%\?*}
server=${server%/*}
url="$server/sqlx_prepare_$$$query"

sqlx database create --database-url "$url"
trap 'sqlx database drop -y --database-url "$url" >/dev/null 2>&1 || true' EXIT
sqlx migrate run --source "$root/migrations" --database-url "$url" >/dev/null
cd "$root"
DATABASE_URL=$url cargo sqlx prepare --workspace "$@"
