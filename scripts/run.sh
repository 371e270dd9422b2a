#!/usr/bin/env bash
# `make run`: brings up PostgreSQL, Kafka, every service and the gateway, loads the demo
# catalog, prints where to go, and stops it all on Ctrl-C. `make cluster` (--cluster): the same
# scaled out, on three Kafka brokers with two instances of every service.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/run.sh [--detach] [--release] [--bin-dir DIR] [--cluster [--instances N] [--brokers 1|3]]

Builds the workspace, starts PostgreSQL and Kafka (reusing them when already up), applies the
topic catalog, loads the demo catalog, starts every service and the gateway, waits until each
answers /readyz, and prints the storefront URL. Ctrl-C (or 'make down') stops everything.
The notification service mails through Mailpit (scripts/mailpit.sh, built once per machine),
whose inbox URL is printed too; MAIL=file (or BAZAAR_MAIL=file) runs without it, the e-mails
then being .eml files in .run/mail.
  --detach        return once everything is ready, leaving it running ('make down' stops it)
  --release       build and run the release build (optimised, as in production; the one to
                  measure). Target directory: $RELEASE_TARGET_DIR
                  (BAZAAR_RELEASE_TARGET_DIR); the default debug build goes to $CARGO_TARGET_DIR.
                  Same as BAZAAR_RELEASE=1, or 'make run RELEASE=1' / 'make up RELEASE=1'.
  --bin-dir DIR   build nothing; run the binaries in DIR (e.g. another checkout's release
                  build, to measure it with 'make bench'). Same as BAZAAR_BIN_DIR=DIR.
  --cluster       scale out ('make cluster'): a three-broker Kafka cluster (kafkactl.sh --nodes 3:
                  replication factor 3, min.insync.replicas 2, topics applied with RF 3), N
                  instances of every service (same database and consumer group, ports
                  <port> + 100 * (i - 1): order on 8083 and 8183), and the gateway balancing every
                  route over them. One schema registry and one card processor simulator. Every
                  instance drains for 2 s on SIGTERM, so instances can be restarted one at a
                  time without a client noticing.
  --instances N   instances of each service with --cluster (default 2; 1 to 9)
  --brokers 1|3   Kafka brokers with --cluster (default 3; 1: one broker, replication factor 1,
                  on the cluster's own ports; to measure what the brokers cost or bring)

With --cluster, to run beside another Bazaar on this machine (its own ports and databases):
  BAZAAR_PORT_OFFSET=N   add N to every port: the gateway on 8080+N, services, registry,
                         simulator and the Kafka brokers (9092+N, 9094+N, 9096+N; or set
                         BAZAAR_KAFKA_PORT and BAZAAR_KAFKA_CONTROLLER_PORT)
  BAZAAR_DB_SUFFIX=S     databases bazaar_<service>S instead of bazaar_<service> (created when
                         missing, owned by the service's role)
  BAZAAR_RUN_DIR=DIR     pid files, logs and Kafka data elsewhere than .run/
USAGE
}
detach=false
cluster=false
instances=2
brokers=3
while [ "$#" -gt 0 ]; do
  case "$1" in
    -h|--help) usage; exit 0 ;;
    --detach) detach=true ;;
    --release) BAZAAR_RELEASE=1 ;;
    --bin-dir) [ "$#" -ge 2 ] || die "--bin-dir needs a directory"; BAZAAR_BIN_DIR="$(cd "$2" && pwd)" || die "no directory $2"; shift ;;
    --cluster) cluster=true ;;
    --instances) [ "$#" -ge 2 ] || die "--instances needs a number"; instances="$2"; shift ;;
    --brokers) [ "$#" -ge 2 ] || die "--brokers needs 1 or 3"; brokers="$2"; shift ;;
    *) usage >&2; die "unknown option $1" ;;
  esac
  shift
done
[[ "$instances" =~ ^[1-9]$ ]] || die "--instances must be 1 to 9 (got '$instances')"
[[ "$brokers" =~ ^[13]$ ]] || die "--brokers must be 1 or 3 (got '$brokers')"
use_profile

started=$SECONDS
"$REPO_ROOT/scripts/deps.sh"
if [ "${TRACES:-${BAZAAR_TRACES:-}}" = 1 ]; then export BAZAAR__LOG__OTLP_ENDPOINT="$("$REPO_ROOT/scripts/jaeger.sh" start)"; fi # make run TRACES=1

