#!/usr/bin/env bash
# Jaeger (v2 all-in-one: an OTLP collector, in-memory storage, the UI and its query API) for
# the traces the services export with 'make run TRACES=1'. Built from its Go module once per
# machine (several minutes on two cores), hence behind an option.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JAEGER_VERSION="${BAZAAR_JAEGER_VERSION:-v1.75.0}"
CACHE_DIR="${BAZAAR_CACHE_DIR:-$HOME/.cache/bazaar}"
TOOL_DIR="$CACHE_DIR/jaeger-$JAEGER_VERSION"
JAEGER_BIN="$TOOL_DIR/bin/jaeger"
# Jaeger's own defaults: OTLP/HTTP on 4318 (OTLP/gRPC 4317), UI and query API on 16686.
OTLP_ENDPOINT="http://127.0.0.1:4318"
UI_URL="http://127.0.0.1:16686"

usage() {
  cat <<USAGE
Usage: scripts/jaeger.sh install|start|stop|url|endpoint|test

  install   build jaeger $JAEGER_VERSION (github.com/jaegertracing/jaeger/cmd/jaeger) into
            $TOOL_DIR/bin with Go's module tooling (needs go >= 1.24)
  start     install if needed, start it (reused if running), print the OTLP endpoint on stdout
            for BAZAAR__LOG__OTLP_ENDPOINT, and where the UI is on stderr
  stop      stop the Jaeger this script started
  url       the UI and query API ($UI_URL)
  test      run tests/integration/tests/traces.rs against the running Bazaar (started with
            'make up TRACES=1'): one checkout's trace holds spans of every service
  endpoint  the OTLP/HTTP endpoint the services export to ($OTLP_ENDPOINT)
USAGE
}

install() {
  [ -x "$JAEGER_BIN" ] && return 0
  command -v go >/dev/null || die "Go is needed to build Jaeger (https://go.dev/dl/); or run without TRACES=1"
  say "building Jaeger $JAEGER_VERSION from its Go module (once per machine; several minutes)" >&2
  mkdir -p "$TOOL_DIR"
  # Jaeger's go.mod has replace directives, so 'go install module@version' refuses it; as a
  # tool of a module of our own it builds.
  (
    cd "$TOOL_DIR"
    [ -f go.mod ] || go mod init bazaar-jaeger >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@$JAEGER_VERSION"
    GOBIN="$TOOL_DIR/bin" go install tool
  ) >&2
  [ -x "$JAEGER_BIN" ] || die "Jaeger was not built (see above)"
}

start() {
  if ! pid_alive "$PID_DIR/jaeger.pid"; then
    install
    (exec "$JAEGER_BIN") >>"$LOG_DIR/jaeger.log" 2>&1 &
    echo $! >"$PID_DIR/jaeger.pid"
    wait_http "$UI_URL/" 60 || die "Jaeger did not start (see $LOG_DIR/jaeger.log)"
  fi
  echo "  Traces:       $UI_URL/   (Jaeger; spans exported over OTLP to $OTLP_ENDPOINT)" >&2
  echo "$OTLP_ENDPOINT"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_pid jaeger ;;
  url) echo "$UI_URL" ;;
  test)
    # The integration test that follows one checkout's trace, against the running deployment.
    cd "$REPO_ROOT"
    BAZAAR_JAEGER_URL="$UI_URL" BAZAAR_GATEWAY_URL="${BAZAAR_GATEWAY_URL:-http://127.0.0.1:$GATEWAY_PORT}" \
      cargo test -p bazaar-integration-tests --test traces -- --nocapture ;;
  endpoint) echo "$OTLP_ENDPOINT" ;;
  -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
