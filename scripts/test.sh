#!/usr/bin/env bash
# `make test`: starts what the tests need (reusing what is already up), checks formatting and
# lints, runs every test in the workspace and the storefront's browser tests, and stops what it
# started. Exit code: the verdict.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<USAGE
Usage: scripts/test.sh [CARGO TEST ARGS...]

Starts PostgreSQL, Kafka, Mailpit (scripts/mailpit.sh, the notification tests' SMTP server and
inbox) and stripe-mock (scripts/stripe-mock.sh, the Stripe adapter's contract tests) if they are
not already running, runs cargo fmt --check,
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
# Tools built once per machine from their Go modules, started for the tests.
tools=(mailpit stripe-mock)
tools_started=()

stop_what_we_started() {
  $registry_started && stop_pid registry
  local tool
  for tool in "${tools_started[@]}"; do stop_pid "$tool"; done
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
# The tools build (once per machine) beside the workspace.
tool_builds=()
for tool in "${tools[@]}"; do
  if ! "$REPO_ROOT/scripts/$tool.sh" installed; then
    say "building $tool beside the workspace (once per machine; log: $LOG_DIR/$tool-install.log)"
    "$REPO_ROOT/scripts/$tool.sh" install >"$LOG_DIR/$tool-install.log" 2>&1 &
    tool_builds+=("$tool:$!")
  fi
done
say "building the workspace"
cargo build --workspace --bins
for build in "${tool_builds[@]}"; do
  tool="${build%%:*}"
  if ! wait "${build##*:}"; then
    tail -n 20 "$LOG_DIR/$tool-install.log" >&2
    die "$tool was not built (see $LOG_DIR/$tool-install.log)"
  fi
done
# Each test makes its own topics; drop those of runs more than an hour old.
"$BIN_DIR/bazaar" --principal ops topics prune-tests --older-than 1h
if curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8088/readyz 2>/dev/null; then
  say "schema registry already running on :8088; reusing it"
else
  say "starting the schema registry"
  start_process registry
  registry_started=true
  wait_ready registry 8088 60 || die "the schema registry did not become ready (see $LOG_DIR/registry.log)"
fi

for tool in "${tools[@]}"; do
  if pid_alive "$PID_DIR/$tool.pid"; then
    say "$tool already running; reusing it"
    continue
  fi
  say "starting $tool"
  "$REPO_ROOT/scripts/$tool.sh" start >/dev/null
  # Not ours when another one already answered on its port.
  if pid_alive "$PID_DIR/$tool.pid"; then tools_started+=("$tool"); fi
done
# Where tests/integration/tests/notifications.rs and payment_contract.rs find them.
export BAZAAR_MAILPIT_URL="$("$REPO_ROOT/scripts/mailpit.sh" url)"
export BAZAAR_MAILPIT_SMTP_PORT="$("$REPO_ROOT/scripts/mailpit.sh" smtp-port)"
export BAZAAR_STRIPE_MOCK_URL="$("$REPO_ROOT/scripts/stripe-mock.sh" url)"

say "checking and unit-testing the Prometheus rules (promtool)"
"$REPO_ROOT/scripts/prometheus.sh" test
say "checking formatting"
cargo fmt --all -- --check
say "checking the documentation's links"
"$REPO_ROOT/scripts/check-doc-links.py"
say "linting (clippy, warnings are errors)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
say "building and running the tests"
# The per-test databases and topics this run makes are dropped when it passes (a failed run
# keeps them for a look; the next run drops them an hour on).
tests_started_ms=$(date +%s%3N)
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

if [ "$cargo_status" = 0 ]; then
  "$REPO_ROOT/infra/postgres/pgctl.sh" drop-test-dbs --since "$tests_started_ms"
  # And their topics: ten thousand partitions left by a few runs kept an idle broker at 4.5 % of
  # a core (1.1 % without them), which is what `make bench` reports as the stack's idle.
  "$BIN_DIR/bazaar" --principal ops topics prune-tests --since "$tests_started_ms" \
    || say "this run's test topics were not deleted; the next run deletes them an hour on"
fi

verdict() { case "$1" in 0) echo passed ;; skipped) echo skipped ;; *) echo "FAILED (exit $1)" ;; esac; }
say "cargo test: $(verdict "$cargo_status"); browser tests: $(verdict "$browser_status")"
if [ "$cargo_status" != 0 ] || { [ "$browser_status" != 0 ] && [ "$browser_status" != skipped ]; }; then
  exit 1
fi
