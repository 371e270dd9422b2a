#!/usr/bin/env bash
# Fuzzes the public API with schemathesis, driven by the gateway's own /api/openapi.json.
#
# Starts the gateway and the services behind the documented routes (auth, product, order,
# inventory, notification, shipping) on spare ports, each with a fresh database and its own topic
# prefix on the local broker, creates an admin, then lets schemathesis loose with the admin's
# token and every check on (`--checks all`): no 5xx, answers as documented (status, headers,
# schemas, event streams), schema-valid requests accepted and invalid ones refused, 405 with
# `Allow` for undeclared methods, and the rest. Prints how many requests were made, by status;
# the exit code is non-zero if any check failed or any answer was a 5xx.
# Needs PostgreSQL and Kafka running (`make up`, or `make test` once). BAZAAR_BIN_DIR runs
# prebuilt binaries instead of building.
#
#   tests/integration/tools/fuzz-api.sh [extra schemathesis options, e.g. --max-examples 50]
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../../scripts/lib.sh"

BASE_PORT="${FUZZ_BASE_PORT:-18080}"
VENV="${BAZAAR_CACHE_DIR:-$HOME/.cache/bazaar}/pyvenv"
ADMIN_URL="${BAZAAR_TEST_ADMIN_DATABASE_URL:-postgres://bazaar_admin:bazaar_admin@127.0.0.1:5432/postgres}"
TAG="fuzz_$(date +%s)"
PREFIX="test-$TAG."
OUT="$BAZAAR_RUN_DIR/fuzz/$TAG"
mkdir -p "$OUT"

if [ ! -x "$VENV/bin/schemathesis" ]; then
  say "installing schemathesis into $VENV"
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q -r "$REPO_ROOT/tests/integration/tools/fuzz-requirements.txt"
fi

build_binaries -q

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

SERVICES_UNDER_TEST=(auth product order inventory notification shipping)
declare -A PORT=([gateway]=$BASE_PORT [auth]=$((BASE_PORT + 1)) [product]=$((BASE_PORT + 2))
                 [order]=$((BASE_PORT + 3)) [inventory]=$((BASE_PORT + 4))
                 [notification]=$((BASE_PORT + 5)) [shipping]=$((BASE_PORT + 6)))
url_of() { echo "http://127.0.0.1:${PORT[$1]}"; }
db_of() { echo "${ADMIN_URL%/*}/bazaar_test_${TAG}_$1"; }

say "fresh databases and topics (prefix $PREFIX)"
for svc in "${SERVICES_UNDER_TEST[@]}"; do
  psql -q "$ADMIN_URL" -c "CREATE DATABASE bazaar_test_${TAG}_$svc"
done
BAZAAR__KAFKA__TOPIC_PREFIX="$PREFIX" "$BIN_DIR/bazaar" topics apply >/dev/null

# The settings of one service, as NAME=value words (no value has spaces).
env_of() {
  echo "BAZAAR__HTTP__PORT=${PORT[$1]} BAZAAR__DATABASE__URL=$(db_of "$1")" \
    "BAZAAR__KAFKA__TOPIC_PREFIX=$PREFIX BAZAAR__KAFKA__GROUP_ID=$TAG-$1" \
    "BAZAAR__AUTH__JWKS_URL=$(url_of auth)/.well-known/jwks.json" \
    "BAZAAR__MAIL__FILE__DIR=$OUT/mail"
}

say "seeding the demo catalog and creating an admin"
# shellcheck disable=SC2046 # word splitting of env_of is intended
(cd "$REPO_ROOT" && env $(env_of product) "$(binary_of product)" seed-demo >/dev/null \
  && env $(env_of inventory) "$(binary_of inventory)" seed-demo >/dev/null)
ADMIN_PASSWORD="fuzz-$(date +%s%N)"
# shellcheck disable=SC2046
env $(env_of auth) BAZAAR_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
  "$(binary_of auth)" create-admin --email fuzz-admin@example.com --name Fuzz >/dev/null

say "starting ${SERVICES_UNDER_TEST[*]} and the gateway on ports ${BASE_PORT}-$((BASE_PORT + 6))"
for svc in "${SERVICES_UNDER_TEST[@]}"; do
  # shellcheck disable=SC2046
  env $(env_of "$svc") "$(binary_of "$svc")" >"$OUT/$svc.log" 2>&1 &
  pids+=($!)
done
env BAZAAR__HTTP__PORT="${PORT[gateway]}" BAZAAR__UPSTREAMS__AUTH="$(url_of auth)" \
  BAZAAR__UPSTREAMS__PRODUCT="$(url_of product)" BAZAAR__UPSTREAMS__ORDER="$(url_of order)" \
  BAZAAR__UPSTREAMS__INVENTORY="$(url_of inventory)" \
  BAZAAR__UPSTREAMS__NOTIFICATION="$(url_of notification)" \
  BAZAAR__UPSTREAMS__SHIPPING="$(url_of shipping)" \
  BAZAAR__AUTH__JWKS_URL="$(url_of auth)/.well-known/jwks.json" \
  "$(binary_of gateway)" >"$OUT/gateway.log" 2>&1 &
pids+=($!)
# The gateway's /readyz also checks services this run does not start, so its /healthz it is.
wait_up() {
  local deadline=$((SECONDS + 60))
  until curl -fsS -o /dev/null --max-time 2 "$(url_of "$1")/$2" 2>/dev/null; do
    [ "$SECONDS" -lt "$deadline" ] || die "$1 did not come up; see $OUT/$1.log"
    sleep 0.3
  done
}
for svc in "${SERVICES_UNDER_TEST[@]}"; do wait_up "$svc" readyz; done
wait_up gateway healthz

TOKEN="$(curl -fsS "$(url_of gateway)/api/auth/login" -H 'content-type: application/json' \
  -d "{\"email\":\"fuzz-admin@example.com\",\"password\":\"$ADMIN_PASSWORD\"}" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')"

say "fuzzing $(url_of gateway)/api/openapi.json"
set +e
# From the run's own directory: schemathesis keeps a cache in its working directory.
(cd "$OUT" && "$VENV/bin/schemathesis" \
  --config-file "$REPO_ROOT/tests/integration/tools/schemathesis.toml" \
  run "$(url_of gateway)/api/openapi.json" \
  --url "$(url_of gateway)" -H "Authorization: Bearer $TOKEN" \
  --checks all --report har --report-har-path "$OUT/requests.har" --request-timeout 10 "$@")
verdict=$?
set -e

python3 - "$OUT" <<'PY'
import glob, json, sys
entries = []
for path in glob.glob(f"{sys.argv[1]}/*.har"):
    with open(path) as har:
        entries += json.load(har)["log"]["entries"]
by_status = {}
for entry in entries:
    status = entry["response"]["status"]
    by_status[status] = by_status.get(status, 0) + 1
server_errors = {s: n for s, n in by_status.items() if s >= 500}
print(f"requests: {len(entries)}; by status: {dict(sorted(by_status.items()))}")
print(f"5xx answers: {sum(server_errors.values())} {server_errors or ''}")
sys.exit(1 if server_errors else 0)
PY
echo "schemathesis exit code: $verdict (non-zero for any failed check); logs and HAR in $OUT"
exit "$verdict"
