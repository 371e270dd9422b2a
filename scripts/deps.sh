#!/usr/bin/env bash
# Installs what building and running Bazaar needs on a fresh Debian machine; skips what is there.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  echo "Usage: scripts/deps.sh   (install build and runtime packages that are missing)"
  exit 0
fi

# cmake + libcurl headers: rdkafka's cmake build of librdkafka; libssl-dev: its SASL/SCRAM (every
# client authenticates to Kafka). kcat: reading topics by hand (its librdkafka cannot do SCRAM
# with Kafka 4; locally the tests' principal may use PLAIN). openjdk + maven: the Kafka broker,
# assembled from Maven Central (a JDK: kafkactl.sh runs KafkaAccess.java from source).
# chromium: the storefront's browser tests (tests/browser), driven by playwright-core from npm.
packages=(cmake libcurl4-openssl-dev libssl-dev pkg-config g++ make curl kcat postgresql openjdk-17-jdk-headless maven python3-venv chromium)
# Node.js and npm run the browser tests; a machine that already has a node (e.g. Node 20 from
# another source) keeps it.
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing packages (${missing[*]}); run as root or install them"
  say "installing ${missing[*]} (once per machine)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Prometheus and promtool (Debian's package): 'make run' starts it, 'make test' tests the rules.
"$REPO_ROOT/scripts/prometheus.sh" install
command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"

# Confluent's Python client, for tests proving that ordinary Confluent consumers read our topics.
requirements="$REPO_ROOT/tests/integration/tools/requirements.txt"
venv="$(dirname "$(dirname "$BAZAAR_TEST_PYTHON")")"
marker="$venv/.installed-$(sha256sum "$requirements" | cut -c1-16)"
if [ ! -f "$marker" ]; then
  say "installing Python test tools into $venv (once per machine)"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r "$requirements"
  touch "$marker"
fi
