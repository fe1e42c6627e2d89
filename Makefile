# realtime-channel: the commands a person expects. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install dev lint lint-workflows format typecheck test test-fast bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

# The JavaScript client's dev tools (TypeScript, pinned exactly in its package.json), installed
# without a lock file (clients/js/.npmrc: package-lock=false).
JS := clients/js
JS_STAMP := $(JS)/node_modules/.installed-stamp

$(JS_STAMP): $(JS)/package.json
	@command -v npm >/dev/null || { echo "npm not found: the JavaScript client's tests need Node.js 20 or newer (with npm)"; exit 1; }
	npm install --prefix $(JS) --no-package-lock --no-audit --no-fund --loglevel=error
	touch $(JS_STAMP)

install: $(STAMP) $(JS_STAMP) ## create venv/ (the virtualenv Pulumi.yaml names), install the pinned requirements and the JavaScript client's dev tools

STACK ?= dev
PORT ?= 8080
ARGS ?=

dev: $(STAMP) ## run the stack locally (emulator); STACK=dev PORT=8080 ARGS="--config KEY=VALUE ..."
	$(PY) -m emulator --stack $(STACK) --port $(PORT) $(ARGS)

lint: $(STAMP) lint-workflows ## ruff (lint + format check), mypy and the workflow checks
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

WORKFLOWS := $(wildcard .github/workflows/*.yml .github/workflows/*.yaml)

lint-workflows: $(STAMP) ## actionlint, zizmor and schema checks of .github/workflows (offline)
	$(VENV)/bin/actionlint -shellcheck=$(VENV)/bin/shellcheck $(WORKFLOWS)
	$(VENV)/bin/zizmor --offline --no-progress --min-severity low .github/workflows
	$(VENV)/bin/check-jsonschema --builtin-schema vendor.github-workflows $(WORKFLOWS)

typecheck: $(STAMP) ## mypy only
	$(PY) -m mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint $(JS_STAMP) ## lint, type check and the whole test suite (what CI runs)
	$(PY) -m pytest

test-fast: $(STAMP) $(JS_STAMP) ## the test suite without lint and without the long end-to-end runs (marked slow)
	$(PY) -m pytest -q -m "not slow"

BENCHMARKS ?= bench.fanout bench.recipients bench.coldstart bench.e2e bench.resume bench.sender bench.fanout_e2e bench.jwt_auth

bench: $(STAMP) ## every benchmark, each reported; fails at the end if any missed its target
	$(PY) -m bench $(BENCHMARKS)

clean: ## remove the virtualenv, the JavaScript client's node_modules and caches
	rm -rf $(VENV) $(JS)/node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
