#!/usr/bin/env bash
# kafkactl.sh: run Apache Kafka (KRaft, loopback) for development and CI, assembled from jars on
# Maven Central: one broker by default, or a cluster of three (`--nodes 3`). See
# `kafkactl.sh --help`.
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

KAFKA_HOST="${BAZAAR_KAFKA_HOST:-127.0.0.1}"
KAFKA_PORT="${BAZAAR_KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${BAZAAR_KAFKA_CONTROLLER_PORT:-9093}"
# How many nodes (each a broker and a controller): 1 for make run and make test, 3 for the
# local cluster. `--nodes N` before the command sets it too.
NODES="${BAZAAR_KAFKA_NODES:-1}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-60}"
# Authentication (SASL/SCRAM) and ACLs: on by default; BAZAAR_KAFKA_AUTH=off lets anonymous
# clients do anything (then clients set BAZAAR__KAFKA__SECURITY_PROTOCOL=plaintext).
KAFKA_AUTH="${BAZAAR_KAFKA_AUTH:-on}"
# The brokers' super user's password (SASL/PLAIN). The local default suits loopback only.
ADMIN_PASSWORD="${BAZAAR_KAFKA_ADMIN_PASSWORD:-bazaar-local-admin}"
# The principals and ACLs every start applies (`bazaar access --local`).
ACCESS_FILE="${BAZAAR_KAFKA_ACCESS_FILE:-$SCRIPT_DIR/access.txt}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"

# Broker JVM. One node: 1 GB heap; every test makes its own topics, and metadata for thousands
# of partitions outgrew 512 MB. A cluster's nodes hold one deployment's topics: 512 MB each.
# Override with KAFKA_HEAP_OPTS / KAFKA_JVM_OPTS.
KAFKA_HEAP_OPTS_GIVEN="${KAFKA_HEAP_OPTS:-}"
KAFKA_JVM_OPTS="${KAFKA_JVM_OPTS:--XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
# CLI tools are short-lived JVMs: a small heap, serial GC and C1 only start noticeably faster.
KAFKA_TOOL_OPTS="${KAFKA_TOOL_OPTS:--Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true}"

log() { echo "kafkactl: $*" >&2; }
die() { echo "kafkactl: error: $*" >&2; exit 1; }

now_ms() { date +%s%3N; }

# ---------------------------------------------------------------------------------------------
# Layout. One node keeps the paths it always had (.run/kafka, logs/kafka.log, pids/kafka.pid);
# node i of a cluster lives in .run/kafka-cluster/node-i, logs to logs/kafka-i.log and writes
# pids/kafka-i.pid.

# configure_layout: every path and setting of the mode NODES names.
configure_layout() {
  case "$NODES" in
    1 | 3) ;;
    *) die "--nodes must be 1 or 3 (got '$NODES')" ;;
  esac
  if ((NODES == 1)); then
    CLUSTER_DIR="$RUN_DIR/kafka"
    KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS_GIVEN:--Xms1g -Xmx1g}"
    REPLICATION_FACTOR=1
    MIN_ISR=1
    INTERNAL_PARTITIONS=1
    # With one node there is nobody to fail over to: fencing a broker that was only paused (a
    # long GC pause, a suspended laptop, SIGSTOP) achieves nothing but a moment in which it
    # answers Metadata with no brokers, which strands librdkafka clients
    # (confluentinc/librdkafka#5301). So a paused node keeps its session for 30 s (Kafka: 9 s).
    BROKER_SESSION_TIMEOUT_MS=30000
    BROKER_HEARTBEAT_INTERVAL_MS=2000
    REPLICA_LAG_TIME_MAX_MS=30000
  else
    CLUSTER_DIR="$RUN_DIR/kafka-cluster"
    KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS_GIVEN:--Xms512m -Xmx512m}"
    REPLICATION_FACTOR=3
    MIN_ISR=2
    INTERNAL_PARTITIONS=3
    BROKER_SESSION_TIMEOUT_MS=4000
    BROKER_HEARTBEAT_INTERVAL_MS=500
    REPLICA_LAG_TIME_MAX_MS=10000
  fi
  CLUSTER_ID_FILE="$CLUSTER_DIR/cluster.id"
  LOCK_FILE="$RUN_DIR/pids/kafka.lock"
  local i voters=""
  for i in $(seq 1 "$NODES"); do
    voters+="${voters:+,}$i@$KAFKA_HOST:$(controller_port_of "$i")"
  done
  QUORUM_VOTERS="$voters"
}

