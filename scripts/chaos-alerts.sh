#!/usr/bin/env bash
# Alert drill: faults injected into a running Bazaar ('make run', 'make up' or 'make cluster'),
# and the matching alert watched in its real Prometheus, from pending to firing to resolved.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/chaos-alerts.sh [poison|freeze|all]   (default: all)

Against the Bazaar the scripts started (BAZAAR_RUN_DIR, default .run/; a cluster's ports,
brokers and databases are read from its cluster.env), with its Prometheus:
  poison   an undecodable message on user-events, key alert-drill-<time>: the notification
           service dead-letters it and parks the key. Expects BazaarKeyParked and
           BazaarMessageDeadLettered {job=notification} to fire; prints 'bazaar dlq list' (the
           alerts' first command); then removes the drill's parked key from the notification
           database (a drill message is never to be redriven) and waits for BazaarKeyParked to
           resolve. BazaarMessageDeadLettered stays 15 minutes, as it should.
  freeze   SIGSTOP one consumer process (shipping, or shipping-1 in a cluster) until
           BazaarProcessDown fires for it (after its 1 minute 'for'), then SIGCONT, and waits for
           the alert to resolve. The process is resumed whatever happens (even on Ctrl-C).
Prints the seconds from the fault to each alert state. Exit 1 if an alert does not fire in time.
USAGE
}

what="${1:-all}"
case "$what" in
  poison | freeze | all) ;;
  -h | --help) usage; exit 0 ;;
  *) usage >&2; exit 2 ;;
esac

bootstrap="${BAZAAR__KAFKA__BOOTSTRAP_SERVERS:-127.0.0.1:9092}"
suffix=""
cluster=false
if [ -f "$BAZAAR_RUN_DIR/cluster.env" ]; then
  cluster=true
  bootstrap="$(sed -n 's/^BAZAAR_CLUSTER_BOOTSTRAP=//p' "$BAZAAR_RUN_DIR/cluster.env")"
  suffix="$(sed -n 's/^BAZAAR_CLUSTER_DB_SUFFIX=//p' "$BAZAAR_RUN_DIR/cluster.env")"
  BAZAAR_PORT_OFFSET="$(sed -n 's/^BAZAAR_CLUSTER_PORT_OFFSET=//p' "$BAZAAR_RUN_DIR/cluster.env")"
  export BAZAAR_PORT_OFFSET
fi
prometheus="$("$REPO_ROOT/scripts/prometheus.sh" url)"
curl -fsS -o /dev/null --max-time 2 "$prometheus/-/ready" \
  || die "no Prometheus at $prometheus: start Bazaar with 'make up' (or 'make cluster')"
bazaar="$BIN_DIR/bazaar"
[ -x "$bazaar" ] || die "no $bazaar (build it: cargo build -p bazaar-cli)"
notification_db="postgres://bazaar_notification:bazaar_notification@127.0.0.1:5432/bazaar_notification$suffix"

# state_of ALERT LABEL=VALUE: the alert's state in Prometheus (firing, pending or inactive).
state_of() {
  curl -fsS --max-time 3 "$prometheus/api/v1/alerts" | python3 -c '
import json, sys
name, label = sys.argv[1], sys.argv[2].split("=", 1)
states = [a["state"] for a in json.load(sys.stdin)["data"]["alerts"]
          if a["labels"].get("alertname") == name and a["labels"].get(label[0]) == label[1]]
print("firing" if "firing" in states else "pending" if "pending" in states else "inactive")' "$1" "$2"
}

# watch_alert ALERT LABEL=VALUE UNTIL SECONDS: poll every second from the fault (t0) until the
# alert is in state UNTIL (firing or inactive); prints each change with its time.
watch_alert() {
  local name="$1" label="$2" until="$3" limit="$4" state last=""
  while :; do
    state="$(state_of "$name" "$label")"
    if [ "$state" != "$last" ]; then
      printf '  +%5.1f s  %-26s {%s}  %s\n' "$(elapsed)" "$name" "$label" "$state"
      last="$state"
    fi
    [ "$state" = "$until" ] && return 0
    if [ "$(printf '%.0f' "$(elapsed)")" -ge "$limit" ]; then
      printf '  %s {%s} not %s after %s s\n' "$name" "$label" "$until" "$limit" >&2
      return 1
    fi
    sleep 1
  done
}
t0=0
start_clock() { t0="$(date +%s.%N)"; }
elapsed() { python3 -c "import sys; print(round($(date +%s.%N) - $t0, 1))"; }

failed=0

poison() {
  local key="alert-drill-$(date +%s)"
  say "poison: an undecodable message on user-events, key $key (brokers $bootstrap)"
  start_clock
  # As the ops principal (SCRAM; Debian's kcat cannot do SCRAM with Kafka 4), with Confluent's
  # Python client from scripts/deps.sh.
  "$BAZAAR_TEST_PYTHON" - "$bootstrap" "$key" <<'PY'
import os, sys
from confluent_kafka import Producer
producer = Producer({
    "bootstrap.servers": sys.argv[1],
    "security.protocol": "SASL_PLAINTEXT",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "ops",
    "sasl.password": os.environ.get("BAZAAR_KAFKA_PASSWORD", "bazaar-local-ops"),
})
producer.produce("user-events", b"not an event", key=sys.argv[2])
sys.exit(producer.flush(30))
PY
  watch_alert BazaarKeyParked job=notification firing 60 || failed=1
  watch_alert BazaarMessageDeadLettered job=notification firing 60 || failed=1
  say "the first command: bazaar dlq list user-events"
  "$bazaar" --principal ops --bootstrap-servers "$bootstrap" --service-db "notification=$notification_db" \
    dlq list user-events --service notification || true
  say "removing the drill's parked key; BazaarKeyParked resolves"
  start_clock
  "$REPO_ROOT/infra/postgres/pgctl.sh" psql -d "bazaar_notification$suffix" -q -c \
    "DELETE FROM messaging_parked_messages WHERE message_key = '$key';
     DELETE FROM messaging_parked_keys WHERE message_key = '$key';" >/dev/null
  watch_alert BazaarKeyParked job=notification inactive 60 || failed=1
}

frozen=""
resume() { [ -n "$frozen" ] && kill -CONT "$frozen" 2>/dev/null; frozen=""; }
trap resume EXIT INT TERM

freeze() {
  local label=shipping pid
  $cluster && label=shipping-1
  pid_alive "$PID_DIR/$label.pid" || die "no running $label (see $PID_DIR)"
  pid="$(cat "$PID_DIR/$label.pid")"
  say "freeze: SIGSTOP $label (pid $pid) until BazaarProcessDown fires for it"
  start_clock
  frozen="$pid"
  kill -STOP "$pid"
  watch_alert BazaarProcessDown "process=$label" firing 150 || failed=1
  say "SIGCONT $label; BazaarProcessDown resolves"
  resume
  start_clock
  watch_alert BazaarProcessDown "process=$label" inactive 60 || failed=1
}

case "$what" in
  poison) poison ;;
  freeze) freeze ;;
  all) poison; freeze ;;
esac
say "the overview now"
"$bazaar" overview --prometheus "$prometheus" || true
exit "$failed"
