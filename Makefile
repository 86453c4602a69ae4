# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
# Settings in .env are read by the relay itself (`python -m relay ...`), not by make.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME := $(VENV)/.runtime-installed
DEV := $(VENV)/.dev-installed

.PHONY: run test lint format check bench fuzz clean

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

# The benchmark suite (issue 5): 7 to 9 minutes; writes bench/RESULTS.md and results.png.
bench: $(DEV)
	$(BIN)/python -m bench.run

# A longer fuzzing campaign than `make test` runs (about 8 minutes): HYPOTHESIS_PROFILE=fuzz
# tries many more random examples per fuzzer and ends with a summary; a failing example
# is saved in .hypothesis/ and tried first next time.
fuzz: $(DEV)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest tests/fuzz -q

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
