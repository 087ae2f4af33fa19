# The two commands of the README, and the pieces they are made of.
# The virtual environment is built from pyproject.toml alone, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000

.PHONY: serve test check lint typecheck unit train-default clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

serve: $(BIN)/.installed
	$(BIN)/mnist-serve --port $(PORT)

# The exact command that produced models/mnist/1 (publishes the next version number into models/).
train-default: $(BIN)/.installed
	$(BIN)/mnist-train --arch cnn-small --seed 0

test: lint typecheck unit

# The edit loop: lint, types and every test that starts no server and trains nothing (about 2 minutes).
check: lint typecheck
	$(BIN)/pytest -m "not starts_server and not slow"

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(BIN)/.installed
	$(BIN)/mypy

unit: $(BIN)/.installed
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
