#!/usr/bin/env bash
# `make run`: the whole system on this machine, in the foreground.
#
# Builds the workspace, brings up PostgreSQL and a MongoDB-compatible server (or uses
# DATABASE_URL / MONGODB_URI when they are set and reachable), a local SMTP server that keeps
# each message as a file (scripts/mail.sh, unless SMTP_URL is set) and the payment sandbox
# (unless PAYMENT_PROVIDER_URL is set), applies migrations, starts write-service, projector,
# read-service and fulfilment, seeds demo data into an empty store, prints the URLs and a few
# curl examples, then streams the logs. Ctrl-C stops everything it started.
# Authentication is on: tokens are checked against AUTH_HS256_SECRET, which, unless it is
# set, is a development secret generated once into .local/auth-secret; the demo data goes in
# with a staff token, and ready-to-paste tokens for staff and a customer are printed.
# `scripts/run.sh stop` (make down) stops services left by a run that crashed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
# shellcheck source=lib/install.sh
. scripts/lib/install.sh
run_dir=$root/.local/run
log_dir=$root/.local/logs
mkdir -p "$run_dir" "$log_dir"

write_addr=${WRITE_SERVICE_ADDR:-127.0.0.1:8081}
read_addr=${READ_SERVICE_ADDR:-127.0.0.1:8082}
projector_addr=${PROJECTOR_ADDR:-127.0.0.1:8083}
fulfilment_addr=${FULFILMENT_ADDR:-127.0.0.1:8084}
sandbox_addr=${PAYMENT_SANDBOX_ADDR:-127.0.0.1:12111}
services=(write-service projector read-service fulfilment payment-sandbox)

log() { echo "run: $*" >&2; }

