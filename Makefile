# G-Chat developer entry points (GNU make).
#
#   make run        start the server (embedded PostgreSQL under ./data unless
#                   GCHAT_DATABASE_URL / GCHAT_REDIS_URL point elsewhere)
#   make test       everything CI runs: services, ruff, mypy, pytest
#
# Both set up what they need on a fresh machine: the virtualenv and its
# packages (re-installed when pyproject.toml changes) and, for `make test`,
# PostgreSQL and Redis (.ci/ensure-services).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: help venv run test services lint typecheck pytest bench clean distclean

help:
	@echo "make run        run the server ($(BIN)/gchat serve; GCHAT_* env vars pass through)"
	@echo "make test       ensure PostgreSQL+Redis, then ruff, mypy and pytest (what CI runs)"
	@echo "make lint       ruff check ."
	@echo "make typecheck  mypy protocol crypto gchat"
	@echo "make pytest     pytest only (PYTEST_ARGS='-k name' to select)"
	@echo "make services   install/start PostgreSQL and Redis for the tests"
	@echo "make bench      load tests, short run (loadtests/)"
	@echo "make clean      remove caches; make distclean also removes .venv and data/"

# The virtualenv, rebuilt when pyproject.toml changes.  The stamp is only
# written after a successful install, so a failed install is retried.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

run: $(STAMP)
	$(BIN)/gchat serve

services:
	bash .ci/ensure-services

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy protocol crypto gchat

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

# Sequential on purpose (services first, then the cheap checks); any
# failure stops make with a non-zero status.
test: $(STAMP)
	bash .ci/ensure-services
	$(BIN)/ruff check .
	$(BIN)/mypy protocol crypto gchat
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	@if [ ! -f loadtests/__main__.py ]; then \
		echo "make bench: loadtests/ has no runner yet (loadtests/__main__.py)" >&2; exit 2; \
	fi
	$(BIN)/python -m loadtests run all --short

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the virtualenv and ./data (the embedded cluster and the
# server's generated keys!), so it is not part of `clean`.
distclean: clean
	rm -rf $(VENV) data