broker_port_of() { echo $((KAFKA_PORT + 2 * ($1 - 1))); }
controller_port_of() { echo $((KAFKA_CONTROLLER_PORT + 2 * ($1 - 1))); }

# node I: set the N_* variables of node I.
node() {
  N_ID="$1"
  N_PORT="$(broker_port_of "$1")"
  N_CPORT="$(controller_port_of "$1")"
  if ((NODES == 1)); then
    N_DIR="$CLUSTER_DIR"
    N_LOG="$RUN_DIR/logs/kafka.log"
    N_PID="$RUN_DIR/pids/kafka.pid"
    N_NAME="Kafka"
  else
    N_DIR="$CLUSTER_DIR/node-$1"
    N_LOG="$RUN_DIR/logs/kafka-$1.log"
    N_PID="$RUN_DIR/pids/kafka-$1.pid"
    N_NAME="Kafka node $1"
  fi
  N_DATA="$N_DIR/data"
  N_CONFIG="$N_DIR/server.properties"
}

# The bootstrap list clients use: every node.
bootstrap_servers() {
  local i out=""
  for i in $(seq 1 "$NODES"); do out+="${out:+,}$KAFKA_HOST:$(broker_port_of "$i")"; done
  echo "$out"
}

usage() {
  configure_layout
  local cluster_paths=""
  ((NODES > 1)) && cluster_paths="/node-<i>"
  local suffix=""
  ((NODES > 1)) && suffix="-<i>"
  cat <<USAGE
Usage: $(basename "$0") [--nodes 1|3] COMMAND [ARGS...]

Runs Apache Kafka $KAFKA_VERSION (KRaft; each node a broker and a controller in one JVM) on
loopback, built from jars on Maven Central.
  --nodes 1   (default) one node on $KAFKA_HOST:$KAFKA_PORT (controller :$KAFKA_CONTROLLER_PORT), replication
              factor 1: what make run and make test use.
  --nodes 3   a cluster of three nodes: node i on port KAFKA_PORT + 2(i-1) and controller port
              KAFKA_CONTROLLER_PORT + 2(i-1) (by default 9092/9093, 9094/9095, 9096/9097), a
              three-voter controller quorum, replication factor 3 and min.insync.replicas 2 by
              default (internal topics too), a dead broker fenced after 4 s: what
              'make cluster' uses. Same as BAZAAR_KAFKA_NODES=3.

Commands:
  install            Fetch the Kafka jars from Maven Central into the per-machine cache
                     (skipped when already complete). Needs java and mvn.
  start [NODE...]    Install if needed, render the config, format storage on first use, start
                     the node(s) in the background and wait until each accepts connections and
                     has logged "Kafka Server started". Reuses nodes already running. Without
                     NODE, every node.
  stop [NODE...]     Stop the node(s) (SIGTERM, SIGKILL after ${STOP_TIMEOUT}s). Idempotent.
  restart            stop, then start.
  status             Print whether each node runs; exit 0 if all do, 3 if not.
  reset              Stop every node and delete its data (topics, offsets, metadata).
  log [N] [NODE]     Print the last N (default 40) lines of each node's log (or NODE's).
  bootstrap          Print the bootstrap servers for clients (every node).
  access FILE|-      Upsert the principals' SCRAM credentials and create the ACLs that FILE
                     lists (what 'bazaar access' prints), as the super user. Every start
                     applies $ACCESS_FILE (BAZAAR_KAFKA_ACCESS_FILE).
  client-properties FILE
                     Write the client properties of the brokers' super user (SASL/PLAIN when
                     authentication is on; empty when off) for Kafka's Java tools, e.g.
                     EndToEndLatency's last argument or TopicCommand's --command-config.
  java-tool CLASS [ARGS...]
                     Run a Kafka Java tool class with the cached classpath, e.g.
                       $(basename "$0") java-tool org.apache.kafka.tools.TopicCommand \\
                         --bootstrap-server $(bootstrap_servers) --describe
  -h, --help         Show this help.