# Where `cargo build` puts the binaries (a relative CARGO_TARGET_DIR is relative to the root).
target_dir=${CARGO_TARGET_DIR:-target}
[[ $target_dir == /* ]] || target_dir=$root/$target_dir
bin_dir=$target_dir/debug

# Whether PID is our service NAME: its program (argv[0], which run.sh makes absolute) is
# this checkout's binary. Earlier versions started `target/debug/NAME` from the root, so a
# relative argv[0] counts when it resolves, from the process's own directory, to one. A pid
# file naming a pid since reused by any other program therefore never matches.
ours() {
  local pid=$1 name=$2 args=() program cwd
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  mapfile -d '' args 2>/dev/null <"/proc/$pid/cmdline" || return 1
  program=${args[0]:-}
  if [[ $program != /* ]]; then
    cwd=$(readlink "/proc/$pid/cwd" 2>/dev/null) || return 1
    program=$cwd/$program
  fi
  [ "$program" = "$bin_dir/$name" ] || [ "$program" = "$root/target/debug/$name" ]
}

stop_services() {
  local name pid
  for name in "${services[@]}"; do
    [ -f "$run_dir/$name.pid" ] || continue
    pid=$(cat "$run_dir/$name.pid")
    if ours "$pid" "$name"; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do ours "$pid" "$name" || break; sleep 0.1; done
      # Only if it is still ours: once it exited its pid may be reused.
      if ours "$pid" "$name"; then kill -KILL "$pid" 2>/dev/null || true; fi
      log "stopped $name (pid $pid)"
    fi
    rm -f "$run_dir/$name.pid"
  done
}

# A token for the secret in AUTH_HS256_SECRET: `token SUB [--staff]`, valid for a day.
token() {
  "$bin_dir/write-service" token --sub "$1" "${@:2}" --ttl 24h
}

# One write-service request as staff; any answer but 2xx stops the seeding and shows the answer.
call() {
  local method=$1 url=$2 body=${3:-} out status
  out=$(curl -sS -X "$method" "$url" -H "authorization: Bearer $seed_token" -H 'content-type: application/json' -d "$body" -w '\n%{http_code}') || return 1
  status=${out##*$'\n'}
  if [[ $status != 2?? ]]; then
    log "$method $url answered $status: ${out%$'\n'*}"
    return 1
  fi
}

# The demo catalogue, stock and orders, through the write-service at URL. Orders are
# priced by the catalogue (lines carry no unitPriceCents) and can be confirmed only when
# the stock received covers them, so the products come first.
seed_demo() {
  local w=$1
  # Setting a product's details again with the same values appends nothing, so this runs
  # every time: a store seeded before products had prices gets them.
  call PUT "$w/products/keyboard" '{"name": "Mechanical keyboard", "unitPriceCents": 8999}'
  call PUT "$w/products/mouse" '{"name": "Wireless mouse", "unitPriceCents": 2499}'
  call PUT "$w/products/monitor" '{"name": "27-inch monitor", "unitPriceCents": 24900}'
  # Demo orders have fixed ids, so a second run sees them and does not seed twice.
  demo_id() { printf '00000000-0000-4000-8000-%012d' "$1"; }
  if curl -fsS -H "authorization: Bearer $seed_token" "$w/orders/$(demo_id 1)/state" >/dev/null 2>&1; then
    log "the event store has the demo orders; not seeding them again"
    return 0
  fi
  log "seeding demo data"
  call POST "$w/products/keyboard/stock" '{"quantity": 40}'
  call POST "$w/products/mouse/stock" '{"quantity": 120}'
  call POST "$w/products/monitor/stock" '{"quantity": 10}'
  # Until the order is paid, for at most SEED_PAYMENT_WAIT seconds (default 30).
  wait_paid() {
    local id=$1 state deadline=$((SECONDS + ${SEED_PAYMENT_WAIT:-30}))
    while state=$(curl -fsS -H "authorization: Bearer $seed_token" "$w/orders/$id/state" 2>/dev/null || true); [[ $state != *'"status":"paid"'* ]]; do
      if ((SECONDS >= deadline)); then
        log "order $id was not paid within ${SEED_PAYMENT_WAIT:-30} s (is the fulfilment service running?)"
        return 1
      fi
      sleep 0.2
    done
  }
  order() { # number, user, items JSON, then lifecycle steps
    local id user=$2 items=$3 step
    id=$(demo_id "$1")
    shift 3
    call POST "$w/orders" "{\"orderId\": \"$id\", \"userId\": \"$user\", \"items\": $items}"
    for step in "$@"; do
      case $step in
        confirm) call POST "$w/orders/$id/confirm" '{"paymentMethod": "pm_card_visa"}' ;;
        # Only a paid order ships: wait for the fulfilment process to capture the payment.
        ship) wait_paid "$id" || return 1; call POST "$w/orders/$id/ship" '{"carrier": "DHL", "trackingNumber": "JD014600003SE"}' ;;
        cancel) call POST "$w/orders/$id/cancel" '{"reason": "changed my mind"}' ;;
        *) call POST "$w/orders/$id/$step" ;;
      esac
    done
  }
  order 1 alice '[{"productId": "keyboard", "quantity": 1}, {"productId": "mouse", "quantity": 2}]' confirm ship deliver
  order 2 alice '[{"productId": "monitor", "quantity": 1}]' confirm
  order 3 bob '[{"productId": "mouse", "quantity": 1}]' confirm cancel
  order 4 bob '[{"productId": "keyboard", "quantity": 2}]'
  order 5 carol '[{"productId": "monitor", "quantity": 2}, {"productId": "mouse", "quantity": 1}]' confirm ship
  order 6 carol '[{"productId": "keyboard", "quantity": 1}]' cancel
}

# `scripts/run.sh seed`: only the demo data, into the write-service at WRITE_SERVICE_ADDR
# whose secret is AUTH_HS256_SECRET (the end-to-end tests check it against the real services
# this way).
if [ "${1:-}" = seed ]; then
  seed_token=$(token shop-admin --staff)
  seed_demo "http://$write_addr"
  exit 0
fi

if [ "${1:-}" = stop ]; then
  stop_services
  exit 0
fi

port_of() { echo "${1##*:}"; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

reachable() {
  local hostport
  hostport=$(echo "$1" | sed -E 's#^[a-z+]+://([^@/?]*@)?([^/?,]*).*#\2#')
  timeout 5 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "${hostport%:*}" "${hostport##*:}" 2>/dev/null
}

# A crashed earlier run may still hold our ports: stop what is ours, refuse what is not.
stop_services
ports=("$write_addr" "$read_addr" "$projector_addr" "$fulfilment_addr")
[ -n "${PAYMENT_PROVIDER_URL:-}" ] || ports+=("$sandbox_addr")
for addr in "${ports[@]}"; do
  if port_busy "$(port_of "$addr")"; then
    log "port $(port_of "$addr") is in use by another program; free it or set WRITE_SERVICE_ADDR / READ_SERVICE_ADDR / PROJECTOR_ADDR / FULFILMENT_ADDR / PAYMENT_SANDBOX_ADDR"
    exit 1
  fi
done

# The readiness checks and the demo data go through curl.
if ! command -v curl >/dev/null; then
  install_packages "curl" curl || exit 1
fi

log "building the workspace"
cargo build --workspace --bins

started_pg=0 started_mongo=0 started_mail=0
cleanup() {
  trap - EXIT INT TERM
  [ -n "${tail_pid:-}" ] && kill "$tail_pid" 2>/dev/null || true
  stop_services
  [ "$started_mail" = 1 ] && scripts/mail.sh stop || true
  [ "$started_mongo" = 1 ] && scripts/mongo.sh stop || true
  [ "$started_pg" = 1 ] && scripts/pg.sh stop || true
  log "everything this run started is stopped"
}
# Every way out stops what this run started. Ctrl-C or SIGTERM is the user stopping it, a
# success (exit 0, so make reports no error); a service that dies is a failure (exit 1).
trap cleanup EXIT
trap 'exit 0' INT TERM

if [ -n "${DATABASE_URL:-}" ] && reachable "$DATABASE_URL"; then
  log "using DATABASE_URL"
else
  scripts/pg.sh status || started_pg=1
  DATABASE_URL=$(scripts/pg.sh start)
fi
if [ -n "${MONGODB_URI:-}" ] && reachable "$MONGODB_URI"; then
  log "using MONGODB_URI"
else
  scripts/mongo.sh status || started_mongo=1
  MONGODB_URI=$(scripts/mongo.sh start)
fi
# Customer emails: to SMTP_URL when set, else to a local server that keeps them as files.
if [ -z "${SMTP_URL:-}" ]; then
  scripts/mail.sh status || started_mail=1
  SMTP_URL=$(scripts/mail.sh start)
  mail_dir=$(scripts/mail.sh dir)
fi
# Payments: to PAYMENT_PROVIDER_URL when set (e.g. https://api.stripe.com with your
# PAYMENT_API_KEY), else to the local sandbox of Stripe's test mode.
use_sandbox=0
if [ -z "${PAYMENT_PROVIDER_URL:-}" ]; then
  use_sandbox=1
  PAYMENT_PROVIDER_URL=http://$sandbox_addr
  PAYMENT_API_KEY=${PAYMENT_API_KEY:-sk_test_sandbox}
fi
export DATABASE_URL MONGODB_URI SMTP_URL PAYMENT_PROVIDER_URL PAYMENT_API_KEY
export WRITE_SERVICE_ADDR=$write_addr READ_SERVICE_ADDR=$read_addr PROJECTOR_ADDR=$projector_addr
export FULFILMENT_ADDR=$fulfilment_addr PAYMENT_SANDBOX_ADDR=$sandbox_addr
# The services check tokens with AUTH_HS256_SECRET (and AUTH_JWKS when set). Without one,
# a development secret is made once and kept, so tokens printed earlier stay valid.
if [ -z "${AUTH_HS256_SECRET:-}" ]; then
  secret_file=$root/.local/auth-secret
  if [ ! -s "$secret_file" ]; then
    (umask 077; head -c 32 /dev/urandom | base64 | tr -d '\n' >"$secret_file")
    log "made a development token secret in $secret_file"
  fi
  AUTH_HS256_SECRET=$(cat "$secret_file")
fi
export AUTH_HS256_SECRET

"$bin_dir/write-service" migrate

start() {
  local name=$1
  shift
  : >"$log_dir/$name.log"
  # By absolute path: `ours` (and so make down) recognises it by that.
  "$bin_dir/$name" "$@" >>"$log_dir/$name.log" 2>&1 &
  echo $! >"$run_dir/$name.pid"
}
start write-service serve
start projector run
start read-service
if [ "$use_sandbox" = 1 ]; then
  start payment-sandbox
else
  services=(write-service projector read-service fulfilment)
fi
start fulfilment run

wait_ready() {
  local name=$1 addr=$2
  for _ in $(seq 150); do
    curl -fsS "http://$addr/health/ready" >/dev/null 2>&1 && return 0
    kill -0 "$(cat "$run_dir/$name.pid")" 2>/dev/null || { log "$name exited; its log:"; tail -n 20 "$log_dir/$name.log" >&2; exit 1; }
    sleep 0.2
  done
  log "$name did not become ready; see $log_dir/$name.log"
  exit 1
}
wait_ready write-service "$write_addr"
wait_ready projector "$projector_addr"
wait_ready read-service "$read_addr"
[ "$use_sandbox" = 0 ] || wait_ready payment-sandbox "$sandbox_addr"
wait_ready fulfilment "$fulfilment_addr"

w="http://$write_addr"
r="http://$read_addr"
seed_token=$(token shop-admin --staff)
seed_demo "$w"
staff_token=$(token shop-admin --staff)
customer_token=$(token dave)

cat <<TXT

  The order backend is running.
    write-service  $w      (OpenAPI: $w/openapi.json)
    read-service   $r      (OpenAPI: $r/openapi.json, dashboard: $r/dashboard/summary, staff)
    dashboard      $r/dashboard#token=$staff_token
                   (open it in a browser: live figures, charts and alerts; the token stays in the page)
    projector      http://$projector_addr/health/ready   (metrics: /metrics; status: $bin_dir/projector status)
    fulfilment     http://$fulfilment_addr/health/ready   (metrics: /metrics; status: $bin_dir/fulfilment status)
    payments       $PAYMENT_PROVIDER_URL$([ "$use_sandbox" = 1 ] && echo "   (the sandbox of Stripe's test mode; ledger: $PAYMENT_PROVIDER_URL/sandbox/ledger)")
    emails         ${mail_dir:+$mail_dir/new/   (one file per message, via }$SMTP_URL${mail_dir:+)}
    logs           $log_dir/

  Tokens for 24 h (more: $bin_dir/write-service token --sub NAME [--staff] [--ttl 1h]):
  staff run the shop, a customer sees and changes only their own orders.

    export STAFF_TOKEN=$staff_token
    export DAVE_TOKEN=$customer_token

  Try it (copy and paste, after the two exports):

    # 1. as staff: a product, its name and price, then stock to sell
    curl -s -X PUT $w/products/lamp -H "authorization: Bearer \$STAFF_TOKEN" \\
      -H 'content-type: application/json' -d '{"name": "Desk lamp", "unitPriceCents": 3999}'
    curl -s -X POST $w/products/lamp/stock -H "authorization: Bearer \$STAFF_TOKEN" \\
      -H 'content-type: application/json' -d '{"quantity": 5}'

    # 2. as the customer dave: order it (for himself; the price comes from the catalogue)
    curl -s -X POST $w/orders -H "authorization: Bearer \$DAVE_TOKEN" \\
      -H 'content-type: application/json' -d '{"items": [{"productId": "lamp", "quantity": 2}]}'

    # 3. check out with a payment method, which reserves its stock (use the orderId from step 2);
    #    the fulfilment process charges it within a second: the order becomes paid and two
    #    emails arrive (received, payment received). pm_card_chargeDeclined is declined: the
    #    order is cancelled and its stock released.
    curl -s -X POST $w/orders/ORDER_ID/confirm -H "authorization: Bearer \$DAVE_TOKEN" \\
      -H 'content-type: application/json' -d '{"paymentMethod": "pm_card_visa", "email": "dave@example.com"}'
    curl -s $w/orders/ORDER_ID/state -H "authorization: Bearer \$DAVE_TOKEN"
${mail_dir:+    ls $mail_dir/new/
}
    # 4. read it back, waiting for the views to apply your write (use the position from step 3);
    #    dave sees his orders only (another's answers 404), staff see the stock and the sales
    curl -s $r/orders/ORDER_ID -H "authorization: Bearer \$DAVE_TOKEN" -H 'X-Consistency-Token: POSITION'
    curl -s $r/users/dave/orders -H "authorization: Bearer \$DAVE_TOKEN"
    curl -s $r/inventory/lamp -H "authorization: Bearer \$STAFF_TOKEN" -H 'X-Consistency-Token: POSITION'

  Ctrl-C stops everything this run started.

TXT

logs=()
for name in "${services[@]}"; do logs+=("$log_dir/$name.log"); done
tail -n 0 -F "${logs[@]}" &
tail_pid=$!
# Stay up while the services do; if one dies, say so and stop the rest.
# No command substitution in this loop: it is where Ctrl-C lands, and bash can run the trap
# while a `$(...)` child is still being parsed ("unexpected EOF", exit 2 instead of 0).
while :; do
  for name in "${services[@]}"; do
    pid=0
    read -r pid <"$run_dir/$name.pid" 2>/dev/null || true
    if ! kill -0 "${pid:-0}" 2>/dev/null; then
      log "$name exited; stopping"
      exit 1
    fi
  done
  sleep 1
done
