# The two commands a new user needs: `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

.PHONY: help build test lint fmt down clean

help:
	@echo "make test   run the whole test suite (starts and stops the servers it needs)"
	@echo "make lint   cargo fmt --check and clippy with warnings as errors"
	@echo "make down   stop servers left running by the project's scripts"
	@echo "make clean  remove local data (.local) and build output"

build:
	cargo build --workspace --all-targets

test:
	scripts/with-services.sh cargo test --workspace --all-targets

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

down:
	scripts/pg.sh stop
	scripts/mongo.sh stop

clean: down
	rm -rf .local
	cargo clean
