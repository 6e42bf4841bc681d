# Two commands matter: `make run` (set up and start) and `make test` (set up and test).
# Both create .venv with the interpreter below and install the package into it;
# `make run` installs only what running needs, `make test` adds the dev tools.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
RUN_STAMP := $(VENV)/.installed-run
STAMP := $(VENV)/.installed

.PHONY: run test check lint typecheck format clean bench bench-quick bench-soak profile bench-postgres bench-data bench-query

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(RUN_STAMP)

$(STAMP): $(RUN_STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $(BENCH_STAMP)

run: $(RUN_STAMP)  ## start the service with its defaults (ARGS="--port 8082" to change them)
	$(BIN)/output-service $(ARGS)

test: $(STAMP)  ## the whole test suite
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check output_service tests bench
	$(BIN)/ruff format --check output_service tests bench

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict scripts

check: lint typecheck test  ## everything CI should be happy with

format: $(STAMP)
	$(BIN)/ruff format output_service tests bench
	$(BIN)/ruff check --fix output_service tests bench

# Benchmarks (never run by CI; see BENCHMARKS.md). The service runs as its own process on
# 127.0.0.1 with a temporary db_dir; the load generator is another process.
bench: $(BENCH_STAMP)  ## the full table, medians of 3 runs (~6 min); BENCH_ARGS="--runs 5" to change
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-quick: $(BENCH_STAMP)  ## one short run of the same table (~2 min)
	$(BIN)/python -m bench.run --quick $(BENCH_ARGS)

bench-soak: $(BENCH_STAMP)  ## 5 minutes at a fixed rate, watching memory and slow requests
	$(BIN)/python -m bench.soak $(SOAK_ARGS)

profile: $(BENCH_STAMP)  ## py-spy samples of the service under load, grouped by hot-path stage
	$(BIN)/python -m bench.profile $(PROFILE_ARGS)

bench-data: $(BENCH_STAMP)  ## the query benchmark's data: 5 files, 700,000 results (bench-data/)
	$(BIN)/python -m bench.query_data --dir bench-data

bench-query: $(BENCH_STAMP)  ## the query API's figures on bench-data/, appended to BENCHMARKS.md
	$(BIN)/python -m bench.query_bench --dir bench-data
bench-postgres: $(BENCH_STAMP)  ## PostgreSQL cells: sqlite x1 vs postgres x1, x3 (needs Debian's postgresql)
	$(BIN)/python -m bench.pg_cells $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
