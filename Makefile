# G-Chat developer entry points (GNU make).
#
#   make run        start the server (embedded PostgreSQL under ./data unless
#                   GCHAT_DATABASE_URL / GCHAT_REDIS_URL point elsewhere)
#   make test       everything CI runs: services, ruff, lint-imports, mypy, the web app's
#                   build, type check and unit tests, pytest (browser tests too)
#   make test-fast  the same without tests marked slow (clusters, make run, ...)
#   make web        build the officials' web app (web/dist) when it is stale
#
# pytest runs on PYTEST_WORKERS processes (pytest-xdist; 0 = in this process).
# Each worker has its own databases, Redis prefixes, ports and tmp folders.
#
# Both set up what they need on a fresh machine: the virtualenv and its
# packages (re-installed when pyproject.toml changes) and, for `make test`,
# PostgreSQL and Redis (.ci/ensure-services), the tools some tests drive
# (pg_dump, nginx, systemd-analyze: .ci/ensure-tools); Node.js/npm, and for the tests
# chromium, come from .ci/ensure-web.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 3
PYTEST_SELECT ?=
PYTEST := $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile

export PIP_DISABLE_PIP_VERSION_CHECK := 1
export PIP_NO_INPUT := 1

.PHONY: help venv run test services lint typecheck pytest bench mutate clean distclean web web-test web-budgets

help:
	@echo "make run        run the server ($(BIN)/gchat serve; GCHAT_* env vars pass through)"
	@echo "make test       ensure PostgreSQL+Redis, then ruff, lint-imports, mypy, web checks and pytest (what CI runs)"
	@echo "make test-fast  the same, skipping tests marked slow"
	@echo "                (pytest on PYTEST_WORKERS=3 processes; PYTEST_WORKERS=0 runs serially)"
	@echo "make web        build the web app (web/dist) if missing or older than its sources"
	@echo "make lint       ruff check . and lint-imports (the layering contracts in pyproject.toml)"
	@echo "make typecheck  mypy protocol crypto gchat loadtests"
	@echo "make pytest     pytest only (PYTEST_ARGS='-k name' to select)"
	@echo "make services   install/start PostgreSQL and Redis for the tests"
	@echo "make bench      load tests, short run (loadtests/)"
	@echo "make mutate     mutation testing of crypto/ (slow; not in CI; MUTANTS='crypto.ratchet*')"
	@echo "make clean      remove caches; make distclean also removes .venv and data/"

# The virtualenv, rebuilt when pyproject.toml changes.  The stamp is only
# written after a successful install, so a failed install is retried.
$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(STAMP)

# The web app: npm ci when the lock file changed, a build when any source is
# newer than the last one.  The node serves web/dist on its own port.
WEB_SOURCES := $(shell find web/src -type f 2>/dev/null) web/build.mjs web/package.json web/tsconfig.json
web/node_modules/.package-lock.json: web/package-lock.json
	bash .ci/ensure-web
	cd web && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

web/dist/.stamp: web/node_modules/.package-lock.json $(WEB_SOURCES)
	cd web && node build.mjs

web: web/dist/.stamp

# The web app's type check and unit tests (node --test), with the vectors
# the Python implementation produced (web/test/vectors.json).
web-test: web/dist/.stamp
	cd web && npx tsc --noEmit -p . && node --test test/*.test.mjs

# The web app's budgets (docs/PERFORMANCE.md): size, time to interactive,
# 1,000 messages of history.  Needs PostgreSQL like the tests.
web-budgets: $(STAMP) web
	bash .ci/ensure-services
	bash .ci/ensure-web --browser
	$(BIN)/python web/tools/budgets.py

run: $(STAMP) web
	$(BIN)/gchat serve

services:
	bash .ci/ensure-services
	bash .ci/ensure-tools

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy protocol crypto gchat loadtests

# The suite starts hundreds of Python processes (workers, `gchat` commands,
# nodes): let them cache compiled modules (__pycache__, git-ignored) even where
# the environment sets PYTHONDONTWRITEBYTECODE, or each one compiles gchat/
# and tests/ from source again.
pytest test test-fast: export PYTHONDONTWRITEBYTECODE :=

pytest: $(STAMP)
	$(PYTEST) $(PYTEST_ARGS)

# Sequential on purpose (services first, then the cheap checks); any
# failure stops make with a non-zero status. test-fast: the same, without
# the tests marked slow.
.PHONY: test-fast
test-fast: PYTEST_SELECT := -m "not slow"
test test-fast: $(STAMP)
	bash .ci/ensure-services
	bash .ci/ensure-tools
	bash .ci/ensure-web --browser
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/mypy protocol crypto gchat loadtests
	$(MAKE) --no-print-directory web-test
	$(PYTEST) $(PYTEST_SELECT) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m loadtests run all --short

# Mutation testing of crypto/ with mutmut (tests/crypto/ must kill every
# mutant that changes behaviour). Slow, so not part of `make test` or CI;
# niced so it leaves the machine usable. MUTANTS narrows it to some modules,
# e.g. MUTANTS='crypto.ratchet* crypto.kdf*'.
MUTANTS ?=
mutate: $(STAMP)
	nice -n 19 $(BIN)/mutmut run --max-children 2 $(MUTANTS)
	$(BIN)/mutmut results

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info web/build web/dist
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +

# Also removes the virtualenv and ./data (the embedded cluster and the
# server's generated keys!), so it is not part of `clean`.
distclean: clean
	rm -rf $(VENV) data web/node_modules
