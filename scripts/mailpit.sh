#!/usr/bin/env bash
# Mailpit, a real SMTP server with a web inbox and an HTTP API, for local runs and tests: the
# notification service mails through it, a person trying the shop reads the confirmation
# e-mails in its inbox, and tests/integration/tests/notifications.rs asserts through its API.
# Built from its Go module once per machine.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MAILPIT_VERSION="${BAZAAR_MAILPIT_VERSION:-v1.33.1}"
MAILPIT_MODULE="github.com/axllent/mailpit"
CACHE_DIR="${BAZAAR_CACHE_DIR:-$HOME/.cache/bazaar}"
TOOL_DIR="$CACHE_DIR/mailpit-$MAILPIT_VERSION"
MAILPIT_BIN="$TOOL_DIR/bin/mailpit"
# Mailpit's own default ports.
SMTP_PORT="${BAZAAR_MAILPIT_SMTP_PORT:-1025}"
HTTP_PORT="${BAZAAR_MAILPIT_HTTP_PORT:-8025}"
INBOX_URL="http://127.0.0.1:$HTTP_PORT"

usage() {
  cat <<USAGE
Usage: scripts/mailpit.sh install|installed|start|stop|url|smtp-port|settings

  install    build Mailpit $MAILPIT_VERSION ($MAILPIT_MODULE) once per machine into
             $TOOL_DIR/bin (~2 minutes on two busy cores): the module
             fetched with 'go mod download', its web inbox's script bundle built with npm and
             esbuild (the module ships without it), then 'go build' (needs go >= 1.26, node, npm)
  installed  succeed when it is built already
  start      install if needed, start it (reused if running, or if another Mailpit answers
             there): SMTP on 127.0.0.1:$SMTP_PORT, inbox and API on $INBOX_URL; prints the
             notification service's settings (BAZAAR__MAIL__*), one per line
  stop       stop the Mailpit this script started
  url        the inbox and API ($INBOX_URL)
  smtp-port  the SMTP port ($SMTP_PORT)
  settings   the notification service's settings for this Mailpit, as 'start' prints them

BAZAAR_MAILPIT_SMTP_PORT and BAZAAR_MAILPIT_HTTP_PORT move it. It keeps the latest 1000
messages in a temporary database, so a restart empties the inbox. Its API, e.g.:
  $INBOX_URL/api/v1/messages
  $INBOX_URL/api/v1/search?query=to:someone@example.com
USAGE
}

install() {
  go_tool_install_needed "Mailpit $MAILPIT_VERSION" "$MAILPIT_BIN" || return 0
  build_mailpit >&2 || die "Mailpit was not built (see above)"
  rm -rf "$TOOL_DIR/src" "$TOOL_DIR/node_modules" "$TOOL_DIR"/package*.json
  [ -x "$MAILPIT_BIN" ] || die "Mailpit was not built (see above)"
}

# The module, its web inbox's script bundle (the module ships without server/ui/dist, so the
# inbox would be a blank page), then the binary with the bundle embedded.
build_mailpit() {
  local module_dir source_dir="$TOOL_DIR/src" packages
  module_dir="$(cd "$TOOL_DIR" && go mod download -json "$MAILPIT_MODULE@$MAILPIT_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')" || return 1
  [ -d "$module_dir" ] || { echo "go mod download did not fetch $MAILPIT_MODULE@$MAILPIT_VERSION"; return 1; }
  # The module cache is read-only, and the bundle is written into the source tree.
  rm -rf "$source_dir" && cp -r "$module_dir" "$source_dir" && chmod -R u+w "$source_dir" || return 1
  # The inbox's packages and the bundler, at the ranges its package.json names, into a folder
  # above the sources (where esbuild finds them). Not 'npm ci': its lockfile pins versions
  # that npm mirrors may lack (sass-embedded 1.108.1 here). Left out: rapidoc, which only
  # Mailpit's own API docs page uses, and the linters and test tools.
  packages="$(node -e '
    const p = require(process.argv[1]);
    const build = ["esbuild", "esbuild-plugin-vue-next", "esbuild-sass-plugin", "@vue/compiler-sfc"];
    const wanted = Object.entries(p.dependencies).filter(([name]) => name !== "rapidoc")
      .concat(build.map((name) => [name, p.devDependencies[name]]));
    console.log(wanted.map(([name, range]) => `${name}@${range}`).join(" "));
  ' "$source_dir/package.json")" || return 1
  echo '{"private": true}' >"$TOOL_DIR/package.json"
  # shellcheck disable=SC2086 # one word per package
  (cd "$TOOL_DIR" && npm install --no-audit --no-fund --loglevel=error $packages) || return 1
  sed -i 's#, "server/ui-src/docs.js"##' "$source_dir/esbuild.config.mjs"
  (cd "$source_dir" && MINIFY=true node esbuild.config.mjs) || return 1
  (cd "$source_dir" && nice -n 10 go build -trimpath \
    -ldflags "-s -w -X $MAILPIT_MODULE/config.Version=$MAILPIT_VERSION" -o "$MAILPIT_BIN" .)
}

settings() {
  printf '%s\n' BAZAAR__MAIL__TRANSPORT=smtp BAZAAR__MAIL__SMTP__HOST=127.0.0.1 \
    "BAZAAR__MAIL__SMTP__PORT=$SMTP_PORT" BAZAAR__MAIL__SMTP__TLS=none
}

start() {
  if ! pid_alive "$PID_DIR/mailpit.pid"; then
    if curl -fsS -o /dev/null --max-time 2 "$INBOX_URL/readyz" 2>/dev/null; then
      echo "  a Mailpit already answers on $INBOX_URL; reusing it" >&2
    else
      install
      # No look-ups on the network: no release check, no reverse DNS of SMTP clients.
      (exec "$MAILPIT_BIN" --smtp "127.0.0.1:$SMTP_PORT" --listen "127.0.0.1:$HTTP_PORT" \
        --max 1000 --disable-version-check --smtp-disable-rdns) >>"$LOG_DIR/mailpit.log" 2>&1 &
      echo $! >"$PID_DIR/mailpit.pid"
      wait_http "$INBOX_URL/readyz" 30 || die "Mailpit did not start (see $LOG_DIR/mailpit.log)"
    fi
  fi
  settings
}

case "${1:-}" in
  install) install ;;
  installed) [ -x "$MAILPIT_BIN" ] ;;
  start) start ;;
  stop) stop_pid mailpit ;;
  url) echo "$INBOX_URL" ;;
  smtp-port) echo "$SMTP_PORT" ;;
  settings) settings ;;
  -h | --help) usage ;;
  *) usage >&2; exit 2 ;;
esac
