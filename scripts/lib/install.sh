#!/usr/bin/env bash
# Installs missing Debian/Ubuntu packages the project's scripts need, so `make run` and
# `make test` set a fresh machine up by themselves (pg.sh: the PostgreSQL server, mongo.sh:
# python3-venv, run.sh: curl, with-services.sh: chromium for the browser tests).
#
# Source it and call `install_packages WHAT PACKAGE...`, or run it:
#   scripts/lib/install.sh PACKAGE...
#
# It runs `apt-get update` (once per process) and `apt-get install -y PACKAGE...` when it
# may: as root, or through `sudo -n` when sudo needs no password. Otherwise, or without
# apt-get, or with AUTO_INSTALL=0, it prints the command to run and fails: it never asks
# for a password.

# A non-empty value once this process has run `apt-get update`.
_install_updated=${_install_updated:-}

_install_log() { echo "install: $*" >&2; }

# install_packages WHAT PACKAGE...: WHAT says, for the advice, what the packages are for.
install_packages() {
  local what=$1
  shift
  local how=()
  if [ "${AUTO_INSTALL:-1}" = 0 ]; then
    how=()
  elif ! command -v apt-get >/dev/null 2>&1; then
    how=()
  elif [ "$(id -u)" = 0 ]; then
    how=(env)
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    # sudo drops most of the environment; env passes DEBIAN_FRONTEND through it.
    how=(sudo -n env)
  fi
  if [ "${#how[@]}" = 0 ]; then
    _install_log "$what is missing. Install it with:"
    _install_log "  sudo apt-get install $*"
    if [ "${AUTO_INSTALL:-1}" = 0 ]; then
      _install_log "(AUTO_INSTALL=0: not installing it myself)"
    else
      _install_log "(not installing it myself: that needs apt-get and root or password-less sudo)"
    fi
    return 1
  fi
  _install_log "$what is missing; installing $* with apt-get"
  # A fresh image has no package lists at all; stale ones name files the mirror deleted.
  if [ -z "$_install_updated" ]; then
    "${how[@]}" DEBIAN_FRONTEND=noninteractive apt-get update -q >&2 || {
      _install_log "apt-get update failed"; return 1; }
    _install_updated=1
  fi
  "${how[@]}" DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >&2 || {
    _install_log "apt-get install $* failed"; return 1; }
}

# Run as a command rather than sourced.
if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  set -euo pipefail
  if [ "$#" = 0 ]; then
    echo "usage: $0 PACKAGE..." >&2
    exit 2
  fi
  install_packages "$*" "$@"
fi
