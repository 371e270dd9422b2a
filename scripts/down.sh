#!/usr/bin/env bash
# Stops everything `make run`, `make cluster` or `make test` started: services (every instance),
# gateway, Mailpit, stripe-mock, Kafka (one broker or the cluster's three), PostgreSQL.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  echo "Usage: scripts/down.sh   (stop services and their instances, the gateway, and Kafka/PostgreSQL if Bazaar started them)"
  exit 0
fi

# The gateway first, so no request is sent to a service on its way down; then every service
# and instance at once (each drains in parallel).
stop_pid gateway
"$REPO_ROOT/scripts/prometheus.sh" stop
"$REPO_ROOT/scripts/jaeger.sh" stop
"$REPO_ROOT/scripts/mailpit.sh" stop
"$REPO_ROOT/scripts/stripe-mock.sh" stop
shopt -s nullglob
names=()
for entry in "${SERVICES[@]}"; do
  name="${entry%%:*}"
  names+=("$name")
  for file in "$PID_DIR/$name"-[0-9].pid; do
    label="$(basename "$file" .pid)"
    names+=("$label")
  done
done
stop_pids "${names[@]}"
"$REPO_ROOT/infra/kafka/kafkactl.sh" stop
cluster_nodes=("$PID_DIR"/kafka-[0-9].pid)
if [ "${#cluster_nodes[@]}" -gt 0 ]; then
  "$REPO_ROOT/infra/kafka/kafkactl.sh" --nodes 3 stop
fi
rm -f "$BAZAAR_RUN_DIR/cluster.env"
"$REPO_ROOT/infra/postgres/pgctl.sh" stop
