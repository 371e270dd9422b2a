#!/usr/bin/env bash
# `make run`: brings up PostgreSQL, Kafka, every service and the gateway, loads the demo
# catalog, prints where to go, and stops it all on Ctrl-C.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<USAGE
Usage: scripts/run.sh [--detach]

Builds the workspace, starts PostgreSQL and Kafka (reusing them when already up), applies the
topic catalog, loads the demo catalog, starts every service and the gateway, waits until each
answers /readyz, and prints the storefront URL. Ctrl-C (or 'make down') stops everything.
  --detach   return once everything is ready, leaving it running ('make down' stops it)
USAGE
  exit 0
fi
detach=false
[ "${1:-}" = "--detach" ] && detach=true

started=$SECONDS
"$REPO_ROOT/scripts/deps.sh"

say "building the workspace (first build on a machine takes ~5 minutes)"
(cd "$REPO_ROOT" && cargo build --workspace --bins)

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

Bazaar is running (ready after $((SECONDS - started)) s).

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
