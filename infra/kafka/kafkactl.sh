#!/usr/bin/env bash
# kafkactl.sh: run a single-node Apache Kafka broker (KRaft, loopback) for development and CI,
# assembled from jars on Maven Central. See `kafkactl.sh --help`.
set -euo pipefail

KAFKA_VERSION=4.1.1

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"

CACHE_DIR="${BAZAAR_CACHE_DIR:-$HOME/.cache/bazaar}"
[[ "$CACHE_DIR" == /* ]] || CACHE_DIR="$PWD/$CACHE_DIR"
KAFKA_HOME="$CACHE_DIR/kafka-$KAFKA_VERSION"
LIB_DIR="$KAFKA_HOME/libs"
INSTALL_MARKER="$KAFKA_HOME/.installed"

RUN_DIR="${BAZAAR_RUN_DIR:-$REPO_ROOT/.run}"
[[ "$RUN_DIR" == /* ]] || RUN_DIR="$PWD/$RUN_DIR"
KAFKA_RUN_DIR="$RUN_DIR/kafka"
DATA_DIR="$KAFKA_RUN_DIR/data"
CONFIG_FILE="$KAFKA_RUN_DIR/server.properties"
CLUSTER_ID_FILE="$KAFKA_RUN_DIR/cluster.id"
LOG_FILE="$RUN_DIR/logs/kafka.log"
PID_FILE="$RUN_DIR/pids/kafka.pid"

KAFKA_HOST="${BAZAAR_KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${BAZAAR_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${BAZAAR_KAFKA_CONTROLLER_PORT:-9093}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

# Broker JVM: 1 GB heap; every test makes its own topics, and metadata for thousands of
# partitions outgrew 512 MB. Override with KAFKA_HEAP_OPTS / KAFKA_JVM_OPTS.
KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms1g -Xmx1g}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
# CLI tools are short-lived JVMs: a small heap, serial GC and C1 only start noticeably faster.
KAFKA_TOOL_OPTS="${KAFKA_TOOL_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"

usage() {
  cat <<EOF
Usage: $(basename "$0") COMMAND [ARGS...]

Runs a single-node Apache Kafka $KAFKA_VERSION broker (KRaft, broker+controller in one JVM)
on $KAFKA_HOST:$KAFKA_PORT (controller $KAFKA_HOST:$KAFKA_CONTROLLER_PORT), built from jars on Maven Central.

Commands:
  install            Fetch the Kafka jars from Maven Central into the per-machine cache
                     (skipped when already complete). Needs java and mvn.
  start              Install if needed, render the config, format storage on first use,
                     start the broker in the background and wait until it accepts
                     connections and has logged "Kafka Server started". Reuses a broker
                     that is already running.
  stop               Stop the broker (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s). Idempotent.
  restart            stop, then start.
  status             Print whether the broker is running; exit 0 if it is, 3 if not.
  reset              Stop the broker and delete its data (topics, offsets, metadata).
  log [N]            Print the last N (default 40) lines of the broker log.
  java-tool CLASS [ARGS...]
                     Run a Kafka Java tool class with the cached classpath, e.g.
                       $(basename "$0") java-tool org.apache.kafka.tools.TopicCommand \\
                         --bootstrap-server $KAFKA_HOST:$KAFKA_PORT --list
  -h, --help         Show this help.

Useful tool classes:
  org.apache.kafka.tools.TopicCommand
  org.apache.kafka.tools.ConsoleProducer
  org.apache.kafka.tools.consumer.ConsoleConsumer
  org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
  org.apache.kafka.tools.ProducerPerformance
  org.apache.kafka.tools.EndToEndLatency  (BROKER TOPIC NUM_MESSAGES ACKS MESSAGE_SIZE)
  kafka.tools.StorageTool

Paths:
  jar cache  $LIB_DIR
  config     $CONFIG_FILE
  data       $DATA_DIR
  log        $LOG_FILE
  pid file   $PID_FILE

Environment:
  BAZAAR_CACHE_DIR      jar cache root (default \$HOME/.cache/bazaar)
  BAZAAR_RUN_DIR        run dir (default <repo>/.run)
  BAZAAR_KAFKA_HOST, BAZAAR_KAFKA_PORT, BAZAAR_KAFKA_CONTROLLER_PORT
                        listener address (default 127.0.0.1, 9092, 9093)
  KAFKA_START_TIMEOUT   seconds to wait for the broker to become ready (default 60)
  KAFKA_STOP_TIMEOUT    seconds to wait for a clean shutdown before SIGKILL (default 30)
  KAFKA_HEAP_OPTS, KAFKA_JVM_OPTS   broker JVM options
  KAFKA_TOOL_OPTS       JVM options for java-tool
EOF
}

log() { echo "kafkactl: $*" >&2; }
die() { echo "kafkactl: error: $*" >&2; exit 1; }

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------------
# Prerequisites

apt_install() {
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing $* with apt-get..."
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
  else
    return 1
  fi
}

require_java() {
  if ! command -v java >/dev/null 2>&1; then
    apt_install openjdk-17-jre-headless \
      || die "java not found. Install a Java 17+ runtime (e.g. apt-get install openjdk-17-jre-headless)."
    command -v java >/dev/null 2>&1 || die "java still not found after installing openjdk-17-jre-headless"
  fi
  local version major
  version="$(java -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n1)"
  major="${version%%.*}"
  if [[ "$major" =~ ^[0-9]+$ ]] && ((major < 17)); then
    die "Kafka $KAFKA_VERSION needs Java 17 or newer; found java $version ($(command -v java))"
  fi
}

require_mvn() {
  if ! command -v mvn >/dev/null 2>&1; then
    apt_install maven \
      || die "mvn not found. Install Maven 3 (e.g. apt-get install maven); it fetches the Kafka jars."
    command -v mvn >/dev/null 2>&1 || die "mvn still not found after installing maven"
  fi
}

# ---------------------------------------------------------------------------------------------
# install

pom_hash() { sha256sum "$SCRIPT_DIR/pom.xml" | cut -d' ' -f1; }

is_installed() {
  [[ -f "$INSTALL_MARKER" && -d "$LIB_DIR" ]] && [[ "$(cat "$INSTALL_MARKER")" == "$(pom_hash)" ]]
}

cmd_install() {
  require_java
  if is_installed; then
    log "Kafka $KAFKA_VERSION jars already installed in $LIB_DIR"
    return 0
  fi
  require_mvn
  mkdir -p "$KAFKA_HOME"
  # Serialise concurrent installs (two shells, parallel CI steps) on this machine.
  exec 8>"$KAFKA_HOME/.install.lock"
  flock 8
  if is_installed; then
    log "Kafka $KAFKA_VERSION jars already installed in $LIB_DIR"
    exec 8>&-
    return 0
  fi
  log "fetching Kafka $KAFKA_VERSION jars from Maven Central (once per machine)..."
  local t0 tmp
  t0="$(now_ms)"
  tmp="$KAFKA_HOME/libs.partial"
  rm -rf "$tmp" "$INSTALL_MARKER"
  # mvn -q prints nothing useful on success (only stray ANSI resets); show its output on failure.
  local mvn_log="$KAFKA_HOME/mvn.log"
  if ! mvn -q -B org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DoutputDirectory="$tmp" -DincludeScope=runtime -f "$SCRIPT_DIR/pom.xml" >"$mvn_log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$mvn_log" >&2
    rm -rf "$tmp"
    die "mvn could not fetch the Kafka jars (output above, also in $mvn_log)"
  fi
  [[ -f "$tmp/kafka_2.13-$KAFKA_VERSION.jar" && -f "$tmp/kafka-tools-$KAFKA_VERSION.jar" ]] \
    || die "mvn finished but the Kafka jars are missing from $tmp"
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  # Written last: an interrupted download leaves no marker and is redone next time.
  pom_hash >"$INSTALL_MARKER"
  exec 8>&-
  log "installed $(find "$LIB_DIR" -name '*.jar' | wc -l) jars ($(du -sh "$LIB_DIR" | cut -f1)) in $LIB_DIR in $(( ($(now_ms) - t0) / 1000 ))s"
}

# Install only when needed, without the "already installed" message.
ensure_installed() {
  if is_installed; then
    command -v java >/dev/null 2>&1 || require_java
  else
    cmd_install
  fi
}

# ---------------------------------------------------------------------------------------------
# Process helpers

read_pid() {
  [[ -f "$PID_FILE" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$PID_FILE")"
  [[ -n "$pid" ]] || return 1
  echo "$pid"
}

# True while PID runs. A zombie counts as gone: the broker is detached (setsid) and is reaped
# by PID 1, which may take a second or more after the JVM has exited; kill -0 still succeeds.
pid_alive() {
  kill -0 "$1" 2>/dev/null || return 1
  local state
  state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)"
  [[ "$state" != Z ]]
}

# True when PID is alive and is our Kafka broker (guards against a recycled pid).
is_broker_pid() {
  local pid="$1"
  pid_alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'kafka\.Kafka' || return 1
  fi
  return 0
}

running_pid() {
  local pid
  pid="$(read_pid)" || return 1
  is_broker_pid "$pid" || return 1
  echo "$pid"
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

broker_started_logged() {
  [[ -f "$LOG_FILE" ]] && grep -q 'Kafka Server started' "$LOG_FILE"
}

# ---------------------------------------------------------------------------------------------
# start

render_config() {
  mkdir -p "$KAFKA_RUN_DIR" "$DATA_DIR"
  local line out=""
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line//@HOST@/$KAFKA_HOST}"
    line="${line//@BROKER_PORT@/$KAFKA_PORT}"
    line="${line//@CONTROLLER_PORT@/$KAFKA_CONTROLLER_PORT}"
    line="${line//@DATA_DIR@/$DATA_DIR}"
    out+="$line"$'\n'
  done <"$SCRIPT_DIR/server.properties.template"
  if grep -q '@[A-Z_]*@' <<<"$out"; then
    die "unreplaced placeholder in server.properties.template: $(grep -o '@[A-Z_]*@' <<<"$out" | head -n1)"
  fi
  printf '%s' "$out" >"$CONFIG_FILE.tmp"
  mv "$CONFIG_FILE.tmp" "$CONFIG_FILE"
}

# A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars), the same
# format as `kafka.tools.StorageTool random-uuid` but without starting a JVM for it.
new_cluster_id() {
  local id
  while :; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n')"
    [[ "$id" != -* ]] && { echo "$id"; return; }
  done
}

format_storage_if_needed() {
  if [[ -f "$DATA_DIR/meta.properties" ]]; then
    # Already formatted: keep cluster.id in step with what the storage says.
    local cid
    cid="$(sed -n 's/^cluster\.id=//p' "$DATA_DIR/meta.properties")"
    [[ -n "$cid" ]] && echo "$cid" >"$CLUSTER_ID_FILE"
    return 0
  fi
  [[ -s "$CLUSTER_ID_FILE" ]] || new_cluster_id >"$CLUSTER_ID_FILE"
  local cid
  cid="$(cat "$CLUSTER_ID_FILE")"
  log "formatting storage in $DATA_DIR (cluster id $cid)..."
  if ! java $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.properties" \
      -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
      -t "$cid" -c "$CONFIG_FILE" --ignore-formatted >>"$LOG_FILE" 2>&1; then
    tail -n 40 "$LOG_FILE" >&2
    die "formatting storage failed (log: $LOG_FILE)"
  fi
}

# Wait until the broker accepts connections and has logged that it started.
wait_ready() {
  local pid="$1" t0="$2"
  local deadline=$((t0 + START_TIMEOUT * 1000))
  while :; do
    if ! pid_alive "$pid"; then
      log "the broker (pid $pid) exited during start-up; last 40 lines of $LOG_FILE:"
      tail -n 40 "$LOG_FILE" >&2 || true
      rm -f "$PID_FILE"
      exit 1
    fi
    if broker_started_logged && port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      log "Kafka is ready on $KAFKA_HOST:$KAFKA_PORT (pid $pid, $(( ($(now_ms) - t0) ))ms)"
      return 0
    fi
    if (($(now_ms) >= deadline)); then
      log "timed out after ${START_TIMEOUT}s waiting for Kafka on $KAFKA_HOST:$KAFKA_PORT; last 40 lines of $LOG_FILE:"
      tail -n 40 "$LOG_FILE" >&2 || true
      log "the broker (pid $pid) is still running; '$(basename "$0") stop' stops it"
      exit 1
    fi
    sleep 0.2
  done
}

# Serialise start/stop/reset in this run dir (fd 9; the broker itself does not inherit it).
lock_run_dir() {
  mkdir -p "$(dirname "$PID_FILE")"
  exec 9>"$(dirname "$PID_FILE")/kafka.lock"
  flock 9
}

cmd_start() {
  local t0 pid
  t0="$(now_ms)"
  lock_run_dir
  if pid="$(running_pid)"; then
    log "Kafka is already running (pid $pid); reusing it"
    wait_ready "$pid" "$t0"
    return 0
  fi
  rm -f "$PID_FILE"
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    log "something is already listening on $KAFKA_HOST:$KAFKA_PORT (not started by kafkactl); reusing it"
    return 0
  fi
  if port_open "$KAFKA_HOST" "$KAFKA_CONTROLLER_PORT"; then
    die "port $KAFKA_HOST:$KAFKA_CONTROLLER_PORT (controller) is taken by another process"
  fi

  ensure_installed
  mkdir -p "$(dirname "$LOG_FILE")" "$(dirname "$PID_FILE")"
  # Keep the previous run's log next to the new one.
  [[ -f "$LOG_FILE" ]] && mv -f "$LOG_FILE" "$LOG_FILE.1"
  : >"$LOG_FILE"
  render_config
  format_storage_if_needed

  log "starting Kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (log: $LOG_FILE)..."
  # setsid: the broker gets its own session, so Ctrl-C in the calling terminal does not reach it.
  # The inner shell closes every inherited descriptor above stderr (so the broker holds no pipe
  # or lock of its caller open), writes its own pid (java keeps it through exec), then execs java.
  # shellcheck disable=SC2016,SC2086 # $$ is the inner shell's; *_OPTS are word lists on purpose
  setsid bash -c '
    for fd in /proc/$$/fd/*; do
      fd="${fd##*/}"; if ((fd > 2)); then eval "exec $fd>&-"; fi
    done 2>/dev/null
    echo $$ >"$0"; exec "$@"' "$PID_FILE" \
    java $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$(dirname "$LOG_FILE")" \
    -cp "$LIB_DIR/*" kafka.Kafka "$CONFIG_FILE" \
    >>"$LOG_FILE" 2>&1 </dev/null &
  # Wait (briefly) for the pid file written by the child.
  local i
  for i in $(seq 1 50); do
    pid="$(read_pid)" && break
    sleep 0.1
  done
  [[ -n "${pid:-}" ]] || die "the broker did not write its pid file $PID_FILE"
  wait_ready "$pid" "$t0"
}

