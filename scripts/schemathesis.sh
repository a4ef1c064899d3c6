#!/usr/bin/env bash
# Runs schemathesis (from PyPI, pinned, in the project's git-ignored virtualenv) against one
# service's OpenAPI document with every check, a fixed seed and a bounded number of examples,
# so a run is repeatable and takes seconds. The e2e test `apis_hold_to_their_openapi_documents`
# calls it for both services; by hand:
#
#   scripts/schemathesis.sh http://127.0.0.1:8081/openapi.json [more schemathesis run options]
#
# Deliberate answers a generator cannot know of (a stale If-Match, a reused Idempotency-Key,
# rules across parameters) are allowed per operation in e2e/schemathesis.toml, with reasons.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=$root/.local/venv
version=4.32.5

log() { echo "schemathesis.sh: $*" >&2; }

if [ "$#" -lt 1 ]; then
  echo "usage: $0 OPENAPI_URL [schemathesis run options]" >&2
  exit 2
fi

installed() {
  "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('schemathesis') != '$version')" 2>/dev/null
}

if ! installed; then
  if [ ! -x "$venv/bin/python" ]; then
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
      # shellcheck source=lib/install.sh
      . "$root/scripts/lib/install.sh"
      install_packages "Python's venv module" python3-venv
    fi
    log "creating virtualenv $venv"
    python3 -m venv "$venv" >&2
  fi
  log "installing schemathesis $version into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$version" >&2 || {
    log "pip could not install schemathesis $version (is PyPI reachable?)"; exit 1; }
fi

url=$1
shift
# A scratch directory: schemathesis leaves its example database and reports in the working one.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
exec "$venv/bin/schemathesis" --no-color --config-file "$root/e2e/schemathesis.toml" run "$url" \
  --checks all --seed 20261129 --max-examples "${SCHEMATHESIS_EXAMPLES:-40}" --workers 1 \
  --generation-database none --request-timeout 30 "$@"
