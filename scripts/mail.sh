#!/usr/bin/env bash
# A private SMTP server for development that keeps every message it receives as a file: the
# customers' emails of `make run` land here instead of anywhere real. It is aiosmtpd (from
# PyPI) with its Mailbox handler, writing a Maildir, in the project's git-ignored virtualenv
# (the one scripts/mongo.sh uses); it never touches a server it did not start.
#
#   scripts/mail.sh start    start (installing if needed); prints the SMTP URL on stdout
#   scripts/mail.sh stop     stop the server if it runs
#   scripts/mail.sh status   exit 0 if it runs
#   scripts/mail.sh install  install aiosmtpd into the virtualenv, start nothing (the tests'
#                            MailCatcher runs it on ports of its own)
#   scripts/mail.sh url      print the SMTP URL
#   scripts/mail.sh dir      print the Maildir: each message is a file in its new/ folder
#
# Environment: MAIL_PORT (default 2525), MAIL_DIR (default .local/mail in the repository; a
# relative path is taken from the current directory). The pid file is .local/run/mail.pid,
# the log .local/logs/mail.log.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib/install.sh
. "$root/scripts/lib/install.sh"
# shellcheck source=lib/venv.sh
. "$root/scripts/lib/venv.sh"
port=${MAIL_PORT:-2525}
version=1.4.6
venv=$root/.local/venv
run_dir=$root/.local/run
log_dir=$root/.local/logs
pidfile=$run_dir/mail.pid
logfile=$log_dir/mail.log

log() { echo "mail.sh: $*" >&2; }

if ! [[ $port =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
  log "MAIL_PORT must be a port number, not '$port'"
  exit 2
fi

maildir=${MAIL_DIR:-$root/.local/mail}
[[ $maildir == /* ]] || maildir=$PWD/$maildir
url="smtp://127.0.0.1:$port"

# Whether PID is our server (aiosmtpd run by this checkout's virtualenv), leaving its arguments
# in $cmd: after a crash the pid in a stale pid file may belong to any other program.
ours() {
  local args=()
  mapfile -d '' args 2>/dev/null <"/proc/$1/cmdline" || return 1
  cmd=" ${args[*]} "
  [[ $cmd == " $venv/bin/python -m aiosmtpd "* ]]
}

# The pid of our running server, else fail.
our_pid() {
  local pid cmd
  pid=$(cat "$pidfile" 2>/dev/null) || return 1
  [[ $pid =~ ^[0-9]+$ ]] && ours "$pid" || return 1
  echo "$pid"
}

running() { our_pid >/dev/null; }

# Whether PID is alive: not gone, and not a zombie (kill -0 succeeds on our own exited child).
alive() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

# Serialises starts and stops, so two at once cannot both find the port free.
lock() {
  mkdir -p "$run_dir"
  exec 9>"$run_dir/mail.lock"
  flock 9
}

installed() { venv_has aiosmtpd "$version"; }

# The virtualenv, with aiosmtpd in it.
ensure_venv() { venv_install aiosmtpd "$version"; }

start() {
  lock
  local pid cmd i
  if pid=$(our_pid) && ours "$pid"; then
    if [[ $cmd != *" -l 127.0.0.1:$port "* ]]; then
      local actual=${cmd#* -l 127.0.0.1:}
      log "already running (pid $pid) on port ${actual%% *}, not $port; run scripts/mail.sh stop" \
        "first, or use MAIL_PORT=${actual%% *}"
      exit 1
    fi
    [[ $cmd == *" $maildir " ]] || log "note: the running server writes another Maildir than MAIL_DIR=$maildir"
    log "already running on port $port (pid $pid)"
    echo "$url"
    return
  fi
  if [ -e "$pidfile" ]; then
    log "removing stale $pidfile"
    rm -f "$pidfile"
  fi
  if port_busy; then
    log "port $port is in use by another program; set MAIL_PORT to a free port or SMTP_URL to a server"
    exit 1
  fi
  ensure_venv
  # A Maildir is these three folders; Python's mailbox creates them only when the whole
  # directory is missing, so an existing empty MAIL_DIR would make every delivery fail.
  mkdir -p "$log_dir" "$maildir/cur" "$maildir/new" "$maildir/tmp"
  # -n: never switch to user nobody (aiosmtpd's default as root), which could not write the
  # Maildir. -u: SMTPUTF8, for addresses that are not ASCII. The Mailbox handler stores each message as one file under new/. setsid: a
  # Ctrl-C meant for the caller's terminal is not for the server. The server must not keep
  # the lock (fd 9) nor a caller's $(...) pipe open.
  setsid "$venv/bin/python" -m aiosmtpd -n -u -l "127.0.0.1:$port" \
      -c aiosmtpd.handlers.Mailbox "$maildir" </dev/null >>"$logfile" 2>&1 9>&- &
  pid=$!
  echo "$pid" >"$pidfile"
  for i in $(seq 150); do
    # alive, not ours: until the child has exec'd python, its command line is bash's.
    if ! alive "$pid"; then
      break # it exited (e.g. the port was taken meanwhile)
    fi
    if port_busy && ours "$pid"; then
      log "started on port $port (pid $pid); messages are files in $maildir/new"
      echo "$url"
      return
    fi
    sleep 0.1
  done
  if alive "$pid" && ours "$pid"; then stop_pid "$pid"; else rm -f "$pidfile"; fi
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

install() {
  lock
  ensure_venv
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) running ;;
  install) install ;;
  url) echo "$url" ;;
  dir) echo "$maildir" ;;
  *) echo "usage: $0 start|stop|status|install|url|dir" >&2; exit 2 ;;
esac