Authentication (BAZAAR_KAFKA_AUTH=on, the default): clients authenticate with SASL/SCRAM-SHA-512
and ACLs decide what each principal may do; the super user 'admin' (SASL/PLAIN, password
BAZAAR_KAFKA_ADMIN_PASSWORD) is the brokers' own. BAZAAR_KAFKA_AUTH=off: anonymous PLAINTEXT.

Useful tool classes:
  org.apache.kafka.tools.TopicCommand
  org.apache.kafka.tools.ConsoleProducer
  org.apache.kafka.tools.consumer.ConsoleConsumer
  org.apache.kafka.tools.consumer.group.ConsumerGroupCommand
  org.apache.kafka.tools.MetadataQuorumCommand   (--bootstrap-server ... describe --status)
  org.apache.kafka.tools.ProducerPerformance
  org.apache.kafka.tools.EndToEndLatency  (BROKER TOPIC NUM_MESSAGES ACKS MESSAGE_SIZE)
  kafka.tools.StorageTool

Paths (with --nodes $NODES):
  jar cache  $LIB_DIR
  node dir   $CLUSTER_DIR$cluster_paths  (server.properties, data/)
  log        $RUN_DIR/logs/kafka$suffix.log
  pid file   $RUN_DIR/pids/kafka$suffix.pid

Environment:
  BAZAAR_CACHE_DIR      jar cache root (default \$HOME/.cache/bazaar)
  BAZAAR_RUN_DIR        run dir (default <repo>/.run)
  BAZAAR_KAFKA_HOST, BAZAAR_KAFKA_PORT, BAZAAR_KAFKA_CONTROLLER_PORT
                        listener address of (the first) node (default 127.0.0.1, 9092, 9093)
  BAZAAR_KAFKA_NODES    1 or 3, as --nodes (default 1)
  KAFKA_START_TIMEOUT   seconds to wait for the node(s) to become ready (default 60)
  KAFKA_STOP_TIMEOUT    seconds to wait for a clean shutdown before SIGKILL (default 30)
  KAFKA_HEAP_OPTS, KAFKA_JVM_OPTS   broker JVM options (heap: 1 GB for one node, 512 MB for
                        each node of a cluster)
  KAFKA_TOOL_OPTS       JVM options for java-tool
USAGE
}

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
  [[ -f "$1" ]] || return 1
  local pid
  pid="$(tr -dc '0-9' <"$1")"
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

# running_pid: the pid of the current node (see `node`) while it runs.
running_pid() {
  local pid
  pid="$(read_pid "$N_PID")" || return 1
  is_broker_pid "$pid" || return 1
  echo "$pid"
}

port_open() {
  timeout 2 bash -c "exec 3<>/dev/tcp/$1/$2" 2>/dev/null
}

broker_started_logged() {
  [[ -f "$N_LOG" ]] && grep -q 'Kafka Server started' "$N_LOG"
}

# ---------------------------------------------------------------------------------------------
# start