# Mailpit is the notification service's SMTP server, and its inbox shows the e-mails. Its first
# build (~2 minutes) runs beside the workspace's. MAIL=file: no mail server; the e-mails become
# .eml files in .run/mail instead.
mail_server=true
[ "${MAIL:-${BAZAAR_MAIL:-}}" = file ] && mail_server=false
mailpit_build=""
if $mail_server && ! "$REPO_ROOT/scripts/mailpit.sh" installed; then
  say "building Mailpit beside the workspace (once per machine; log: $LOG_DIR/mailpit-install.log)"
  "$REPO_ROOT/scripts/mailpit.sh" install >"$LOG_DIR/mailpit-install.log" 2>&1 &
  mailpit_build=$!
fi

build_binaries
if $mail_server; then
  if [ -n "$mailpit_build" ] && ! wait "$mailpit_build"; then
    tail -n 20 "$LOG_DIR/mailpit-install.log" >&2
    die "Mailpit was not built (see $LOG_DIR/mailpit-install.log); 'make run MAIL=file' runs without it"
  fi
  for setting in $("$REPO_ROOT/scripts/mailpit.sh" start); do export "$setting"; done # BAZAAR__MAIL__*
  mail_line="Mail:         $("$REPO_ROOT/scripts/mailpit.sh" url)/   (Mailpit: every e-mail the shop sends)"
else
  mail_line="Mail:         $REPO_ROOT/.run/mail/   (one .eml file per e-mail; MAIL=file)"
fi
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

# The auth service throttles by client address and believes X-Forwarded-For only from a trusted
# proxy: the gateway, which reaches every service from 127.0.0.1 (docs/security.md).
export BAZAAR__CLIENT_ADDRESS__TRUSTED_PROXIES=127.0.0.1

if $cluster; then
  offset="${BAZAAR_PORT_OFFSET:-0}"
  [[ "$offset" =~ ^[0-9]+$ ]] || die "BAZAAR_PORT_OFFSET must be a number (got '$offset')"
  suffix="${BAZAAR_DB_SUFFIX:-}"
  [[ "$suffix" =~ ^[a-z0-9_]*$ ]] || die "BAZAAR_DB_SUFFIX may hold only a-z, 0-9 and _ (got '$suffix')"
  export BAZAAR_KAFKA_PORT="${BAZAAR_KAFKA_PORT:-$((9092 + offset))}"
  export BAZAAR_KAFKA_CONTROLLER_PORT="${BAZAAR_KAFKA_CONTROLLER_PORT:-$((9093 + offset))}"
  kafkactl=("$REPO_ROOT/infra/kafka/kafkactl.sh" --nodes "$brokers")
  # Three JVMs starting at once on a busy two-core machine took longer than kafkactl's 60 s.
  export KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-180}"
  gateway_port=$((GATEWAY_PORT + offset))
  registry_port=$((8088 + offset))
  simulator_port=$((8089 + offset))
  # A deployment's processes: the schema registry and the simulator once, every service N times.
  db_url() { echo "postgres://bazaar_$1:bazaar_$1@127.0.0.1:5432/bazaar_$1$suffix"; }

  say "starting PostgreSQL and a Kafka cluster of $brokers broker(s)"
  "$REPO_ROOT/infra/postgres/pgctl.sh" start
  if [ -n "$suffix" ]; then
    for svc in auth product order inventory payment notification shipping registry; do
      "$REPO_ROOT/infra/postgres/pgctl.sh" psql -d postgres -At -c \
        "SELECT 'CREATE DATABASE bazaar_$svc$suffix OWNER bazaar_$svc' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'bazaar_$svc$suffix')" \
        | "$REPO_ROOT/infra/postgres/pgctl.sh" psql -d postgres >/dev/null
    done
  fi
  "${kafkactl[@]}" start
  export BAZAAR__KAFKA__BOOTSTRAP_SERVERS="$("${kafkactl[@]}" bootstrap)"
  export BAZAAR__KAFKA__REPLICATION_FACTOR="$brokers"
  export BAZAAR__KAFKA__SCHEMA_REGISTRY_URL="http://127.0.0.1:$registry_port"
  "$BIN_DIR/bazaar" wait-kafka --timeout-secs 60
  "$BIN_DIR/bazaar" --principal ops topics apply --replication-factor "$brokers"

  say "starting the schema registry and the card processor simulator"
  if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$registry_port/readyz" 2>/dev/null; then
    echo "  a schema registry already answers on :$registry_port; reusing it"
  else
    start_process registry registry BAZAAR__HTTP__PORT="$registry_port" BAZAAR__DATABASE__URL="$(db_url registry)"
    wait_ready registry "$registry_port" 60 || die "the schema registry did not become ready (see $LOG_DIR/registry.log)"
  fi
  if ! curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$simulator_port/readyz" 2>/dev/null; then
    start_process payment-gateway payment-gateway BAZAAR__HTTP__PORT="$simulator_port"
  fi

  say "loading the demo catalog"
  (cd "$REPO_ROOT" && BAZAAR__DATABASE__URL="$(db_url product)" "$(binary_of product)" seed-demo \
    && BAZAAR__DATABASE__URL="$(db_url inventory)" "$(binary_of inventory)" seed-demo)

  say "starting $instances instance(s) of every service"
  export BAZAAR_DRAIN_MS="${BAZAAR_CLUSTER_DRAIN_MS:-2000}"
  gateway_env=()
  labels=()
  for entry in "${SERVICES[@]}"; do
    name="${entry%%:*}" base="${entry##*:}"
    case "$name" in registry | payment-gateway) continue ;; esac
    urls=""
    for i in $(seq 1 "$instances"); do
      port=$((base + offset + 100 * (i - 1)))
      start_process "$name" "$name-$i" \
        BAZAAR__HTTP__PORT="$port" \
        BAZAAR__DATABASE__URL="$(db_url "$name")" \
        BAZAAR__AUTH__JWKS_URL="http://127.0.0.1:$gateway_port/.well-known/jwks.json" \
        BAZAAR__PROVIDER__BASE_URL="http://127.0.0.1:$simulator_port"
      labels+=("$name-$i:$port")
      urls+="${urls:+,}http://127.0.0.1:$port"
    done
    gateway_env+=("BAZAAR__UPSTREAMS__${name^^}=$urls")
  done
  start_process gateway gateway BAZAAR__HTTP__PORT="$gateway_port" \
    BAZAAR__AUTH__JWKS_URL="http://127.0.0.1:$gateway_port/.well-known/jwks.json" "${gateway_env[@]}"

  say "waiting for every /readyz"
  for entry in "payment-gateway:$simulator_port" "${labels[@]}" "gateway:$gateway_port"; do
    name="${entry%%:*}" port="${entry##*:}"
    if [ "$name" = payment-gateway ] && [ ! -f "$PID_DIR/payment-gateway.pid" ]; then continue; fi
    if wait_ready "$name" "$port" 90; then
      printf '  %-15s ready   http://127.0.0.1:%s   log: %s\n' "$name" "$port" "$LOG_DIR/$name.log"
    else
      printf '  %-15s NOT READY after 90 s; last log lines:\n' "$name"
      tail -n 20 "$LOG_DIR/$name.log" || true
      exit 1
    fi
  done
  cat >"$BAZAAR_RUN_DIR/cluster.env" <<STATE
