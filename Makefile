# realtime-channel: the commands a person expects. `make test` is what CI runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.DEFAULT_GOAL := help
.PHONY: help install lint format typecheck test test-fast bench clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned requirements

lint: $(STAMP) ## ruff (lint + format check) and mypy
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

typecheck: $(STAMP) ## mypy only
	$(PY) -m mypy

format: $(STAMP) ## apply ruff fixes and formatting
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

test: lint ## lint, type check and the whole test suite (what CI runs)
	$(PY) -m pytest

test-fast: $(STAMP) ## the test suite without lint
	$(PY) -m pytest -q

bench: $(STAMP) ## benchmarks: broadcaster fan-out and handler cold starts
	$(PY) -m bench.fanout
	$(PY) -m bench.coldstart

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
