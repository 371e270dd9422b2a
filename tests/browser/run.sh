#!/usr/bin/env bash
# The storefront's end-to-end tests in headless Chromium, against a real running Bazaar.
# Reuses a running system when the gateway already answers on :8080 (a developer's `make run`);
# otherwise starts PostgreSQL, Kafka, every service and the gateway on their default ports,
# loads the demo catalog, runs the tests, and stops what it started.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../../scripts/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<USAGE
Usage: tests/browser/run.sh [NODE TEST ARGS...]

Runs tests/browser/*.test.mjs with node --test in headless Chromium (/usr/bin/chromium).
If the gateway answers http://127.0.0.1:$GATEWAY_PORT/readyz the running system is used as it
is; otherwise this builds the workspace, starts what is missing (PostgreSQL, Kafka, the schema
registry, every service, the gateway), loads the demo catalog, and stops all it started on exit.
Screenshots go to tests/browser/artifacts/.

Environment:
  BAZAAR_SKIP_BUILD=1     do not run cargo build (make test has just built the workspace)
  BAZAAR_BASE_URL=URL     test that storefront instead; start nothing
  BAZAAR_BROWSER_ADMIN_EMAIL, BAZAAR_BROWSER_ADMIN_PASSWORD
                          an admin of that shop, who dispatches and delivers an order (without
                          them, this run creates one with auth-service create-admin)
  CHROMIUM_PATH=PATH      the browser (default /usr/bin/chromium)
  BAZAAR_STARTUP_TIMEOUT  seconds to wait for each /readyz (default 90)
USAGE
  exit 0
fi

started_at=$SECONDS
startup_timeout="${BAZAAR_STARTUP_TIMEOUT:-90}"
# A broker with many (test) topics on disk takes longer than kafkactl's default minute to load.
export KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-180}"
base_url="${BAZAAR_BASE_URL:-}"

# What this run started, stopped again on exit (in reverse order).
started=()
kafka_started=false
postgres_started=false

stop_what_we_started() {
  local status=$?
  trap - EXIT INT TERM
  if [ "${#started[@]}" -gt 0 ]; then
    say "stopping what the browser tests started"
    for ((i = ${#started[@]} - 1; i >= 0; i--)); do stop_pid "${started[$i]}" || true; done
  fi
  $kafka_started && { "$REPO_ROOT/infra/kafka/kafkactl.sh" stop || true; }
  $postgres_started && { "$REPO_ROOT/infra/postgres/pgctl.sh" stop || true; }
  exit "$status"
}
trap stop_what_we_started EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

answers() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }

# node, npm and chromium (scripts/deps.sh installs them; make test has run it already).
command -v node >/dev/null && command -v npm >/dev/null && [ -x "${CHROMIUM_PATH:-/usr/bin/chromium}" ] ||
  "$REPO_ROOT/scripts/deps.sh"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || die "Node.js 20 or later is needed (found $(node --version))"

# playwright-core, exactly as package-lock.json says; reinstalled only when the lock changes.
lock_hash="$(sha256sum "$HERE/package-lock.json" | cut -c1-16)"
if [ ! -f "$HERE/node_modules/.installed-$lock_hash" ]; then
  say "installing the browser test's npm packages (npm ci)"
  (cd "$HERE" && npm ci --no-audit --no-fund --loglevel=error)
  touch "$HERE/node_modules/.installed-$lock_hash"
fi

if [ -n "$base_url" ]; then
  say "testing the storefront at $base_url"
elif answers "http://127.0.0.1:$GATEWAY_PORT/readyz"; then
  base_url="http://127.0.0.1:$GATEWAY_PORT"
  say "Bazaar is already running on :$GATEWAY_PORT; testing it as it is"
else
  base_url="http://127.0.0.1:$GATEWAY_PORT"
  if [ "${BAZAAR_SKIP_BUILD:-0}" != 1 ]; then
    say "building the workspace"
    (cd "$REPO_ROOT" && cargo build --workspace --bins)
  fi
  say "starting PostgreSQL and Kafka (when not running)"
  "$REPO_ROOT/infra/postgres/pgctl.sh" status >/dev/null 2>&1 || postgres_started=true
  "$REPO_ROOT/infra/postgres/pgctl.sh" start
  "$REPO_ROOT/infra/kafka/kafkactl.sh" status >/dev/null 2>&1 || kafka_started=true
  "$REPO_ROOT/infra/kafka/kafkactl.sh" start
  "$BIN_DIR/bazaar" wait-kafka --timeout-secs 60
  "$BIN_DIR/bazaar" --principal ops topics apply

  say "loading the demo catalog"
  (cd "$REPO_ROOT" && "$(binary_of product)" seed-demo && "$(binary_of inventory)" seed-demo)

  say "starting the services and the gateway"
  # Every scenario registers its customers from 127.0.0.1: the shop's limit of registrations
  # per address (20 in 10 minutes) would refuse a second run within the window, and is not
  # what these tests are about (tests/integration's auth suite is).
  export BAZAAR__REGISTER_LIMIT__MAX_PER_ADDRESS=1000
  for entry in "${SERVICES[@]}" "gateway:$GATEWAY_PORT"; do
    name="${entry%%:*}" port="${entry##*:}"
    if answers "http://127.0.0.1:$port/healthz" || pid_alive "$PID_DIR/$name.pid"; then
      echo "  $name already running on :$port; reusing it"
      continue
    fi
    start_process "$name"
    started+=("$name")
  done
  for entry in "${SERVICES[@]}" "gateway:$GATEWAY_PORT"; do
    name="${entry%%:*}" port="${entry##*:}"
    if [[ " ${started[*]} " == *" $name "* ]]; then
      wait_ready "$name" "$port" "$startup_timeout" ||
        die "$name did not become ready within $startup_timeout s (see $LOG_DIR/$name.log)"
    else
      wait_http "http://127.0.0.1:$port/readyz" "$startup_timeout" ||
        die "$name on :$port did not become ready within $startup_timeout s"
    fi
  done
  echo "  ready after $((SECONDS - started_at)) s"
fi

# One scenario dispatches and delivers an order as an admin: an account made for this run
# (with auth-service create-admin on the shop's database), unless one is given.
if [ -z "${BAZAAR_BROWSER_ADMIN_EMAIL:-}" ] && [ -z "${BAZAAR_BASE_URL:-}" ]; then
  export BAZAAR_BROWSER_ADMIN_EMAIL="browser-admin-$(date +%s)-$$@example.com"
  BAZAAR_BROWSER_ADMIN_PASSWORD="$(head -c 18 /dev/urandom | base64)"
  export BAZAAR_BROWSER_ADMIN_PASSWORD
  (cd "$REPO_ROOT" && BAZAAR_ADMIN_PASSWORD="$BAZAAR_BROWSER_ADMIN_PASSWORD" "$(binary_of auth)" \
    create-admin --email "$BAZAAR_BROWSER_ADMIN_EMAIL" --name "Browser test admin" >/dev/null)
fi

say "running the browser tests (headless Chromium)"
test_started=$SECONDS
status=0
(cd "$HERE" && BAZAAR_BASE_URL="$base_url" node --test --test-concurrency=1 "$@" ./*.test.mjs) || status=$?
echo "browser tests: $((SECONDS - test_started)) s (with startup: $((SECONDS - started_at)) s)"
shopt -s nullglob
shots=("$HERE"/artifacts/*.png)
if [ "${#shots[@]}" -gt 0 ]; then
  echo "screenshots:"
  printf '  %s\n' "${shots[@]}"
fi
exit "$status"
