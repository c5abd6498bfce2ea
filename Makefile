# The two commands a new user needs: `make demo` and `make test`. Both start from nothing but
# Python: they create virtualenvs and install the project into them.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Every older Airflow minor gets a virtualenv of its own, pinned by ci/constraints-airflow-<minor>.txt:
# the oldest (3.0) runs the whole suite, the ones between run the money tests (`-m money`).
OLDEST := 3.0
BETWEEN := 3.1 3.2
PIP_QUIET := --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Debian's Chromium for the browser tests (tests/ui); apt needs root, or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test lint typecheck unit unit-oldest unit-between older-venvs older-minors package bench install clean browser screenshots

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip
	$(BIN)/python -m pip install $(PIP_QUIET) -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

.venv-airflow-%/.installed: pyproject.toml ci/constraints-airflow-%.txt
	@test -x .venv-airflow-$*/bin/python || $(PYTHON) -m venv .venv-airflow-$*
	.venv-airflow-$*/bin/python -m pip install $(PIP_QUIET) --upgrade pip
	.venv-airflow-$*/bin/python -m pip install $(PIP_QUIET) -c ci/constraints-airflow-$*.txt -e ".[test]"
	@touch $@

install: $(STAMP)

# The demo needs the provider and Airflow only, not the test and lint tools of [dev].
DEMO_STAMP := $(VENV)/.demo-installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
$(DEMO_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) -e .
	@rm -f $(VENV)/.demo-installed-*
	@touch $@

## Run the text-to-video example DAG end to end on the local server; with WAVESPEED_API_KEY or a
## magi_default connection to the real API, only with PAY=1 (it bills one video).
demo: $(DEMO_STAMP)
	$(BIN)/python scripts/demo.py $(if $(PAY),--pay)

## Lint, type-check and package while the older Airflow venvs install; the whole suite on the
## newest Airflow (unit and DAG tests over $(TEST_WORKERS) processes, then the full-stack and
## browser stages); then the unit and DAG tests on Airflow 3.0 and the money tests on 3.1 and 3.2,
## one minor at a time, each over $(TEST_WORKERS) processes. Parallel stages print their output
## whole when each ends.
test:
	$(MAKE) --no-print-directory -j2 --output-sync=target lint typecheck package older-venvs
	$(MAKE) --no-print-directory unit
	$(MAKE) --no-print-directory older-minors

older-venvs: $(foreach minor,$(OLDEST) $(BETWEEN),.venv-airflow-$(minor)/.installed)

older-minors: unit-oldest $(foreach minor,$(BETWEEN),unit-$(minor))

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Build, twine-check, and install the wheel alone into a clean virtualenv.
package: $(STAMP)
	PYTHON_BIN=$(BIN)/python bash ci/check_package.sh

# Test files are spread over this many processes (pytest-xdist, a file stays on one): most of a
# test's time is spent waiting on polls and DAG runs, so two cores keep two files busy.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist loadfile

unit: $(STAMP) browser
	$(BIN)/python -m pytest -q $(XDIST) --ignore=tests/integration --ignore=tests/ui
	$(BIN)/python -m pytest -q tests/integration tests/ui

## Debian's chromium for tests/ui (skipped without it, failed without it under CI=true).
browser:
	@command -v chromium >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
		|| { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
		|| echo "warning: could not install chromium; the browser tests will be skipped"

## Retake the README's pictures (docs/images) from a real api-server in headless Chromium.
screenshots: $(STAMP) browser
	MAGI_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/ui

# The full-stack integration stage runs on the newest Airflow only (in `unit`).
unit-oldest: .venv-airflow-$(OLDEST)/.installed
	.venv-airflow-$(OLDEST)/bin/python -m pytest -q -p no:cacheprovider $(XDIST) --ignore=tests/integration --ignore=tests/ui

## What a retry, a kill or an odd answer may cost, proven on every minor between oldest and newest.
unit-between: $(foreach minor,$(BETWEEN),unit-$(minor))

unit-%: .venv-airflow-%/.installed
	@echo "== money tests on Airflow $*"
	.venv-airflow-$*/bin/python -m pytest -q -p no:cacheprovider $(XDIST) -m money --ignore=tests/integration --ignore=tests/ui

## Benchmarks (not part of `make test`): print tables and append them to bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python bench/poll_cost.py
	$(BIN)/python bench/download.py
	$(BIN)/python bench/triggerer.py
	$(BIN)/python bench/request_budget.py
	$(BIN)/python bench/import_cost.py
	$(BIN)/python bench/end_to_end.py
	$(BIN)/python bench/full_stack_triggerer.py
	$(BIN)/python bench/budget_overrun.py

clean:
	rm -rf $(VENV) .venv-airflow-* .airflow-demo demo-output .pytest_cache .mypy_cache .ruff_cache
