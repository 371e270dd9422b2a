#!/usr/bin/env bash
# Prometheus for a running Bazaar: Debian's package, a scrape configuration generated from the
# processes the scripts started (every instance of a cluster included), and the repository's
# alert and recording rules (infra/prometheus/rules, unit-tested by 'promtool test rules').
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

RULES_DIR="$REPO_ROOT/infra/prometheus/rules"
TESTS_DIR="$REPO_ROOT/infra/prometheus/tests"
PROM_DIR="$BAZAAR_RUN_DIR/prometheus"
# Not 9090: on a machine with systemd, installing Debian's package starts its own Prometheus
# there. BAZAAR_PORT_OFFSET (the cluster's) moves it like every other port.
PROMETHEUS_PORT="${BAZAAR_PROMETHEUS_PORT:-$((9190 + ${BAZAAR_PORT_OFFSET:-0}))}"
PROMETHEUS_URL="http://127.0.0.1:$PROMETHEUS_PORT"

usage() {
  cat <<USAGE
Usage: scripts/prometheus.sh COMMAND

  install   install Debian's prometheus package (prometheus, promtool) if missing
  test      promtool check rules + promtool test rules (what 'make test' runs)
  targets   (re)write the scrape targets from the processes in $PID_DIR
  start     write the targets and start Prometheus on $PROMETHEUS_URL (reused if running)
  stop      stop the Prometheus this script started
  url       print its URL

Scrapes every 5 s; evaluates the rules every 5 s; keeps 2 days in $PROM_DIR/data.
BAZAAR_PROMETHEUS_PORT sets the port (default 9190 + BAZAAR_PORT_OFFSET).
USAGE
}

install() {
  command -v prometheus >/dev/null && command -v promtool >/dev/null && return 0
  [ "$(id -u)" = 0 ] || die "prometheus is missing; run as root or 'apt-get install prometheus'"
  say "installing prometheus (Debian's package, once per machine)"
  apt-get update -qq
  # Without the recommended node exporter: Bazaar's processes are what it scrapes.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

run_tests() {
  command -v promtool >/dev/null || install
  promtool check rules "$RULES_DIR"/*.yml
  (cd "$TESTS_DIR" && promtool test rules ./*.yml)
}

# The port of a process the scripts started, from its label (order, order-2, gateway, ...).
port_of() {
  local label="$1" name index base offset=0 entry
  name="${label%-[0-9]}"
  index=1
  [ "$name" != "$label" ] && index="${label##*-}"
  if [ -f "$BAZAAR_RUN_DIR/cluster.env" ]; then
    offset="$(sed -n 's/^BAZAAR_CLUSTER_PORT_OFFSET=//p' "$BAZAAR_RUN_DIR/cluster.env")"
  fi
  base=""
  [ "$name" = gateway ] && base="$GATEWAY_PORT"
  for entry in "${SERVICES[@]}"; do
    [ "${entry%%:*}" = "$name" ] && base="${entry##*:}"
  done
  [ -n "$base" ] || return 1
  echo $((base + ${offset:-0} + 100 * (index - 1)))
}

# targets.json for file_sd: one target per running process, labelled job=<service> (the
# consumer group) and process=<label> (the instance as the scripts name it).
write_targets() {
  mkdir -p "$PROM_DIR"
  local file label name port first=true
  {
    echo "["
    for file in "$PID_DIR"/*.pid; do
      [ -e "$file" ] || continue
      label="$(basename "$file" .pid)"
      port="$(port_of "$label")" || continue
      pid_alive "$file" || continue
      name="${label%-[0-9]}"
      $first || echo ","
      first=false
      printf '  {"targets": ["127.0.0.1:%s"], "labels": {"job": "%s", "process": "%s"}}' "$port" "$name" "$label"
    done
    echo
    echo "]"
  } >"$PROM_DIR/targets.json.tmp"
  mv "$PROM_DIR/targets.json.tmp" "$PROM_DIR/targets.json"
}

write_config() {
  mkdir -p "$PROM_DIR"
  cat >"$PROM_DIR/prometheus.yml" <<CONFIG
# Written by scripts/prometheus.sh; the targets file is rewritten with every start.
global:
  scrape_interval: 5s
  scrape_timeout: 4s
  evaluation_interval: 5s
rule_files:
  - $RULES_DIR/*.yml
scrape_configs:
  - job_name: bazaar
    file_sd_configs:
      - files: [$PROM_DIR/targets.json]
        refresh_interval: 5s
CONFIG
}

start() {
  write_targets
  write_config
  if pid_alive "$PID_DIR/prometheus.pid"; then
    kill -HUP "$(cat "$PID_DIR/prometheus.pid")" # rereads the configuration and the rules
  else
    command -v prometheus >/dev/null || install
    (exec prometheus --config.file="$PROM_DIR/prometheus.yml" \
      --storage.tsdb.path="$PROM_DIR/data" --storage.tsdb.retention.time=2d \
      --web.listen-address="127.0.0.1:$PROMETHEUS_PORT" --web.enable-lifecycle) \
      >>"$LOG_DIR/prometheus.log" 2>&1 &
    echo $! >"$PID_DIR/prometheus.pid"
    wait_http "$PROMETHEUS_URL/-/ready" 30 || die "Prometheus did not become ready (see $LOG_DIR/prometheus.log)"
  fi
  printf '  Prometheus:   %s/alerts   (%s processes scraped every 5 s; rules: infra/prometheus)\n' \
    "$PROMETHEUS_URL" "$(grep -c '"targets"' "$PROM_DIR/targets.json")"
  if pid_alive "$PID_DIR/jaeger.pid"; then
    printf '  Traces:       %s/   (Jaeger; bazaar timeline <order> prints an order'"'"'s trace id)\n' \
      "$("$REPO_ROOT/scripts/jaeger.sh" url)"
  fi
  echo
}

case "${1:-}" in
  install) install ;;
  test) run_tests ;;
  targets) write_targets ;;
  start) start ;;
  stop) stop_pid prometheus ;;
  url) echo "$PROMETHEUS_URL" ;;
  -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
