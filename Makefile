# Set-up and everyday commands. Each target creates .venv and installs what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-dev
DEMO_STAMP := $(VENV)/.installed-demo

.PHONY: demo test serve migration clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

$(DEMO_STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[demo]'
	touch $(DEMO_STAMP)

## demo: run the integration guide end to end on SQLite, then keep serving until Ctrl-C
demo: $(DEMO_STAMP)
	$(BIN)/tallystick demo $(DEMO_ARGS)

## serve: start the server on the embedded SQLite default (tallystick.db here); options in SERVE_ARGS
serve: $(DEMO_STAMP)
	$(BIN)/tallystick serve $(SERVE_ARGS)

## test: run the whole test suite on SQLite and PostgreSQL
test: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## migration: rewrite the initial migration after a model change (before the first release)
migration: $(STAMP)
	$(BIN)/python scripts/regenerate_initial_migration.py

clean:
	rm -rf $(VENV) .pytest_cache
