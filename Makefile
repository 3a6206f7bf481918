# Bootstrap behind the README's two commands: `make run` and `make test`.
# Everything installs into .venv from pyproject.toml; the only prerequisite is Python >= 3.11.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

## Test processes (pytest-xdist): each file's tests stay in one process, in order, so a
## module's fixtures start once; files go out in the order tests/conftest.py sorts them
## (the slow ones first), not by their number of tests. Each process starts its own Prefect
## test server and loads TensorFlow; TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 2
XDIST  := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

.PHONY: install run test test-fast lint clean browser postgres

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "shoprec needs Python >= 3.11; run: make PYTHON=python3.11 ...")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@# Prefect's database is created here, not by the first run's temporary server, which
	@# would otherwise make the schema before it answers (only where runs use such a server
	@# on a SQLite file; best-effort: the first run creates it when this could not).
	@$(BIN)/python -c 'from shoprec_flows.server_guard import prepare_database as p; p()' \
	  || echo "note: Prefect's database was not prepared; the first run will create it"
	@touch $(STAMP)

install: $(STAMP)

## Run the pipeline on the bundled Online Retail sample.
run: $(STAMP)
	$(BIN)/shoprec train --summary-json runs/train/summary.json

## Run the test suite (installs Debian's Chromium for the browser test and Debian's
## PostgreSQL for the production-stack test when they are missing).
test: $(STAMP) browser postgres
	$(BIN)/python -m pytest $(XDIST) $(PYTEST_ARGS)

## Debian's Chromium, which the storefront page's browser test drives (Playwright uses it
## as it is: no browser download). Needs root or password-less sudo, apt and Debian's
## package mirror; where it cannot install, it says so and the browser test is skipped
## (CI sets SHOPREC_REQUIRE_BROWSER=1, which makes that a failure instead).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the storefront's browser test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  { command -v apt-get >/dev/null 2>&1 && $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium; } || \
	  echo "warning: could not install chromium; the browser test will be skipped"; }

## Debian's PostgreSQL server, which deployments/stack.py runs (as its own processes, on its
## own port and data folder: the package's default cluster is not used). Best-effort like
## `browser` (CI sets SHOPREC_REQUIRE_POSTGRES=1).
postgres:
	@{ command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; } || { \
	  echo "installing Debian's postgresql for the production-stack test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo "sudo -n" ); \
	  { command -v apt-get >/dev/null 2>&1 && $$SUDO apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends \
	      postgresql; } || \
	  echo "warning: could not install postgresql; the stack test will be skipped"; }

## Unit tests only: no Prefect or MLflow server, no subprocess of the CLI, no network
## training beyond a few steps (under 2 minutes on 2 cores).
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not slow" $(XDIST) $(PYTEST_ARGS)

## Ruff (style, Google docstrings, type hints) and mypy on the core.
lint: $(STAMP)
	$(BIN)/ruff check shoprec cli tasks flows tests benchmarks deployments data
	$(BIN)/mypy

## The local run's outputs and registry (mlflow.db with its artifacts in mlartifacts/; the
## erasure list and the live sessions stay: they are the shop's records, not outputs).
clean:
	rm -rf runs mlruns mlflow.db mlflow.db.lock mlartifacts .pytest_cache
