# Bazaar developer commands. Each target installs and starts what it needs on a fresh machine.
.DEFAULT_GOAL := help
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bazaar/target

.PHONY: help run up test down logs lint fmt topics kafka postgres bench-messaging bench-checkout bench test-browser chaos

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

run: ## Start everything (PostgreSQL, Kafka, services, gateway) and print where to go; Ctrl-C stops it
	@scripts/run.sh

up: ## Like run, but return once ready and leave it running ('make down' stops it)
	@scripts/run.sh --detach

test: ## Start what the tests need, run fmt/clippy/every test and the browser tests, stop what was started
	@scripts/test.sh

test-browser: ## Only the storefront's browser tests (headless Chromium); reuses a running Bazaar or starts one
	@tests/browser/run.sh

chaos: ## Fault injection under load, every scenario, each ended by the invariant checker (minutes; breaks the shared Kafka/PostgreSQL for a while)
	@scripts/chaos.sh

down: ## Stop everything run/up/test started
	@scripts/down.sh

logs: ## Show where each process logs, with the last lines of each
	@scripts/logs.sh

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

bench: ## Load benchmark of the whole checkout; writes docs/benchmarks.md and a latency chart (release build)
	@scripts/bench.sh load-bench

bench-messaging: ## Benchmark the messaging runtime (release build) against Kafka's and PostgreSQL's floors
	@scripts/bench.sh messaging-bench

bench-checkout: ## Benchmark checkout → paid latency of the happy path over 200 orders (release build)
	@scripts/bench.sh checkout-bench

topics: ## Apply infra/kafka/topics.toml to the running broker
	cargo run -q -p bazaar-cli -- topics apply

kafka: ## Start only the Kafka broker
	@infra/kafka/kafkactl.sh start

postgres: ## Start only PostgreSQL (with roles and databases)
	@infra/postgres/pgctl.sh start