# ---------------------------------------------------------------------------------------------
# stop / status / reset

cmd_stop() {
  local pid
  lock_run_dir
  if ! pid="$(running_pid)"; then
    rm -f "$PID_FILE"
    log "Kafka is not running"
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      log "note: something else (not started by kafkactl) listens on $KAFKA_HOST:$KAFKA_PORT"
    fi
    return 0
  fi
  log "stopping Kafka (pid $pid)..."
  local t0 deadline
  t0="$(now_ms)"
  deadline=$((t0 + STOP_TIMEOUT * 1000))
  kill -TERM "$pid" 2>/dev/null || true
  while pid_alive "$pid"; do
    if (($(now_ms) >= deadline)); then
      log "Kafka did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      local i
      for i in $(seq 1 50); do
        pid_alive "$pid" || break
        sleep 0.1
      done
      break
    fi
    sleep 0.2
  done
  rm -f "$PID_FILE"
  log "Kafka stopped ($(( $(now_ms) - t0 ))ms)"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
      echo "Kafka is running (pid $pid) on $KAFKA_HOST:$KAFKA_PORT"
    else
      echo "Kafka is starting (pid $pid); $KAFKA_HOST:$KAFKA_PORT does not accept connections yet"
    fi
    return 0
  fi
  if port_open "$KAFKA_HOST" "$KAFKA_PORT"; then
    echo "Kafka is not running under kafkactl, but something listens on $KAFKA_HOST:$KAFKA_PORT"
    return 0
  fi
  echo "Kafka is not running"
  return 3
}

cmd_reset() {
  cmd_stop
  log "deleting $DATA_DIR"
  rm -rf "$DATA_DIR"
}

cmd_log() {
  local n="${1:-40}"
  [[ -f "$LOG_FILE" ]] || die "no log yet at $LOG_FILE"
  tail -n "$n" "$LOG_FILE"
}

cmd_java_tool() {
  (($# >= 1)) || die "usage: $(basename "$0") java-tool CLASS [ARGS...]"
  ensure_installed
  local class="$1"
  shift
  # shellcheck disable=SC2086
  exec java $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.properties" \
    -cp "$LIB_DIR/*" "$class" "$@"
}

# ---------------------------------------------------------------------------------------------

main() {
  local cmd="${1:-}"
  (($# > 0)) && shift
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    log | logs) cmd_log "$@" ;;
    java-tool) cmd_java_tool "$@" ;;
    -h | --help | help) usage ;;
    "") usage >&2; exit 2 ;;
    *) echo "kafkactl: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