render_config() {
  mkdir -p "$N_DIR" "$N_DATA"
  local line out="" plain_users="" tests_password
  # The tests' principal may also use SASL/PLAIN (for kcat), with its password from the access file.
  tests_password="$(awk '$1 == "user" && $2 == "tests" { print $3 }' "$ACCESS_FILE" 2>/dev/null || true)"
  [[ -n "$tests_password" && "$tests_password" != - ]] && plain_users=" user_tests=\"$tests_password\""
  while IFS= read -r line || [[ -n "$line" ]]; do
    line="${line//@NODE_ID@/$N_ID}"
    line="${line//@HOST@/$KAFKA_HOST}"
    line="${line//@BROKER_PORT@/$N_PORT}"
    line="${line//@CONTROLLER_PORT@/$N_CPORT}"
    line="${line//@QUORUM_VOTERS@/$QUORUM_VOTERS}"
    line="${line//@DATA_DIR@/$N_DATA}"
    line="${line//@REPLICATION_FACTOR@/$REPLICATION_FACTOR}"
    line="${line//@MIN_ISR@/$MIN_ISR}"
    line="${line//@INTERNAL_PARTITIONS@/$INTERNAL_PARTITIONS}"
    line="${line//@BROKER_SESSION_TIMEOUT_MS@/$BROKER_SESSION_TIMEOUT_MS}"
    line="${line//@BROKER_HEARTBEAT_INTERVAL_MS@/$BROKER_HEARTBEAT_INTERVAL_MS}"
    line="${line//@REPLICA_LAG_TIME_MAX_MS@/$REPLICA_LAG_TIME_MAX_MS}"
    if [[ "$line" == @AUTH@* ]]; then
      auth_on || continue
      line="${line#@AUTH@}"
    fi
    line="${line//@PROTOCOL@/$(auth_on && echo SASL_PLAINTEXT || echo PLAINTEXT)}"
    line="${line//@ADMIN_PASSWORD@/$ADMIN_PASSWORD}"
    line="${line//@PLAIN_USERS@/$plain_users}"
    out+="$line"$'\n'
  done <"$SCRIPT_DIR/server.properties.template"
  # The comments name the placeholders; no setting may keep one.
  local left
  left="$(grep -v '^#' <<<"$out" | grep -o '@[A-Z_]*@' | head -n1 || true)"
  [[ -z "$left" ]] || die "unreplaced placeholder in server.properties.template: $left"
  # The file holds the super user's password.
  (umask 077 && printf '%s' "$out" >"$N_CONFIG.tmp")
  mv "$N_CONFIG.tmp" "$N_CONFIG"
}

auth_on() {
  case "$KAFKA_AUTH" in
    on) return 0 ;;
    off) return 1 ;;
    *) die "BAZAAR_KAFKA_AUTH must be on or off (got '$KAFKA_AUTH')" ;;
  esac
}

