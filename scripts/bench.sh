#!/usr/bin/env bash
# Runs a benchmark binary of crates/bench in release mode against a real PostgreSQL, Kafka and
# schema registry (started if needed, and stopped again if this script started them).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "$#" -lt 1 ] || [ "$1" = "--help" ] || [ "$1" = "-h" ]; then
  echo "Usage: scripts/bench.sh BENCH [ARGS...]   e.g. scripts/bench.sh messaging-bench --help"
  exit 0
fi
bench="$1"; shift

"$REPO_ROOT/scripts/deps.sh"
kafka_was_running=false
"$REPO_ROOT/infra/kafka/kafkactl.sh" status >/dev/null 2>&1 && kafka_was_running=true
postgres_was_running=false
"$REPO_ROOT/infra/postgres/pgctl.sh" status >/dev/null 2>&1 && postgres_was_running=true
registry_started=false
cleanup() {
  $registry_started && stop_pid registry
  $kafka_was_running || "$REPO_ROOT/infra/kafka/kafkactl.sh" stop || true
  $postgres_was_running || "$REPO_ROOT/infra/postgres/pgctl.sh" stop || true
}
trap cleanup EXIT

"$REPO_ROOT/infra/postgres/pgctl.sh" start
"$REPO_ROOT/infra/kafka/kafkactl.sh" start
cd "$REPO_ROOT"
say "building (release; the first release build takes ~8 minutes)"
# A target directory of its own: a release build must not hold the debug one's lock.
release_target="${BAZAAR_BENCH_TARGET_DIR:-$CARGO_TARGET_DIR-release}"
CARGO_TARGET_DIR="$release_target" cargo build --release -p bazaar-bench --bin "$bench"
cargo build -p schema-registry
if ! curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8088/readyz 2>/dev/null; then
  start_process registry
  registry_started=true
  wait_ready registry 8088 60 || die "the schema registry did not become ready"
fi
say "running $bench"
"$release_target/release/$bench" "$@"
