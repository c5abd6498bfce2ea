# The two commands a new user needs: `make demo` and `make test`. Both start from nothing but
# Python: they create virtualenvs and install the project into them.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The oldest supported Airflow line, with the pins it needs (see ci/constraints-airflow-3.0.txt).
VENV_OLDEST ?= .venv-airflow-3.0
BIN_OLDEST := $(VENV_OLDEST)/bin
PIP_QUIET := --quiet --disable-pip-version-check
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Debian's Chromium for the browser tests (tests/ui); apt needs root, or sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
STAMP_OLDEST := $(VENV_OLDEST)/.installed-$(shell cat pyproject.toml ci/constraints-airflow-3.0.txt | cksum | cut -d' ' -f1)

.PHONY: demo test lint typecheck unit unit-oldest package bench install clean browser screenshots

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(PIP_QUIET) --upgrade pip
	$(BIN)/python -m pip install $(PIP_QUIET) -e ".[dev]"
	@rm -f $(VENV)/.installed-*
	@touch $@

$(STAMP_OLDEST): pyproject.toml ci/constraints-airflow-3.0.txt
	@test -x $(BIN_OLDEST)/python || $(PYTHON) -m venv $(VENV_OLDEST)
	$(BIN_OLDEST)/python -m pip install $(PIP_QUIET) --upgrade pip
	$(BIN_OLDEST)/python -m pip install $(PIP_QUIET) -c ci/constraints-airflow-3.0.txt -e ".[test]"
	@rm -f $(VENV_OLDEST)/.installed-*
	@touch $@

install: $(STAMP)

## Run the text-to-video example DAG end to end (local server unless WAVESPEED_API_KEY is set).
demo: $(STAMP)
	$(BIN)/python scripts/demo.py

## Lint, type-check, the whole suite on the newest Airflow (with the full-stack and browser
## stages), and the unit and DAG tests again on Airflow 3.0.
test: lint typecheck package unit unit-oldest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

## Build, twine-check, and install the wheel alone into a clean virtualenv.
package: $(STAMP)
	PYTHON_BIN=$(BIN)/python bash ci/check_package.sh

unit: $(STAMP) browser
	$(BIN)/python -m pytest -q

## Debian's chromium for tests/ui (skipped without it, failed without it under CI=true).
browser:
	@command -v chromium >/dev/null || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium \
		|| { $(SUDO) apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } \
		|| echo "warning: could not install chromium; the browser tests will be skipped"

## Retake the README's pictures (docs/images) from a real api-server in headless Chromium.
screenshots: $(STAMP) browser
	MAGI_SCREENSHOTS=docs/images $(BIN)/python -m pytest -q tests/ui

# The full-stack integration stage runs on the newest Airflow only (in `unit`).
unit-oldest: $(STAMP_OLDEST)
	$(BIN_OLDEST)/python -m pytest -q -p no:cacheprovider --ignore=tests/integration --ignore=tests/ui

## Benchmarks (not part of `make test`): print tables and append them to bench/RESULTS.md.
bench: $(STAMP)
	$(BIN)/python bench/poll_cost.py
	$(BIN)/python bench/download.py
	$(BIN)/python bench/triggerer.py
	$(BIN)/python bench/request_budget.py
	$(BIN)/python bench/import_cost.py
	$(BIN)/python bench/end_to_end.py
	$(BIN)/python bench/full_stack_triggerer.py

clean:
	rm -rf $(VENV) $(VENV_OLDEST) .airflow-demo demo-output .pytest_cache .mypy_cache .ruff_cache
