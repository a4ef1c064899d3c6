#!/usr/bin/env bash
# A private MongoDB-compatible server for development and tests: nx-27017 (MongoDB's wire
# protocol over SQLite, from PyPI), since real MongoDB cannot be installed everywhere. It lives
# in a git-ignored virtualenv and directory, on a non-default port, and never touches a server
# it did not start.
#
#   scripts/mongo.sh start   start (installing if needed: python3-venv with apt-get, see
#                            scripts/lib/install.sh, then nx-27017); prints the MONGODB_URI
#   scripts/mongo.sh stop    stop the server if it runs
#   scripts/mongo.sh status  exit 0 if it runs
#   scripts/mongo.sh url     print the MONGODB_URI
#
# Environment: MONGO_PORT (default 27117), MONGO_DB (default .local/mongo/data.db, a file that
# survives restarts; 'memory' for an in-memory database that starts empty), MONGO_DIR (default
# .local/mongo in the repository, for the log and pid files).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/install.sh
. "$root/scripts/lib/install.sh"
# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
port=${MONGO_PORT:-27117}
version=0.8.1
venv=$root/.local/venv

log() { echo "mongo.sh: $*" >&2; }

if ! [[ $port =~ ^[0-9]+$ ]]; then
  log "MONGO_PORT must be a port number, not '$port'"
  exit 2
fi

# The server daemonises with cd /, so every path it is given must be absolute.
dir=${MONGO_DIR:-$root/.local/mongo}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
db=${MONGO_DB:-$dir/data.db}
case "$db" in
  memory | /*) ;;
  *) db=$PWD/$db ;;
esac
pidfile=$dir/nx.pid
logfile=$dir/nx.log
url="mongodb://127.0.0.1:$port"

# Whether PID is our server (nx-27017 with this checkout's pid file), leaving its arguments in
# $cmd: after a crash the pid in a stale pid file may belong to any other program.
ours() {
  local args=()
  mapfile -d '' args 2>/dev/null <"/proc/$1/cmdline" || return 1
  cmd=" ${args[*]} "
  [[ $cmd == *nx-27017* && $cmd == *" --pid-file $pidfile "* ]]
}

# Whether any process of ours is left, pid file or not (the daemon writes it only once forked).
any_ours() {
  local p cmd
  for p in /proc/[0-9]*; do ours "${p#/proc/}" && return 0; done
  return 1
}

# The pid of our running server, else fail.
our_pid() {
  local pid cmd
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && ours "$pid" || return 1
  echo "$pid"
}

running() { our_pid >/dev/null; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

# Serialises starts and stops, so two at once cannot both find the port free.
lock() {
  exec 9>"$dir/lock"
  flock 9
}

installed() { venv_has nx-27017 "$version"; }

# The virtualenv, with nx-27017 in it.
ensure_venv() { venv_install nx-27017 "$version" "or point MONGODB_URI at a MongoDB server you run."; }

start() {
  lock
  local pid cmd i
  if pid=$(our_pid) && ours "$pid"; then
    if [[ $cmd != *" -p $port "* ]]; then
      local actual=${cmd#* -p }
      log "already running (pid $pid) on port ${actual%% *}, not $port; run scripts/mongo.sh stop" \
        "first (with the same MONGO_DIR), or use MONGO_PORT=${actual%% *}"
      exit 1
    fi
    [[ $cmd == *" --db $db "* ]] || log "note: the running server uses another database than MONGO_DB=$db"
    log "already running on port $port (pid $pid)"
    echo "$url"
    return
  fi
  if [ -e "$pidfile" ]; then
    log "removing stale $pidfile"
    rm -f "$pidfile"
  fi
  if port_busy; then
    log "port $port is in use by another program; set MONGO_PORT to a free port or MONGODB_URI to a server"
    exit 1
  fi
  ensure_venv
  # -d double-forks and writes the pid file itself; the daemon must not keep the lock (fd 9)
  # nor a caller's $(...) pipe open.
  "$venv/bin/nx-27017" -d --host 127.0.0.1 -p "$port" --db "$db" \
      --log-file "$logfile" --pid-file "$pidfile" </dev/null >>"$logfile" 2>&1 9>&- || {
    log "failed to start; last lines of $logfile:"; tail -n 20 "$logfile" >&2; exit 1; }
  for i in $(seq 150); do
    if pid=$(our_pid) && port_busy; then
      log "started on port $port (pid $pid)"
      echo "$url"
      return
    fi
    any_ours || break # it exited (e.g. the port was taken meanwhile)
    sleep 0.1
  done
  if pid=$(our_pid); then stop_pid "$pid"; fi
  log "failed to start (not listening after 15 s, or exited); last lines of $logfile:"
  tail -n 20 "$logfile" >&2
  exit 1
}

stop() {
  lock
  local pid
  if pid=$(our_pid); then
    stop_pid "$pid"
    log "stopped"
  elif [ -e "$pidfile" ]; then
    log "removing stale $pidfile"
    rm -f "$pidfile"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running ;;
  url) echo "$url" ;;
  *) echo "usage: $0 start|stop|status|url" >&2; exit 2 ;;
esac
