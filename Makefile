# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help run test bench build lint down clean

help:
	@echo "make run    build, start PostgreSQL, MongoDB and the three services with demo data (Ctrl-C stops all)"
	@echo "make test   run the whole test suite (starts and stops the servers it needs)"
	@echo "make bench  the quick benchmark suite (FULL=1: the large one); report in target/bench/"
	@echo "make lint   cargo fmt --check, clippy with warnings as errors, .sqlx up to date (with sqlx-cli)"
	@echo "make down   stop anything the project's scripts left running"
	@echo "make clean  remove local data (.local) and build output"

run:
	scripts/run.sh

test:
	scripts/with-services.sh cargo test --workspace --all-targets

bench:
	BENCH_COMMAND="make bench$(if $(FULL), FULL=1)" scripts/with-services.sh cargo run --release -p bench -- $(if $(FULL),--full) --out target/bench

build:
	cargo build --workspace --all-targets

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	@# The committed .sqlx query data must match the queries and migrations (needs sqlx-cli).
	@if command -v cargo-sqlx >/dev/null; then \
		scripts/with-services.sh scripts/sqlx-prepare.sh --check; \
	else \
		echo "lint: sqlx-cli is not installed; .sqlx not checked (see scripts/sqlx-prepare.sh)"; \
	fi

down:
	scripts/run.sh stop
	scripts/mail.sh stop
	scripts/mongo.sh stop
	scripts/pg.sh stop

clean: down
	rm -rf .local
	cargo clean
