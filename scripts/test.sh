#!/usr/bin/env bash
# `make test`: starts what the tests need (reusing what is already up), checks formatting and
# lints, runs every test in the workspace, and stops what it started. Exit code: the verdict.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<USAGE
Usage: scripts/test.sh [CARGO TEST ARGS...]

Starts PostgreSQL and Kafka if they are not already running, runs cargo fmt --check,
cargo clippy -D warnings and cargo test --workspace against them, then stops what it started.
Extra arguments go to cargo test (e.g. 'scripts/test.sh -p messaging').
USAGE
  exit 0
fi

"$REPO_ROOT/scripts/deps.sh"

kafka_was_running=false
"$REPO_ROOT/infra/kafka/kafkactl.sh" status >/dev/null 2>&1 && kafka_was_running=true
postgres_was_running=false
"$REPO_ROOT/infra/postgres/pgctl.sh" status >/dev/null 2>&1 && postgres_was_running=true

registry_started=false

stop_what_we_started() {
  $registry_started && stop_pid registry
  $kafka_was_running || "$REPO_ROOT/infra/kafka/kafkactl.sh" stop || true
  $postgres_was_running || "$REPO_ROOT/infra/postgres/pgctl.sh" stop || true
}
trap stop_what_we_started EXIT

# Start the broker first: it boots while cargo compiles.
say "starting PostgreSQL and Kafka"
"$REPO_ROOT/infra/postgres/pgctl.sh" start
"$REPO_ROOT/infra/postgres/pgctl.sh" drop-test-dbs
"$REPO_ROOT/infra/kafka/kafkactl.sh" start

cd "$REPO_ROOT"
say "building the workspace"
cargo build --workspace --bins
if curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8088/readyz 2>/dev/null; then
  say "schema registry already running on :8088; reusing it"
else
  say "starting the schema registry"
  start_process registry
  registry_started=true
  wait_ready registry 8088 60 || die "the schema registry did not become ready (see $LOG_DIR/registry.log)"
fi

say "checking formatting"
cargo fmt --all -- --check
say "linting (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "building and running the tests"
cargo test --workspace --no-fail-fast "$@"
