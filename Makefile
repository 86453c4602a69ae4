# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed

.PHONY: run test lint format check clean

# `make run` reads settings from .env when there is one (see .env.example).
ifneq (,$(wildcard .env))
include .env
export
endif

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Running needs only the runtime dependencies; the tests also need the dev ones.
$(RUNTIME): requirements.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $(RUNTIME)

$(DEV): requirements.txt requirements-dev.txt | $(VENV)/bin/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $(RUNTIME) $(DEV)

run: $(RUNTIME)
	$(BIN)/python -m relay db upgrade
	$(BIN)/python -m relay serve

test: $(DEV)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

lint: $(DEV)
	$(BIN)/ruff check .

format: $(DEV)
	$(BIN)/ruff format .

check: $(RUNTIME)
	$(BIN)/python -m relay check

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
