#!/usr/bin/env bash
# Stops everything `make run` or `make test` started: services, gateway, Kafka, PostgreSQL.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  echo "Usage: scripts/down.sh   (stop services, the gateway, and Kafka/PostgreSQL if Bazaar started them)"
  exit 0
fi

stop_pid gateway
for entry in "${SERVICES[@]}"; do stop_pid "${entry%%:*}"; done
"$REPO_ROOT/infra/kafka/kafkactl.sh" stop
"$REPO_ROOT/infra/postgres/pgctl.sh" stop
