# Two commands do all the set-up on a fresh machine (only python3 needed):
#   make demo   - creates .venv, installs the engine, bills a simulated year on SQLite
#   make test   - creates .venv with the dev extras and runs the whole suite
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.dev-installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/billing demo

test: lint
	bash scripts/install-test-deps.sh
	$(BIN)/python -m pytest -n auto --dist worksteal $(PYTEST_ARGS)

lint: $(VENV)/.dev-installed
	$(BIN)/ruff check billing_engine api cli tests bench
	$(BIN)/mypy --strict billing_engine api cli

bench: $(VENV)/.dev-installed
	$(BIN)/python bench/reports_bench.py --help

clean:
	rm -rf $(VENV) demo.db demo.db-wal demo.db-shm demo-mail test-artifacts .pytest_cache
