# Two commands matter: `make run` (set up and start) and `make test` (set up and test).
# Both create .venv with the interpreter below and install the package into it.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck format clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)  ## start the service with its defaults (ARGS="--port 8082" to change them)
	$(BIN)/output-service $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check output_service tests
	$(BIN)/ruff format --check output_service tests

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test  ## everything CI should be happy with

format: $(STAMP)
	$(BIN)/ruff format output_service tests
	$(BIN)/ruff check --fix output_service tests

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
