# Two commands set everything up on a fresh machine: `make demo` and `make test` (README.md).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
export AESTHETIC_HOME ?= $(CURDIR)/.aesthetic
export AESTHETIC_RAW ?= $(AESTHETIC_HOME)/raw
export DAGSTER_HOME ?= $(AESTHETIC_HOME)/dagster
DEMO_ARGS ?=
PYTEST_ARGS ?=
# pytest-xdist workers; a module's tests stay in one worker (its module-scoped services are started once).
TEST_WORKERS ?= 2

.PHONY: install browser postgres demo test ui split lint clean

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/python -m pipelines.demo $(DEMO_ARGS)

# The end-to-end test drives the UI in headless Chromium: Debian's chromium and chromium-driver, installed
# here when missing (root with apt-get, as on a fresh Debian machine or CI); elsewhere one line says what to do.
browser:
	@if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium and chromium-driver for the browser test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else \
	    echo "make test needs Chromium and ChromeDriver: run 'apt-get install chromium chromium-driver' as root (Debian's packages)" >&2; \
	    exit 1; \
	  fi; \
	fi

# The two-host test runs Dagster's storage on a PostgreSQL cluster of its own (pipelines/postgres.py): Debian's
# postgresql, installed here when missing, as Chromium is above (Debian keeps its server binaries off the PATH).
PG_BIN_GLOB ?= /usr/lib/postgresql/*/bin
postgres:
	@set -- $(PG_BIN_GLOB)/initdb; \
	if [ ! -x "$$1" ] && ! command -v initdb >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's postgresql for the two-host test"; \
	    export DEBIAN_FRONTEND=noninteractive; \
	    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; \
	  else \
	    echo "make test needs PostgreSQL's server: run 'apt-get install postgresql' as root (Debian's package)" >&2; \
	    exit 1; \
	  fi; \
	fi

test: install browser postgres
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

ui: install
	$(BIN)/python -m pipelines.instance "$(DAGSTER_HOME)"
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

# The two-host shape on one machine, for trying it (docs/operating.md, "Two hosts"): Postgres for Dagster's storage
# (a cluster under $(AESTHETIC_HOME)/postgres unless DAGSTER_PG_URL names one), the data and training code servers,
# the daemon and the webserver on 127.0.0.1:3000. Ctrl-C stops all but Postgres
# (`python -m pipelines.postgres stop $(AESTHETIC_HOME)/postgres`).
SPLIT_PG_PORT ?= 5433
split: install postgres
	@export AESTHETIC_DATA_HOST=127.0.0.1 AESTHETIC_DATA_PORT=4000 \
	  AESTHETIC_TRAINING_HOST=127.0.0.1 AESTHETIC_TRAINING_PORT=4001 DAGSTER_HOME="$(AESTHETIC_HOME)/dagster-split"; \
	export DAGSTER_PG_URL="$${DAGSTER_PG_URL:-$$($(BIN)/python -m pipelines.postgres start "$(AESTHETIC_HOME)/postgres" $(SPLIT_PG_PORT))}"; \
	test -n "$$DAGSTER_PG_URL" || exit 1; \
	$(BIN)/python -m pipelines.instance "$$DAGSTER_HOME" --postgres >/dev/null || exit 1; \
	trap 'trap - EXIT INT TERM; kill 0' EXIT INT TERM; \
	$(BIN)/dagster code-server start -m pipelines.data_location -h 127.0.0.1 -p 4000 & \
	$(BIN)/dagster code-server start -m pipelines.training_location -h 127.0.0.1 -p 4001 & \
	$(BIN)/dagster-daemon run -w workspace.split.yaml & \
	$(BIN)/dagster-webserver -w workspace.split.yaml -h 127.0.0.1 -p 3000

lint: install
	$(BIN)/ruff check .

clean:
	rm -rf "$(AESTHETIC_HOME)"
