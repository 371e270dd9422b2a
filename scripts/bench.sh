#!/usr/bin/env bash
# `make bench`, `make bench-messaging`, `make bench-checkout`: release builds, measured.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<USAGE
Usage: scripts/bench.sh stack [--bin-dir DIR] [--no-start] [STACK-BENCH OPTIONS...]
       scripts/bench.sh messaging-bench|checkout-bench [OPTIONS...]

stack (make bench): the headline benchmark of the real deployment. Builds the release binaries
  (target directory $RELEASE_TARGET_DIR), starts PostgreSQL and Kafka if
  they are down, starts every service and the gateway exactly as 'make run RELEASE=1' does
  (scripts/run.sh --release --detach), runs stack-bench against the gateway on :8080, and stops
  the services again (and Kafka/PostgreSQL only if it started them). Writes docs/benchmarks.md,
  docs/benchmarks.svg and docs/benchmarks.json; when docs/benchmarks-baseline.json exists (and
  neither --before nor --json is given) the report puts that run beside this one.
    --bin-dir DIR   build nothing but stack-bench; run the stack from DIR (another checkout's
                    release binaries, e.g. the baseline's)
    --no-start      measure the Bazaar already answering on :8080 (started by you)
  Every other option goes to stack-bench: $RELEASE_TARGET_DIR/release/stack-bench --help
  e.g. make bench ARGS="--rates 10,50,100 --seconds 30"
       make bench ARGS="--sustain-rate 300 --sustain-seconds 60"

messaging-bench, checkout-bench (make bench-messaging, make bench-checkout): in-process
  micro-benchmarks (tests/integration/examples), every service inside one process, against
  PostgreSQL, Kafka and the schema registry (started if needed, stopped again if started here).
USAGE
}

if [ "$#" -lt 1 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  usage
  exit 0
fi
bench="$1"; shift
# What the report says reproduces it (the option loop below consumes "$@").
# Quoted where needed, so that the report's copy of it can be pasted back into a shell.
invocation="scripts/bench.sh $bench"
for argument in "$@"; do
  if [[ "$argument" =~ ^[A-Za-z0-9_./,=:@%+-]+$ ]]; then
    invocation+=" $argument"
  else
    invocation+=" '${argument//\'/\'\\\'\'}'"
  fi
done
BAZAAR_RELEASE=1
use_profile

"$REPO_ROOT/scripts/deps.sh"
kafka_was_running=false
"$REPO_ROOT/infra/kafka/kafkactl.sh" status >/dev/null 2>&1 && kafka_was_running=true
postgres_was_running=false
"$REPO_ROOT/infra/postgres/pgctl.sh" status >/dev/null 2>&1 && postgres_was_running=true
started_processes=()
cleanup() {
  local name
  for name in "${started_processes[@]}"; do stop_pid "$name"; done
  $kafka_was_running || "$REPO_ROOT/infra/kafka/kafkactl.sh" stop || true
  $postgres_was_running || "$REPO_ROOT/infra/postgres/pgctl.sh" stop || true
}
trap cleanup EXIT
cd "$REPO_ROOT"

case "$bench" in
  stack|stack-bench)
    start=true
    args=()
    while [ "$#" -gt 0 ]; do
      case "$1" in
        --bin-dir) [ "$#" -ge 2 ] || die "--bin-dir needs a directory"; BAZAAR_BIN_DIR="$(cd "$2" && pwd)" || die "no directory $2"; shift ;;
        --no-start) start=false ;;
        *) args+=("$1") ;;
      esac
      shift
    done
    export BAZAAR_BIN_DIR
    use_profile
    if [ -n "$BAZAAR_BIN_DIR" ]; then
      say "building stack-bench (release); the stack runs from $BAZAAR_BIN_DIR"
      CARGO_TARGET_DIR="$RELEASE_TARGET_DIR" cargo build --release -p bazaar-bench --bin stack-bench
    else
      build_binaries
    fi
    # Databases other runs' tests left behind keep PostgreSQL's autovacuum launcher busy (a
    # worker started per database per minute): part of what an idle stack would be charged.
    "$REPO_ROOT/infra/postgres/pgctl.sh" start
    "$REPO_ROOT/infra/postgres/pgctl.sh" drop-test-dbs
    if $start; then
      if curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$GATEWAY_PORT/readyz" 2>/dev/null; then
        die "a Bazaar already answers on :$GATEWAY_PORT: stop it ('make down' stops what make run/up started) or pass --no-start to measure it"
      fi
      # Stop afterwards only what this run starts (a schema registry another run left up stays).
      for entry in "${SERVICES[@]}" "gateway:$GATEWAY_PORT"; do
        pid_alive "$PID_DIR/${entry%%:*}.pid" || started_processes+=("${entry%%:*}")
      done
      # Every bench customer registers from this one address (127.0.0.1): the shop's limit of
      # registrations per address would stop the bench, and is not what it measures.
      export BAZAAR__REGISTER_LIMIT__MAX_PER_ADDRESS=1000000
      # Twenty customers follow thousands of orders: the order service's limit of open event
      # streams per customer (10) guards a real shop, and is not what the bench measures.
      export BAZAAR__STREAMS__MAX_PER_USER=1000
      if [ -n "$BAZAAR_BIN_DIR" ]; then
        "$REPO_ROOT/scripts/run.sh" --release --detach --bin-dir "$BAZAAR_BIN_DIR"
      else
        # The build above is done, so run.sh's own build step is a no-op.
        "$REPO_ROOT/scripts/run.sh" --release --detach
      fi
    fi
    # Topics of test runs more than an hour old: partitions the broker would keep checkpointing.
    "$BIN_DIR/bazaar" --principal ops topics prune-tests --older-than 1h \
      || say "test topics not pruned; the broker's idle figure includes theirs"
    has_report_option=false
    for arg in "${args[@]}"; do
      case "$arg" in --before|--before=*|--json|--json=*) has_report_option=true ;; esac
    done
    if ! $has_report_option && [ -f "$REPO_ROOT/docs/benchmarks-baseline.json" ]; then
      args+=(--before "$REPO_ROOT/docs/benchmarks-baseline.json")
    fi
    say "running stack-bench (progress below; a full ramp takes several minutes)"
    BAZAAR_BENCH_COMMAND="${BAZAAR_BENCH_COMMAND:-$invocation}" \
      "$RELEASE_TARGET_DIR/release/stack-bench" --repo "$REPO_ROOT" --bin-dir "$BIN_DIR" "${args[@]}"
    ;;
  messaging-bench|checkout-bench)
    "$REPO_ROOT/infra/postgres/pgctl.sh" start
    "$REPO_ROOT/infra/kafka/kafkactl.sh" start
    say "building $bench (release; the first release build takes ~15 minutes)"
    CARGO_TARGET_DIR="$RELEASE_TARGET_DIR" cargo build --release -p bazaar-integration-tests --example "$bench"
    CARGO_TARGET_DIR="$RELEASE_TARGET_DIR" cargo build --release -p schema-registry
    if ! curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8088/readyz 2>/dev/null; then
      start_process registry
      started_processes+=(registry)
      wait_ready registry 8088 60 || die "the schema registry did not become ready"
    fi
    say "running $bench"
    "$RELEASE_TARGET_DIR/release/examples/$bench" "$@"
    ;;
  *)
    usage >&2
    die "unknown benchmark $bench"
    ;;
esac