# apply_access FILE|-: upserts the principals' SCRAM credentials and creates the ACLs the file
# lists (`bazaar access` prints them), as the super user, in one JVM.
apply_access() {
  auth_on || { log "authentication is off (BAZAAR_KAFKA_AUTH=off): no principals or ACLs to apply"; return 0; }
  ensure_installed
  local source="$1"
  [[ "$source" == - || -f "$source" ]] || die "no access file $source"
  # shellcheck disable=SC2086
  BAZAAR_KAFKA_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    java $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.properties" \
    -cp "$LIB_DIR/*" "$SCRIPT_DIR/KafkaAccess.java" "$(bootstrap_servers)" "$source" \
    || die "applying the principals and ACLs of $source failed"
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

# The cluster id every node of this run dir is formatted with (a node formatted earlier keeps
# its own).
ensure_cluster_id() {
  mkdir -p "$CLUSTER_DIR"
  [[ -s "$CLUSTER_ID_FILE" ]] && return 0
  local i cid=""
  for i in $(seq 1 "$NODES"); do
    node "$i"
    if [[ -f "$N_DATA/meta.properties" ]]; then
      cid="$(sed -n 's/^cluster\.id=//p' "$N_DATA/meta.properties")"
      [[ -n "$cid" ]] && break
    fi
  done
  [[ -n "$cid" ]] || cid="$(new_cluster_id)"
  echo "$cid" >"$CLUSTER_ID_FILE"
}

# format_storage_if_needed: formats the current node's storage on first use.
format_storage_if_needed() {
  local cid
  cid="$(cat "$CLUSTER_ID_FILE")"
  if [[ -f "$N_DATA/meta.properties" ]]; then
    local formatted
    formatted="$(sed -n 's/^cluster\.id=//p' "$N_DATA/meta.properties")"
    if [[ -n "$formatted" && "$formatted" != "$cid" ]]; then
      if ((NODES == 1)); then
        # Already formatted: keep cluster.id in step with what the storage says.
        echo "$formatted" >"$CLUSTER_ID_FILE"
        return 0
      fi
      die "$N_DATA belongs to cluster $formatted, not $cid ($CLUSTER_ID_FILE); 'kafkactl.sh --nodes $NODES reset' starts afresh"
    fi
    return 0
  fi
  log "formatting storage in $N_DATA (cluster id $cid)..."
  if ! java $KAFKA_TOOL_OPTS -Dlog4j2.configurationFile="$SCRIPT_DIR/tools-log4j2.properties" \
      -cp "$LIB_DIR/*" kafka.tools.StorageTool format \
      -t "$cid" -c "$N_CONFIG" --ignore-formatted >>"$N_LOG" 2>&1; then
    tail -n 40 "$N_LOG" >&2
    die "formatting storage failed (log: $N_LOG)"
  fi
}

# wait_ready NODE PID T0: wait until the node accepts connections and has logged that it started.
wait_ready() {
  node "$1"
  local pid="$2" t0="$3"
  local deadline=$((t0 + START_TIMEOUT * 1000))
  while :; do
    if ! pid_alive "$pid"; then
      log "$N_NAME (pid $pid) exited during start-up; last 40 lines of $N_LOG:"
      tail -n 40 "$N_LOG" >&2 || true
      rm -f "$N_PID"
      exit 1
    fi
    if broker_started_logged && port_open "$KAFKA_HOST" "$N_PORT"; then
      log "$N_NAME is ready on $KAFKA_HOST:$N_PORT (pid $pid, $(( ($(now_ms) - t0) ))ms)"
      return 0
    fi
    if (($(now_ms) >= deadline)); then
      log "timed out after ${START_TIMEOUT}s waiting for $N_NAME on $KAFKA_HOST:$N_PORT; last 40 lines of $N_LOG:"
      tail -n 40 "$N_LOG" >&2 || true
      if ((NODES > 1)); then
        log "a node serves only once a majority of the controller quorum ($QUORUM_VOTERS) runs"
      fi
      log "$N_NAME (pid $pid) is still running; '$(basename "$0") --nodes $NODES stop' stops it"
      exit 1
    fi
    sleep 0.2
  done
}

# Serialise start/stop/reset in this run dir (fd 9; the brokers themselves do not inherit it).
lock_run_dir() {
  mkdir -p "$(dirname "$LOCK_FILE")"
  exec 9>"$LOCK_FILE"
  flock 9
}

# launch NODE: starts the node's JVM in the background; its readiness is awaited separately.
# Sets LAUNCHED to its pid, or to nothing when something else already serves its port.
launch() {
  node "$1"
  local pid
  LAUNCHED=""
  if pid="$(running_pid)"; then
    log "$N_NAME is already running (pid $pid); reusing it"
    LAUNCHED="$pid"
    return 0
  fi
  rm -f "$N_PID"
  if port_open "$KAFKA_HOST" "$N_PORT"; then
    if ((NODES == 1)); then
      log "something is already listening on $KAFKA_HOST:$N_PORT (not started by kafkactl); reusing it"
      return 0
    fi
    die "port $KAFKA_HOST:$N_PORT ($N_NAME) is taken by another process (a single broker? choose other ports with BAZAAR_KAFKA_PORT and BAZAAR_KAFKA_CONTROLLER_PORT)"
  fi
  if port_open "$KAFKA_HOST" "$N_CPORT"; then
    die "port $KAFKA_HOST:$N_CPORT ($N_NAME's controller) is taken by another process"
  fi
  mkdir -p "$(dirname "$N_LOG")" "$(dirname "$N_PID")"
  # Keep the previous run's log next to the new one.
  [[ -f "$N_LOG" ]] && mv -f "$N_LOG" "$N_LOG.1"
  : >"$N_LOG"
  render_config
  format_storage_if_needed

  log "starting $N_NAME ($KAFKA_VERSION) on $KAFKA_HOST:$N_PORT (log: $N_LOG)..."
  # setsid: the broker gets its own session, so Ctrl-C in the calling terminal does not reach it.
  # The inner shell closes every inherited descriptor above stderr (so the broker holds no pipe
  # or lock of its caller open), writes its own pid (java keeps it through exec), then execs java.
  # shellcheck disable=SC2016,SC2086 # $$ is the inner shell's; *_OPTS are word lists on purpose
  setsid bash -c '
    for fd in /proc/$$/fd/*; do
      fd="${fd##*/}"; if ((fd > 2)); then eval "exec $fd>&-"; fi
    done 2>/dev/null
    echo $$ >"$0"; exec "$@"' "$N_PID" \
    java $KAFKA_HEAP_OPTS $KAFKA_JVM_OPTS \
    -Dlog4j2.configurationFile="$SCRIPT_DIR/log4j2.properties" \
    -Dkafka.logs.dir="$(dirname "$N_LOG")" \
    -cp "$LIB_DIR/*" kafka.Kafka "$N_CONFIG" \
    >>"$N_LOG" 2>&1 </dev/null &
  # Wait (briefly) for the pid file written by the child.
  local i
  for i in $(seq 1 50); do
    pid="$(read_pid "$N_PID")" && break
    sleep 0.1
  done
  [[ -n "${pid:-}" ]] || die "$N_NAME did not write its pid file $N_PID"
  LAUNCHED="$pid"
}

