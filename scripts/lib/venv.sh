# shellcheck shell=bash
# The project's git-ignored virtualenv and the pinned PyPI packages the scripts run from it
# (nx-27017 for scripts/mongo.sh, aiosmtpd for scripts/mail.sh), and stopping a server they
# started. Sourced after lib/install.sh; the caller defines `log`, `venv` (the virtualenv's
# folder) and, for `stop_pid`, `ours PID` and `pidfile`.

python_ok() {
  command -v python3 >/dev/null &&
    python3 -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 10))' 2>/dev/null
}

# Whether the virtualenv holds PACKAGE at exactly VERSION.
venv_has() {
  "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('$1') != '$2')" 2>/dev/null
}

# Installs PACKAGE==VERSION into the virtualenv, creating it (or rebuilding a broken one)
# first and installing Python with apt-get when it is missing; OTHERWISE is a last line of
# advice when Python cannot be had.
venv_install() {
  local package=$1 version=$2 otherwise=${3:-}
  venv_has "$package" "$version" && return 0
  if ! python_ok; then
    # Nothing apt-get starts may keep the caller's lock (fd 9).
    install_packages "Python 3.10 or newer with venv and pip" python3 python3-venv 9>&- || true
    if ! python_ok; then
      log "needs Python 3.10 or newer with venv and pip (Debian: python3 python3-venv)${otherwise:+,}"
      [ -z "$otherwise" ] || log "$otherwise"
      exit 1
    fi
  fi
  # A virtualenv whose interpreter no longer runs (Python moved or upgraded) is rebuilt.
  if [ -e "$venv" ] && ! "$venv/bin/python" -c '' 2>/dev/null; then
    log "removing broken virtualenv $venv"
    rm -rf "$venv"
  fi
  if [ ! -e "$venv/bin/python" ]; then
    log "creating virtualenv $venv"
    python3 -m venv "$venv" >&2
  fi
  log "installing $package $version into $venv"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$package==$version" >&2 || {
    log "pip could not install $package $version (is PyPI reachable?)"; exit 1; }
}

# SIGTERM, up to 10 s for a clean exit, then SIGKILL; only ever our own server.
stop_pid() {
  local pid=$1 i cmd
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do
    ours "$pid" || break
    sleep 0.1
  done
  if ours "$pid"; then
    log "pid $pid did not stop within 10 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for i in $(seq 20); do
      ours "$pid" || break
      sleep 0.1
    done
  fi
  rm -f "$pidfile"
}
