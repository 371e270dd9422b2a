#!/usr/bin/env bash
# `make chaos`: every fault scenario of tests/chaos, one at a time, each on a fresh cluster of
# the real service binaries under a steady stream of checkouts, each ending with the invariant
# checker. Starts what it needs (reusing what is already up) and stops what it started.
#
# Scenarios 4 and 5 SIGKILL/SIGSTOP the shared Kafka broker and restart PostgreSQL in immediate
# mode: any other test using them at the time will fail. They restore both before returning.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

if [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ]; then
  cat <<USAGE
Usage: scripts/chaos.sh [FILTER...]

Runs the fault-injection scenarios of tests/chaos (the ignored scenario_* and cluster_* tests)
one at a time and prints a table of the results (also appended to
\$BAZAAR_RUN_DIR/chaos/results.jsonl). FILTER narrows them like a cargo test filter, e.g.
'scripts/chaos.sh scenario_4', or 'scripts/chaos.sh cluster_' for the scaled-out cluster's five
(two instances of every service behind the gateway, on three Kafka nodes of their own).
Takes several minutes. Scenarios 4 and 5 break the shared broker and PostgreSQL for a while.

  BAZAAR_CHAOS_BIN_DIR=DIR  run the services from DIR (e.g. a release build: a scaled-out
                            cluster of debug binaries is CPU-bound on two cores by itself)
  BAZAAR_CHAOS_RATE=N       checkouts per second of the load (default 10)
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

say "starting PostgreSQL and Kafka"
"$REPO_ROOT/infra/postgres/pgctl.sh" start
"$REPO_ROOT/infra/kafka/kafkactl.sh" start

cd "$REPO_ROOT"
say "building the service binaries and the chaos tests"
cargo build --workspace --bins
cargo test --no-run -p bazaar-chaos --test chaos
if curl -fsS -o /dev/null --max-time 2 http://127.0.0.1:8088/readyz 2>/dev/null; then
  say "schema registry already running on :8088; reusing it"
else
  say "starting the schema registry"
  start_process registry
  registry_started=true
  wait_ready registry 8088 60 || die "the schema registry did not become ready (see $LOG_DIR/registry.log)"
fi

results="$BAZAAR_RUN_DIR/chaos/results.jsonl"
mkdir -p "$(dirname "$results")"
touch "$results"
before=$(wc -l <"$results")

say "running the fault scenarios (logs of each cluster under $BAZAAR_RUN_DIR/chaos/)"
status=0
started=$SECONDS
tests_started_ms=$(date +%s%3N)
cargo test -p bazaar-chaos --test chaos -- --ignored --test-threads=1 --nocapture "$@" || status=$?
if [ "$status" = 0 ]; then
  # The scenarios' databases, once they passed (a failure's are kept to look into): left
  # behind, each costs the autovacuum launcher a worker start a minute, and a run leaves ~100,
  # which the next hour's `make bench` would count as the idle stack's.
  "$REPO_ROOT/infra/postgres/pgctl.sh" drop-test-dbs --since "$tests_started_ms"
fi

say "results ($((SECONDS - started)) s)"
tail -n +"$((before + 1))" "$results" | python3 -c '
import json, sys
rows = [json.loads(line) for line in sys.stdin if line.strip()]
print("%-64s %8s %8s %10s %8s" % ("SCENARIO", "ACCEPTED", "REFUSED", "VIOLATIONS", "SETTLED"))
for r in rows:
    refused = sum(r["not_accepted"].values())
    print("%-64s %8d %8d %10d %7.1fs" % (r["scenario"][:64], r["accepted"], refused, r["violations"], r["settle_ms"] / 1000))
    print("    " + ", ".join("%s %d" % item for item in sorted(r["final"].items())))
    f = r.get("figures")
    if f:
        print("    client errors %d, cancelled for timeout %d, longest saga pause %.1fs, checkout -> shipped median %.1fs, rebalances %d (longest %s)" % (
            f["client_errors"], f["cancelled_timeout"], f["longest_saga_pause_ms"] / 1000,
            f["typical_checkout_to_shipped_ms"] / 1000, f["rebalances"],
            ", ".join("%s %.1fs" % (g, ms / 1000) for g, ms in sorted(f["longest_rebalance_ms"].items()))))
    for missed in r.get("missed") or []:
        print("    MISSED: " + missed)
'
exit $status
