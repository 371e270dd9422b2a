# Bazaar developer commands. Each target installs and starts what it needs on a fresh machine.
.DEFAULT_GOAL := help
SHELL := /bin/bash
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bazaar/target

.PHONY: help run up cluster test down logs lint fmt topics kafka postgres bench-messaging bench-checkout bench test-browser chaos chaos-alerts

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

# RELEASE=1: build and run the release build (make run RELEASE=1, make up RELEASE=1).
release_flag = $(if $(filter 1 yes true,$(RELEASE)),--release)

run: ## Start everything (PostgreSQL, Kafka, services, gateway, Prometheus, Mailpit) and print where to go; Ctrl-C stops it (RELEASE=1: release build; TRACES=1: spans to Jaeger, built once; MAIL=file: e-mails as files, no Mailpit)
	@scripts/run.sh $(release_flag)

up: ## Like run, but return once ready and leave it running ('make down' stops it; RELEASE=1: release build)
	@scripts/run.sh --detach $(release_flag)

cluster: ## Scale out: 3 Kafka brokers (RF 3), 2 instances of every service, the gateway balancing them; Ctrl-C stops it (DETACH=1 returns, RELEASE=1, INSTANCES=N)
	@scripts/run.sh --cluster $(if $(INSTANCES),--instances $(INSTANCES)) $(if $(filter 1 yes true,$(DETACH)),--detach) $(release_flag)

test: ## Start what the tests need, run fmt/clippy/every test and the browser tests, stop what was started
	@scripts/test.sh

test-browser: ## Only the storefront's browser tests (headless Chromium); reuses a running Bazaar or starts one
	@tests/browser/run.sh

chaos: ## Fault injection under load, every scenario, each ended by the invariant checker (minutes; breaks the shared Kafka/PostgreSQL for a while)
	@scripts/chaos.sh

chaos-alerts: ## Alert drill on a running Bazaar (make up / make cluster): a poison message and a frozen consumer, their alerts firing in Prometheus (~2 min)
	@scripts/chaos-alerts.sh $(ARGS)

down: ## Stop everything run/up/cluster/test started
	@scripts/down.sh

logs: ## Show where each process logs, with the last lines of each
	@scripts/logs.sh

lint: ## cargo fmt --check and clippy -D warnings
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt: ## Format the code
	cargo fmt --all

bench: ## The real deployment (release) driven through the gateway: ramp to the knee, CPU/order per process, idle, statements; writes docs/benchmarks.md (ARGS="...", BIN_DIR=...)
	@scripts/bench.sh stack $(if $(BIN_DIR),--bin-dir $(BIN_DIR)) $(ARGS)

bench-messaging: ## Micro-benchmark: the messaging runtime in one process (release) against Kafka's and PostgreSQL's floors
	@scripts/bench.sh messaging-bench $(ARGS)

bench-checkout: ## Micro-benchmark: checkout → paid of the happy path, every service in one process (release)
	@scripts/bench.sh checkout-bench $(ARGS)

topics: ## Apply infra/kafka/topics.toml to the running broker
	cargo run -q -p bazaar-cli -- --principal ops topics apply

kafka: ## Start only the Kafka broker
	@infra/kafka/kafkactl.sh start

postgres: ## Start only PostgreSQL (with roles and databases)
	@infra/postgres/pgctl.sh start
