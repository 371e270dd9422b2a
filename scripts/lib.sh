# Shared by the scripts in this folder: paths, the service list, and process helpers.
# shellcheck shell=bash

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export BAZAAR_RUN_DIR="${BAZAAR_RUN_DIR:-$REPO_ROOT/.run}"
LOG_DIR="$BAZAAR_RUN_DIR/logs"
PID_DIR="$BAZAAR_RUN_DIR/pids"
# Outside the checkout, so every clone on this machine (and CI) reuses one build cache.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bazaar/target}"
# Release builds get a target directory of their own, so a release build never waits for the
# debug one's lock (nor evicts its artifacts): ~/.cache/bazaar/target-release by default.
RELEASE_TARGET_DIR="${BAZAAR_RELEASE_TARGET_DIR:-$CARGO_TARGET_DIR-release}"
# The build the scripts run: debug unless BAZAAR_RELEASE=1 (`make run RELEASE=1`, `run.sh
# --release`, `make bench`). BAZAAR_BIN_DIR runs prebuilt binaries from a directory instead
# (e.g. another checkout's release build); the scripts then build nothing.
BAZAAR_RELEASE="${BAZAAR_RELEASE:-}"
BAZAAR_BIN_DIR="${BAZAAR_BIN_DIR:-}"
BIN_DIR=""

# use_profile: set BIN_DIR for the mode in BAZAAR_RELEASE / BAZAAR_BIN_DIR.
use_profile() {
  if [ -n "$BAZAAR_BIN_DIR" ]; then
    BIN_DIR="$BAZAAR_BIN_DIR"
  elif [ "$BAZAAR_RELEASE" = 1 ]; then
    BIN_DIR="$RELEASE_TARGET_DIR/release"
  else
    BIN_DIR="$CARGO_TARGET_DIR/debug"
  fi
}
use_profile

# build_binaries [CARGO ARGS...]: build the workspace's binaries for the current mode (nothing
# when BAZAAR_BIN_DIR names prebuilt ones).
build_binaries() {
  if [ -n "$BAZAAR_BIN_DIR" ]; then
    say "using the prebuilt binaries in $BAZAAR_BIN_DIR (no build)"
  elif [ "$BAZAAR_RELEASE" = 1 ]; then
    say "building the workspace, release (first release build on a machine takes ~15 minutes)"
    (cd "$REPO_ROOT" && CARGO_TARGET_DIR="$RELEASE_TARGET_DIR" cargo build --release --workspace --bins "$@")
  else
    say "building the workspace (first build on a machine takes ~5 minutes)"
    (cd "$REPO_ROOT" && cargo build --workspace --bins "$@")
  fi
}

# Draining before a stop (platform::shutdown) lets a balancer move callers to another instance;
# a lone instance has nobody to hand over to, so processes these scripts start stop at once
# unless told otherwise. The cluster (run.sh --cluster) drains for 2 s.
export BAZAAR_DRAIN_MS="${BAZAAR_DRAIN_MS:-0}"

# Service name and port, in start order. The schema registry comes first (serializers in the
# other services look schemas up there), then the payment gateway simulator (the card processor
# the payment service charges through); the gateway comes last.
SERVICES=(registry:8088 payment-gateway:8089 auth:8081 product:8082 order:8083 inventory:8084 payment:8085 notification:8086 shipping:8087)
GATEWAY_PORT=8080

mkdir -p "$LOG_DIR" "$PID_DIR"

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

binary_of() {
  case "$1" in
    gateway) echo "$BIN_DIR/gateway" ;;
    registry) echo "$BIN_DIR/schema-registry" ;;
    payment-gateway) echo "$BIN_DIR/payment-gateway" ;;
    *) echo "$BIN_DIR/$1-service" ;;
  esac
}

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# stop_pid NAME: SIGTERM the process in $PID_DIR/NAME.pid, wait up to 20 s, then SIGKILL.
stop_pid() {
  local name="$1" file="$PID_DIR/$1.pid" pid deadline
  [ -f "$file" ] || return 0
  pid="$(cat "$file")"
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 20))
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      printf '%s did not stop within 20 s; killing it\n' "$name" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    printf 'stopped %s (pid %s)\n' "$name" "$pid"
  fi
  rm -f "$file"
}

# stop_pids NAME...: stop_pid for several processes at once (each drains in parallel).
stop_pids() {
  local name
  for name in "$@"; do stop_pid "$name" & done
  wait
}

# start_process NAME [LABEL [VAR=VALUE...]]: start the workspace binary of NAME in the background,
# logging to $LOG_DIR/LABEL.log with its pid in $PID_DIR/LABEL.pid (LABEL defaults to NAME; an
# instance of a service is e.g. order-2), with the given settings added to its environment.
start_process() {
  local name="$1" label="${2:-$1}"
  local pidfile="$PID_DIR/$label.pid"
  [ "$#" -ge 2 ] && shift 2 || shift
  # Every simulator these scripts start is a local one: its /_sim controls (faults, the ledger
  # `bazaar check` reads) are on. A deployment leaves them off.
  [ "$name" = payment-gateway ] && set -- BAZAAR__TEST_MODE=true "$@"
  if pid_alive "$pidfile"; then
    echo "$label already running (pid $(cat "$pidfile"))"
    return 0
  fi
  (cd "$REPO_ROOT" && exec env "$@" "$(binary_of "$name")") >>"$LOG_DIR/$label.log" 2>&1 &
  echo $! >"$pidfile"
}

# wait_ready LABEL PORT SECONDS: poll /readyz until 200, failing early if the process died
# (another process may hold the port and answer in its place).
wait_ready() {
  local name="$1" port="$2" deadline=$((SECONDS + $3))
  until curl -fsS -o /dev/null --max-time 2 "http://127.0.0.1:$port/readyz" 2>/dev/null; do
    if ! pid_alive "$PID_DIR/$name.pid"; then
      printf '%s exited; last log lines:\n' "$name" >&2
      tail -n 20 "$LOG_DIR/$name.log" >&2 || true
      return 1
    fi
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
  pid_alive "$PID_DIR/$name.pid"
}

# Python tools for interoperability tests (Confluent's own client), in a venv outside the checkout.
export BAZAAR_TEST_PYTHON="${BAZAAR_TEST_PYTHON:-$HOME/.cache/bazaar/pyvenv/bin/python}"

# wait_http URL SECONDS: poll until URL answers 2xx.
wait_http() {
  local url="$1" deadline=$((SECONDS + $2))
  until curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.2
  done
}

# go_tool_install_needed NAME BIN: the shared preamble of a tool built once per machine from its
# Go module into ~/.cache/bazaar/<name>-<version> (scripts/mailpit.sh, stripe-mock.sh): false
# when BIN is built already; otherwise dies without a Go toolchain, says so and creates BIN's
# folder.
go_tool_install_needed() {
  local name="$1" bin="$2"
  [ -x "$bin" ] && return 1
  command -v go >/dev/null || die "Go is needed to build $name once per machine (https://go.dev/dl/)"
  say "building $name from its Go module (once per machine)" >&2
  mkdir -p "$(dirname "$bin")"
}