# The nodes a command names, one a line (every node when none is named).
nodes_of() {
  if (($# == 0)); then
    seq 1 "$NODES"
    return
  fi
  local n
  for n in "$@"; do
    [[ "$n" =~ ^[0-9]+$ ]] && ((n >= 1 && n <= NODES)) || die "no node '$n' (nodes are 1 to $NODES)"
    echo "$n"
  done
}

cmd_start() {
  local t0 n i
  local -a nodes pids=()
  t0="$(now_ms)"
  mapfile -t nodes < <(nodes_of "$@")
  lock_run_dir
  ensure_installed
  ensure_cluster_id
  # Every node first, then the waits: a node of a cluster serves only once a majority of the
  # controller quorum runs.
  for n in "${nodes[@]}"; do
    launch "$n"
    pids+=("$LAUNCHED")
  done
  for i in "${!nodes[@]}"; do
    [[ -n "${pids[$i]}" ]] || continue
    wait_ready "${nodes[$i]}" "${pids[$i]}" "$t0"
  done
  if ((NODES > 1)); then
    log "cluster ready; bootstrap servers $(bootstrap_servers)"
  fi
  # Every start (re)applies the principals and ACLs, so a changed access file takes effect.
  if auth_on && [[ -n "${pids[*]}" ]]; then
    apply_access "$ACCESS_FILE"
  fi
}

# ---------------------------------------------------------------------------------------------
# stop / status / reset

cmd_stop() {
  local t0 n i pid deadline
  local -a nodes pids=()
  t0="$(now_ms)"
  deadline=$((t0 + STOP_TIMEOUT * 1000))
  mapfile -t nodes < <(nodes_of "$@")
  lock_run_dir
  # Every node is asked at once: a cluster's controllers shut down together.
  for n in "${nodes[@]}"; do
    node "$n"
    if pid="$(running_pid)"; then
      log "stopping $N_NAME (pid $pid)..."
      kill -TERM "$pid" 2>/dev/null || true
      pids+=("$pid")
    else
      rm -f "$N_PID"
      log "$N_NAME is not running"
      if port_open "$KAFKA_HOST" "$N_PORT"; then
        log "note: something else (not started by kafkactl) listens on $KAFKA_HOST:$N_PORT"
      fi
      pids+=("")
    fi
  done
  for i in "${!nodes[@]}"; do
    pid="${pids[$i]}"
    [[ -n "$pid" ]] || continue
    node "${nodes[$i]}"
    while pid_alive "$pid"; do
      if (($(now_ms) >= deadline)); then
        log "$N_NAME did not stop within ${STOP_TIMEOUT}s; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        local tries
        for tries in $(seq 1 50); do
          pid_alive "$pid" || break
          sleep 0.1
        done
        break
      fi
      sleep 0.2
    done
    rm -f "$N_PID"
    log "$N_NAME stopped ($(($(now_ms) - t0))ms)"
  done
}

cmd_status() {
  local n pid down=0
  for n in $(seq 1 "$NODES"); do
    node "$n"
    if pid="$(running_pid)"; then
      if port_open "$KAFKA_HOST" "$N_PORT"; then
        echo "$N_NAME is running (pid $pid) on $KAFKA_HOST:$N_PORT"
      else
        echo "$N_NAME is starting (pid $pid); $KAFKA_HOST:$N_PORT does not accept connections yet"
      fi
    elif port_open "$KAFKA_HOST" "$N_PORT"; then
      echo "$N_NAME is not running under kafkactl, but something listens on $KAFKA_HOST:$N_PORT"
    else
      echo "$N_NAME is not running"
      down=1
    fi
  done
  ((down == 0)) || return 3
}

cmd_reset() {
  cmd_stop
  local n
  for n in $(seq 1 "$NODES"); do
    node "$n"
    log "deleting $N_DATA"
    rm -rf "$N_DATA"
  done
  ((NODES == 1)) || rm -f "$CLUSTER_ID_FILE"
}

cmd_log() {
  local lines="${1:-40}" n
  local -a nodes
  mapfile -t nodes < <(nodes_of "${@:2}")
  for n in "${nodes[@]}"; do
    node "$n"
    [[ -f "$N_LOG" ]] || die "no log yet at $N_LOG"
    ((NODES == 1)) || echo "==> $N_LOG <=="
    tail -n "$lines" "$N_LOG"
  done
}

# The super user's client properties: for Kafka's own tools, which run beside the broker.
cmd_client_properties() {
  (($# == 1)) || die "usage: $(basename "$0") client-properties FILE"
  local file="$1"
  (umask 077 && : >"$file") || die "cannot write $file"
  if auth_on; then
    cat >"$file" <<PROPERTIES
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$ADMIN_PASSWORD";
PROPERTIES
  fi
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
  while (($# > 0)); do
    case "$1" in
      --nodes) (($# >= 2)) || die "--nodes needs 1 or 3"; NODES="$2"; shift 2 ;;
      --nodes=*) NODES="${1#--nodes=}"; shift ;;
      *) break ;;
    esac
  done
  local cmd="${1:-}"
  (($# > 0)) && shift
  case "$cmd" in
    -h | --help | help) usage; return 0 ;;
    "") usage >&2; exit 2 ;;
  esac
  configure_layout
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start "$@" ;;
    stop) cmd_stop "$@" ;;
    restart) cmd_stop "$@"; cmd_start "$@" ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    log | logs) cmd_log "$@" ;;
    bootstrap) bootstrap_servers ;;
    client-properties) cmd_client_properties "$@" ;;
    access) (($# == 1)) || die "usage: $(basename "$0") access FILE|-"; apply_access "$1" ;;
    java-tool) cmd_java_tool "$@" ;;
    *) echo "kafkactl: unknown command '$cmd'" >&2; usage >&2; exit 2 ;;
  esac
}

main "$@"
