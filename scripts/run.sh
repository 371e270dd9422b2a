#!/usr/bin/env bash
# `make run`: brings up PostgreSQL, Kafka, every service and the gateway, loads the demo
# catalog, prints where to go, and stops it all on Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/run.sh [--detach] [--release] [--bin-dir DIR]

Builds the workspace, starts PostgreSQL and Kafka (reusing them when already up), applies the
topic catalog, loads the demo catalog, starts every service and the gateway, waits until each
answers /readyz, and prints the storefront URL. Ctrl-C (or 'make down') stops everything.
  --detach        return once everything is ready, leaving it running ('make down' stops it)
  --release       build and run the release build (optimised, as in production; the one to
                  measure). Target directory: $RELEASE_TARGET_DIR
                  (BAZAAR_RELEASE_TARGET_DIR); the default debug build goes to $CARGO_TARGET_DIR.
                  Same as BAZAAR_RELEASE=1, or 'make run RELEASE=1' / 'make up RELEASE=1'.
  --bin-dir DIR   build nothing; run the binaries in DIR (e.g. another checkout's release
                  build, to measure it with 'make bench'). Same as BAZAAR_BIN_DIR=DIR.
USAGE
}
detach=false
while [ "$#" -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --detach) detach=true ;;
    --release) BAZAAR_RELEASE=1 ;;
    --bin-dir) [ "$#" -ge 2 ] || die "--bin-dir needs a directory"; BAZAAR_BIN_DIR="$(cd "$2" && pwd)" || die "no directory $2"; shift ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done
use_profile

started=$SECONDS
"$REPO_ROOT/scripts/deps.sh"

build_binaries
for name in bazaar gateway schema-registry payment-gateway auth-service; do
  [ -x "$BIN_DIR/$name" ] || die "no $BIN_DIR/$name (build it first, or check --bin-dir)"
done

cleanup() {
  trap - INT TERM EXIT
  echo
  say "stopping Bazaar"
  "$REPO_ROOT/scripts/down.sh"
  exit 0
}
$detach || trap cleanup INT TERM EXIT

say "starting PostgreSQL and Kafka"
"$REPO_ROOT/infra/postgres/pgctl.sh" start
"$REPO_ROOT/infra/kafka/kafkactl.sh" start
"$BIN_DIR/bazaar" wait-kafka --timeout-secs 60
"$BIN_DIR/bazaar" topics apply

say "loading the demo catalog"
(cd "$REPO_ROOT" && "$(binary_of product)" seed-demo && "$(binary_of inventory)" seed-demo)

say "starting services"
for entry in "${SERVICES[@]}"; do start_process "${entry%%:*}"; done
start_process gateway

say "waiting for every /readyz"
for entry in "${SERVICES[@]}" "gateway:$GATEWAY_PORT"; do
  name="${entry%%:*}" port="${entry##*:}"
  if wait_ready "$name" "$port" 60; then
    printf '  %-13s ready   http://127.0.0.1:%s   log: %s\n' "$name" "$port" "$LOG_DIR/$name.log"
  else
    printf '  %-13s NOT READY after 60 s; last log lines:\n' "$name"
    tail -n 20 "$LOG_DIR/$name.log" || true
    exit 1
  fi
done

cat <<DONE

Bazaar is running (ready after $((SECONDS - started)) s; binaries: $BIN_DIR).

  Storefront:   http://127.0.0.1:$GATEWAY_PORT/
  Public API:   http://127.0.0.1:$GATEWAY_PORT/api/products
  API docs:     http://127.0.0.1:$GATEWAY_PORT/api/docs/   (OpenAPI: /api/openapi.json)
  Kafka:        127.0.0.1:9092      PostgreSQL: 127.0.0.1:5432
  Schemas:      http://127.0.0.1:8088/subjects   (Confluent-compatible registry)
  Logs:         $LOG_DIR  ('make logs')

DONE
if $detach; then
  echo "Stop it with 'make down'."
  exit 0
fi
echo "Press Ctrl-C to stop everything."
# Returns when a signal arrives or a service exits; either way, stop everything.
wait -n || true
echo "a process exited; see 'make logs'"
