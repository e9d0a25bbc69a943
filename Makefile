# Two commands for a new user: `make demo` and `make test`. Both create or
# reuse ./.venv and install what they need; nothing else is assumed but
# Python 3.11+ and make.
PYTHON ?= $(shell for p in python3 python3.13 python3.12 python3.11; do \
	command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
PYTEST_ARGS ?=

.PHONY: help install test lint pytest demo bench clean

help:
	@echo "make demo   run the reference suite (examples/reminders) with -n auto on an embedded PostgreSQL"
	@echo "make test   lint, type-check and run the project's own tests"
	@echo "make bench  run the benchmarks (ONLY=server|sandbox|provision|suite)"

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "sqlsandbox needs Python 3.11 or newer on PATH (python3, python3.11, ...)."; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks examples
	$(BIN)/ruff format --check src tests benchmarks examples
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/python -m pytest -n auto $(PYTEST_ARGS)

test: lint pytest

demo: $(STAMP)
	$(BIN)/python -m pytest -n auto -p no:cacheprovider examples/reminders

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(if $(ONLY),--only $(ONLY))

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
