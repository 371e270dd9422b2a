#!/usr/bin/env bash
# stripe-mock, Stripe's own mock of its API (github.com/stripe/stripe-mock): it validates every
# request against Stripe's OpenAPI specification and answers with fixture objects. The payment
# service's Stripe adapter is tested against it (tests/integration/tests/payment_contract.rs).
# Built from its Go module once per machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STRIPE_MOCK_VERSION="${BAZAAR_STRIPE_MOCK_VERSION:-v0.203.0}"
STRIPE_MOCK_MODULE="github.com/stripe/stripe-mock"
CACHE_DIR="${BAZAAR_CACHE_DIR:-$HOME/.cache/bazaar}"
TOOL_DIR="$CACHE_DIR/stripe-mock-$STRIPE_MOCK_VERSION"
STRIPE_MOCK_BIN="$TOOL_DIR/bin/stripe-mock"
FIXTURES="$TOOL_DIR/fixtures-confirmed.json"
# stripe-mock's own default HTTP port.
PORT="${BAZAAR_STRIPE_MOCK_PORT:-12111}"
URL="http://127.0.0.1:$PORT"

usage() {
  cat <<USAGE
Usage: scripts/stripe-mock.sh install|installed|start|stop|url

  install    build stripe-mock $STRIPE_MOCK_VERSION ($STRIPE_MOCK_MODULE) once per machine
             into $TOOL_DIR/bin with 'go install', and write its fixtures for Bazaar
  installed  succeed when it is built already
  start      install if needed and start it on $URL (HTTPS on the next port; reused if
             running, or if another stripe-mock answers there); prints its URL
  stop       stop the stripe-mock this script started
  url        its base URL ($URL), what the payment service's provider.stripe_base_url takes

stripe-mock keeps no state: every answer is a fixture object with the request's own values
(amount, currency, ...) reflected into it, so tests running at once can share one. Its bundled
fixtures hold a PaymentIntent that still requires a payment method; Bazaar's copy
($FIXTURES) holds one that succeeded, which is what confirming a
payment intent with Stripe's test card pm_card_visa gives. BAZAAR_STRIPE_MOCK_PORT moves it.
USAGE
}

install() {
  go_tool_install_needed "stripe-mock $STRIPE_MOCK_VERSION" "$STRIPE_MOCK_BIN" || return 0
  local module_dir
  (cd "$TOOL_DIR" && GOBIN="$TOOL_DIR/bin" nice -n 10 go install "$STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION") >&2 ||
    die "stripe-mock was not built (see above)"
  module_dir="$(cd "$TOOL_DIR" && go mod download -json "$STRIPE_MOCK_MODULE@$STRIPE_MOCK_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  python3 - "$module_dir/embedded/openapi/fixtures3.json" "$FIXTURES" <<'PATCH' || die "cannot write $FIXTURES"
import json, sys
fixtures = json.load(open(sys.argv[1]))
intent = fixtures["resources"]["payment_intent"]
intent["status"] = "succeeded"
intent["last_payment_error"] = None
json.dump(fixtures, open(sys.argv[2], "w"))
PATCH
}

answers() {
  # Any API request answers; the key only has to look like a test key.
  curl -fsS -o /dev/null --max-time 2 -H "Authorization: Bearer sk_test_bazaar" "$URL/v1/balance" 2>/dev/null
}

start() {
  if ! pid_alive "$PID_DIR/stripe-mock.pid" && answers; then
    echo "  a stripe-mock already answers on $URL; reusing it" >&2
  elif ! pid_alive "$PID_DIR/stripe-mock.pid"; then
    install
    # HTTPS cannot be turned off beside an HTTP address: it gets the next port, on loopback too.
    (exec "$STRIPE_MOCK_BIN" -http-addr "127.0.0.1:$PORT" -https-addr "127.0.0.1:$((PORT + 1))" \
      -fixtures "$FIXTURES") \
      >>"$LOG_DIR/stripe-mock.log" 2>&1 &
    echo $! >"$PID_DIR/stripe-mock.pid"
    local deadline=$((SECONDS + 30))
    until answers; do
      pid_alive "$PID_DIR/stripe-mock.pid" && [ "$SECONDS" -lt "$deadline" ] ||
        die "stripe-mock did not start (see $LOG_DIR/stripe-mock.log)"
      sleep 0.2
    done
  fi
  echo "$URL"
}

case "${1:-}" in
  install) install ;;
  installed) [ -x "$STRIPE_MOCK_BIN" ] && [ -f "$FIXTURES" ] ;;
  start) start ;;
  stop) stop_pid stripe-mock ;;
  url) echo "$URL" ;;
  -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
