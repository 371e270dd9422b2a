#!/usr/bin/env bash
# `make test`: starts what the tests need (reusing what is already up), checks formatting and
# lints, runs every test in the workspace and the storefront's browser tests, and stops what it
# started. Exit code: the verdict.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<USAGE
Usage: scripts/test.sh [CARGO TEST ARGS...]

Starts PostgreSQL, Kafka and Mailpit (scripts/mailpit.sh, the notification tests' SMTP server
and inbox) if they are not already running, runs cargo fmt --check,
cargo clippy -D warnings and cargo test --workspace against them, then the storefront's
browser tests (tests/browser/run.sh: every service and the gateway, headless Chromium), then
stops what it started. The verdict fails if either kind of test fails.
Extra arguments go to cargo test (e.g. 'scripts/test.sh -p messaging'); such a narrowed run
skips the browser tests unless BAZAAR_BROWSER_TESTS=1 (BAZAAR_BROWSER_TESTS=0 always skips them).
USAGE
  exit 0
fi

"$REPO_ROOT/scripts/deps.sh"

kafka_was_running=false
"$REPO_ROOT/infra/kafka/kafkactl.sh" status >/dev/null 2>&1 && kafka_was_running=true
postgres_was_running=false
"$REPO_ROOT/infra/postgres/pgctl.sh" status >/dev/null 2>&1 && postgres_was_running=true

registry_started=false
mailpit_started=false

stop_what_we_started() {
  $registry_started && stop_pid registry
  $mailpit_started && stop_pid mailpit
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
# Mailpit, the real SMTP server the notification tests mail through, builds (once per machine)
# beside the workspace.
mailpit_build=""
if ! "$REPO_ROOT/scripts/mailpit.sh" installed; then
  say "building Mailpit beside the workspace (once per machine; log: $LOG_DIR/mailpit-install.log)"
  "$REPO_ROOT/scripts/mailpit.sh" install >"$LOG_DIR/mailpit-install.log" 2>&1 &
  mailpit_build=$!
fi
say "building the workspace"
cargo build --workspace --bins
if [ -n "$mailpit_build" ] && ! wait "$mailpit_build"; then
  tail -n 20 "$LOG_DIR/mailpit-install.log" >&2
  die "Mailpit was not built (see $LOG_DIR/mailpit-install.log)"
fi
# Each test makes its own topics; drop those of runs more than an hour old.
"$BIN_DIR/bazaar" topics prune-tests --older-than 1h
if curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8088/readyz 2>/dev/null; then
  say "schema registry already running on :8088; reusing it"
else
  say "starting the schema registry"
  start_process registry
  registry_started=true
  wait_ready registry 8088 60 || die "the schema registry did not become ready (see $LOG_DIR/registry.log)"
fi

if curl -fsS -o /dev/null --max-time 2 "$("$REPO_ROOT/scripts/mailpit.sh" url)/readyz" 2>/dev/null; then
  say "Mailpit already running; reusing it"
else
  say "starting Mailpit"
  "$REPO_ROOT/scripts/mailpit.sh" start >/dev/null
  mailpit_started=true
fi
# Where tests/integration/tests/notifications.rs finds it.
export BAZAAR_MAILPIT_URL="$("$REPO_ROOT/scripts/mailpit.sh" url)"
export BAZAAR_MAILPIT_SMTP_PORT="$("$REPO_ROOT/scripts/mailpit.sh" smtp-port)"

say "checking and unit-testing the Prometheus rules (promtool)"
"$REPO_ROOT/scripts/prometheus.sh" test
say "checking formatting"
cargo fmt --all -- --check
say "checking the documentation's links"
"$REPO_ROOT/scripts/check-doc-links.py"
say "linting (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "building and running the tests"
cargo_status=0
cargo test --workspace --no-fail-fast "$@" || cargo_status=$?

# The storefront in headless Chromium against the whole running system (tests/browser/run.sh
# reuses a Bazaar already up on :8080, else starts every service and stops them afterwards).
# Part of the full run; a run narrowed with cargo arguments skips it unless asked for.
browser_status=skipped
if [ "${BAZAAR_BROWSER_TESTS:-$([ $# -eq 0 ] && echo 1 || echo 0)}" = 1 ]; then
  say "running the storefront's browser tests"
  browser_status=0
  BAZAAR_SKIP_BUILD=1 "$REPO_ROOT/tests/browser/run.sh" || browser_status=$?
fi

verdict() { case "$1" in 0) echo passed ;; skipped) echo skipped ;; *) echo "FAILED (exit $1)" ;; esac; }
say "cargo test: $(verdict "$cargo_status"); browser tests: $(verdict "$browser_status")"
if [ "$cargo_status" != 0 ] || { [ "$browser_status" != 0 ] && [ "$browser_status" != skipped ]; }; then
  exit 1
fi