# Written by scripts/run.sh --cluster; read by scripts/down.sh, logs.sh and the benchmark.
BAZAAR_CLUSTER_INSTANCES=$instances
BAZAAR_CLUSTER_BROKERS=$brokers
BAZAAR_CLUSTER_GATEWAY=http://127.0.0.1:$gateway_port
BAZAAR_CLUSTER_BOOTSTRAP=$BAZAAR__KAFKA__BOOTSTRAP_SERVERS
BAZAAR_CLUSTER_PORT_OFFSET=$offset
BAZAAR_CLUSTER_DB_SUFFIX=$suffix
STATE

  cat <<DONE

Bazaar is running as a cluster (ready after $((SECONDS - started)) s; binaries: $BIN_DIR).

  Storefront:   http://127.0.0.1:$gateway_port/
  Public API:   http://127.0.0.1:$gateway_port/api/products
  Instances:    $instances of every service, e.g. order on $((8083 + offset)) and $((8183 + offset)) (gateway balances them)
  Kafka:        $BAZAAR__KAFKA__BOOTSTRAP_SERVERS ($brokers broker(s), replication factor $brokers)
  PostgreSQL:   127.0.0.1:5432, databases bazaar_<service>$suffix
  Schemas:      http://127.0.0.1:$registry_port/subjects
  $mail_line
  Logs:         $LOG_DIR  ('make logs')

Restart one instance without downtime:
  kill -TERM \$(cat $PID_DIR/order-1.pid)   # drains 2 s, finishes in-flight requests, stops

DONE
else
  say "starting PostgreSQL and Kafka"
  "$REPO_ROOT/infra/postgres/pgctl.sh" start
  "$REPO_ROOT/infra/kafka/kafkactl.sh" start
  "$BIN_DIR/bazaar" wait-kafka --timeout-secs 60
  "$BIN_DIR/bazaar" --principal ops topics apply

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
  $mail_line
  Logs:         $LOG_DIR  ('make logs')

DONE
fi
"$REPO_ROOT/scripts/prometheus.sh" start # scrapes every process started above; prints its URL
if $detach; then
  echo "Stop it with 'make down'."
  exit 0
fi
echo "Press Ctrl-C to stop everything."
# Returns when a signal arrives or a service exits; either way, stop everything.
wait -n || true
echo "a process exited; see 'make logs'"
